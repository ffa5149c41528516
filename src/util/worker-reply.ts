// The main-thread side of the project's blocking worker calls (ONNX Runtime in a worker thread, called from
// synchronous code): the worker posts its reply on a MessagePort, then sets flag[0] to 1 and notifies; the
// caller, blocked in Atomics.wait, takes the reply off the port with receiveMessageOnPort.
//
// A wake does not always find its reply on the port: the flag of a reply that an earlier look already
// took can arrive late and wake the next call early, and a reply posted just before its flag can take a
// moment to be visible. Both were seen as rare "woke without a reply" failures of long runs with two
// ranks. So an empty port is never an error: the caller clears the flag and waits for the next signal,
// looking again every few milliseconds, until the reply is there or the worker has exited.
import { type MessagePort, receiveMessageOnPort } from 'node:worker_threads';

/** Milliseconds between looks at the port while waiting without a signal. */
const RECHECK_MS = 5;

/**
 * Blocks until the worker's next reply is on `port` and returns it. `exited` says why the worker can no
 * longer answer (flag[1] set by its exit handlers), or null while it can.
 */
export function takeReply(port: MessagePort, flag: Int32Array, exited: () => string | null, limitMs = Number.POSITIVE_INFINITY): unknown {
  const start = performance.now();
  Atomics.wait(flag, 0, 0, limitMs);
  for (;;) {
    Atomics.store(flag, 0, 0);
    const m = receiveMessageOnPort(port);
    if (m) return m.message;
    const why = exited();
    if (why !== null) throw new Error(why);
    if (performance.now() - start > limitMs) throw new Error(`no reply within ${Math.round(limitMs / 1000)} s`);
    Atomics.wait(flag, 0, 0, RECHECK_MS);
  }
}
