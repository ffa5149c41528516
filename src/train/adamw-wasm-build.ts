// Assembles adamw.wat into adamw-wasm.ts (the module's bytes, base64). A development step, run after changing
// the .wat: `npm i --no-save wabt@1.0.39 && npx tsx src/train/adamw-wasm-build.ts` (wabt is not a dependency;
// the project ships the assembled bytes).
import fs from 'node:fs';

const dir = new URL('.', import.meta.url);
// @ts-expect-error: wabt is installed by hand for this step only
const wabt = await (await import('wabt')).default();
const text = fs.readFileSync(new URL('adamw.wat', dir), 'utf8');
const module = wabt.parseWat('adamw.wat', text, { simd: true });
const { buffer } = module.toBinary({});
const base64 = Buffer.from(buffer).toString('base64');
fs.writeFileSync(
  new URL('adamw-wasm.ts', dir),
  `// Generated from adamw.wat by adamw-wasm-build.ts; do not edit.\nexport const ADAMW_WASM = '${base64}';\n`,
);
console.log(`adamw-wasm.ts: ${buffer.length} bytes of WebAssembly`);
