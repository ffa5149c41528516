// Chooses the tfjs engine. tfjs silently falls back to another backend when the requested
// one fails, so every choice is checked against tf.getBackend() after setBackend.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';

export const BACKENDS = ['auto', 'node-gpu', 'node', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type ConcreteBackend = Exclude<BackendName, 'auto'>;

/** Order tried by `auto`: fastest first. */
export const AUTO_ORDER: ConcreteBackend[] = ['node-gpu', 'node', 'wasm', 'cpu'];

const require = createRequire(import.meta.url);

// Production mode: skips tfjs' debug checks and its console nag to install tfjs-node.
tf.env().set('PROD', true);

/** The tfjs backend name each choice registers ('node' and 'node-gpu' both register 'tensorflow'). */
const TFJS_NAME: Record<ConcreteBackend, string> = {
  'node-gpu': 'tensorflow',
  node: 'tensorflow',
  wasm: 'wasm',
  cpu: 'cpu',
};

export class BackendError extends Error {}

async function tryLoad(name: ConcreteBackend): Promise<void> {
  switch (name) {
    case 'node-gpu':
    case 'node': {
      // The native packages register the 'tensorflow' backend on import. They are optional
      // dependencies: absent wherever their libtensorflow download could not run.
      const pkg = name === 'node-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      try {
        await import(pkg);
      } catch (e) {
        throw new BackendError(
          `backend '${name}': cannot load ${pkg} (${firstLine(e)}); it is an optional dependency whose install downloads libtensorflow`,
        );
      }
      break;
    }
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      // In Node the .wasm binaries are read from the package's dist folder.
      const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
      wasm.setWasmPaths(path.join(dir, 'dist') + path.sep);
      // Threads need a worker from a blob URL, which Node lacks; SIMD single-thread is what runs.
      wasm.setThreadsCount(1);
      shareIdentityOnWasm();
      break;
    }
    case 'cpu': // registered by @tensorflow/tfjs itself
      break;
  }
  const tfName = TFJS_NAME[name];
  let ok = false;
  try {
    ok = await tf.setBackend(tfName);
    await tf.ready();
  } catch (e) {
    throw new BackendError(`backend '${name}': tfjs could not initialise '${tfName}' (${firstLine(e)})`);
  }
  if (!ok || tf.getBackend() !== tfName) {
    throw new BackendError(`backend '${name}' requested but tfjs is running '${tf.getBackend()}'`);
  }
  if (name === 'node-gpu' && !gpuVisible()) {
    throw new BackendError(`backend 'node-gpu': libtensorflow loaded but sees no GPU`);
  }
}

/**
 * tfjs keeps each tensor a gradient needs by cloning it (the Identity kernel). The cpu backend's clone shares
 * the data and counts a reference, as its reshape does; wasm's copies it, so on wasm training held a second
 * copy of every saved activation (at a real draft size, most of the memory of each TTT step) and spent time
 * copying. Tensors are immutable (a variable's assign takes new data), so sharing is safe.
 */
function shareIdentityOnWasm(): void {
  if (tf.getKernel('Identity', 'wasm')?.kernelFunc === shareData) return;
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({ kernelName: 'Identity', backendName: 'wasm', kernelFunc: shareData as unknown as tf.KernelFunc });
}

function shareData({ inputs, backend }: { inputs: { x: tf.TensorInfo }; backend: { incRef(id: object): void } }): tf.TensorInfo {
  const { x } = inputs;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

function gpuVisible(): boolean {
  // tfjs-node-gpu exposes no device query; its binding reports CUDA use through the backend's flag.
  const b = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
  return b.isUsingGpuDevice !== false;
}

function firstLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split('\n')[0];
}

let active: ConcreteBackend | undefined;

/**
 * Activates a backend and returns which one runs. `auto` takes the first of AUTO_ORDER that loads;
 * an explicit choice that cannot load is a BackendError (never a silent fallback).
 */
export async function initBackend(requested: BackendName = 'auto', log: (msg: string) => void = () => {}): Promise<ConcreteBackend> {
  if (!BACKENDS.includes(requested)) {
    throw new BackendError(`unknown backend '${requested}': expected one of ${BACKENDS.join(', ')}`);
  }
  if (active && (requested === 'auto' || requested === active)) return active;
  if (requested !== 'auto') {
    await tryLoad(requested);
    active = requested;
  } else {
    const reasons: string[] = [];
    for (const name of AUTO_ORDER) {
      try {
        await tryLoad(name);
        active = name;
        break;
      } catch (e) {
        reasons.push(firstLine(e));
      }
    }
    if (!active) throw new BackendError(`no tfjs backend could load:\n  ${reasons.join('\n  ')}`);
  }
  log(`backend: ${active} (tfjs '${tf.getBackend()}')`);
  return active;
}

export function activeBackend(): ConcreteBackend | undefined {
  return active;
}
