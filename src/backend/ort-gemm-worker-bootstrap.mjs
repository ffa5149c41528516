// Entry of the ONNX Runtime GEMM worker thread. Plain JavaScript so that it loads however the parent was
// started (tsx CLI, node --import tsx, or bin/specforge.js); it registers tsx, then runs the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./ort-gemm-worker.ts');
