// Flush-to-zero for the thread that runs ONNX Runtime's training step. Cores compute with subnormal floats
// (below 1.2e-38) in slow microcode unless the thread's control bits say to flush them to zero, and a Node
// worker thread starts without them. Late in training a confident draft's softmax probabilities and their
// gradients fall into that range: the demo recipe's step graph ran 2.5x slower from its step-400 weights
// than from fresh ones. ORT's node binding runs a session on the JavaScript thread that calls it, so that
// thread sets the bits (specforge-fpenv, an optional Node-API addon built at install) and asks ORT to set
// them on its pool threads too. Only values below 1.2e-38 change (to 0), as with torch.set_flush_denormal.
// SPECFORGE_FLUSH_DENORMALS=0 turns it off (to measure the difference).
import { createRequire } from 'node:module';

export interface DenormalMode {
  /** Whether this thread now flushes subnormal floats to zero. */
  flushing: boolean;
  /** Why not, when not. */
  reason?: string;
}

interface FpEnv {
  flushDenormals(): boolean;
  flushingDenormals(): boolean;
}

/** Sets flush-to-zero and denormals-are-zero on the calling thread where the addon is built. */
export function flushDenormalsOnThisThread(env: NodeJS.ProcessEnv = process.env): DenormalMode {
  if (env.SPECFORGE_FLUSH_DENORMALS === '0') return { flushing: false, reason: 'SPECFORGE_FLUSH_DENORMALS=0' };
  let fpenv: FpEnv;
  try {
    fpenv = createRequire(import.meta.url)('specforge-fpenv') as FpEnv;
  } catch (e) {
    return { flushing: false, reason: e instanceof Error ? e.message : String(e) };
  }
  if (!fpenv.flushDenormals()) return { flushing: false, reason: `no flush-to-zero control on ${process.arch}` };
  return { flushing: fpenv.flushingDenormals() };
}
