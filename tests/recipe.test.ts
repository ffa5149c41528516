// Recipe loading: defaults, path resolution, and errors that name file:line and the field.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RecipeError, loadRecipe, recipeReference } from '../src/recipe/recipe.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

after(removeTempDirs);

const dir = tempDir('recipe-');
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const minimal = 'model:\n  target: ../models/t\ndata:\n  train: a.jsonl\n  store: s\n';

test('defaults fill what is not given; relative paths resolve against the recipe folder', () => {
  const r = loadRecipe(write('ok.yaml', minimal));
  assert.equal(r.model.target, path.resolve(dir, '../models/t'));
  assert.deepEqual(r.data.train, [path.join(dir, 'a.jsonl')]);
  assert.equal(r.data.max_length, 2048);
  assert.equal(r.model.aux_layer_ids, null);
  assert.equal(r.capture.dtype, 'float16');
  assert.equal(r.runtime.backend, 'auto');
});

test('command-line overrides win over the file and are validated too', () => {
  const r = loadRecipe(write('ov.yaml', minimal + 'runtime:\n  backend: cpu\n'), { 'runtime.backend': 'wasm', 'capture.limit': undefined });
  assert.equal(r.runtime.backend, 'wasm');
  assert.throws(
    () => loadRecipe(path.join(dir, 'ov.yaml'), { 'runtime.backend': 'tpu' }),
    /overridden by the command line\): field 'runtime\.backend': expected one of/,
  );
});

test('errors name the file, the line and the field', () => {
  const unknown = write('unknown.yaml', minimal + 'capture:\n  batch_size: 4\n  bach: 3\n');
  assert.throws(() => loadRecipe(unknown), new RegExp(`${unknown}:8: unknown field 'capture\\.bach'; capture takes batch_size, dtype`));
  const section = write('section.yaml', minimal + 'trainer:\n  lr: 1\n');
  assert.throws(() => loadRecipe(section), /section\.yaml:6: unknown section 'trainer'/);
  const typed = write('typed.yaml', minimal.replace('store: s', 'store: s\n  max_length: long'));
  assert.throws(() => loadRecipe(typed), /typed\.yaml:6: field 'data\.max_length': expected an integer, got "long"/);
  const missing = write('missing.yaml', 'model:\n  target: t\ndata:\n  train: a.jsonl\n');
  assert.throws(() => loadRecipe(missing), /missing field 'data\.store'/);
  const yaml = write('bad.yaml', 'model: [\n');
  assert.throws(
    () => loadRecipe(yaml),
    (e: unknown) => e instanceof RecipeError && /bad\.yaml:\d+: YAML error/.test(e.message),
  );
});

test('the shipped quickstart recipe parses, and docs/recipes.md carries the generated reference', () => {
  const repo = fileURLToPath(new URL('..', import.meta.url));
  const r = loadRecipe(path.join(repo, 'recipes', 'quickstart.yaml'));
  assert.equal(r.model.target, path.join(repo, 'data', 'tiny-target'));
  const doc = fs.readFileSync(path.join(repo, 'docs', 'recipes.md'), 'utf8');
  assert.ok(doc.includes(recipeReference()), 'docs/recipes.md is stale: paste the output of `npm run recipe:reference` over its table');
});
