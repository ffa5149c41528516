// The shipped recipes for real targets parse, and size their drafts correctly from the published configs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveAuxLayers } from '../src/store/identity.ts';
import { draftConfigFor, draftConfigJson } from '../src/draft/config.ts';
import { draftTensorShapes } from '../src/draft/eagle3.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import { fixture } from './helpers.ts';

const recipes = fileURLToPath(new URL('../recipes/', import.meta.url));

const cases = [
  {
    recipe: 'llama-3.1-8b-eagle3.yaml',
    config: 'llama-3.1-8b-instruct.json',
    aux: [1, 15, 28],
    vd: 32000,
    shapes: {
      'fc.weight': [4096, 12288],
      'midlayer.self_attn.q_proj.weight': [4096, 8192],
      'midlayer.self_attn.k_proj.weight': [1024, 8192],
      'midlayer.mlp.down_proj.weight': [4096, 14336],
      'lm_head.weight': [32000, 4096],
    },
  },
  {
    recipe: 'qwen3-8b-eagle3-specexit.yaml',
    config: 'qwen3-8b.json',
    aux: [1, 17, 32],
    vd: 32000,
    shapes: {
      'fc.weight': [4096, 12288],
      'midlayer.self_attn.q_proj.weight': [4096, 8192],
      'midlayer.self_attn.o_proj.weight': [4096, 4096],
      'lm_head.weight': [32000, 4096],
    },
  },
  {
    recipe: 'qwen2.5-0.5b-eagle3.yaml',
    config: 'qwen2.5-0.5b-instruct.json',
    aux: [1, 11, 20],
    vd: 16000,
    shapes: {
      'fc.weight': [896, 2688],
      'midlayer.self_attn.q_proj.weight': [896, 1792],
      'midlayer.self_attn.k_proj.weight': [128, 1792],
      'lm_head.weight': [16000, 896],
    },
  },
  {
    recipe: 'minicpm4-0.5b-eagle3.yaml',
    config: 'minicpm4-0.5b.json',
    aux: [1, 11, 20],
    vd: 16000,
    shapes: { 'fc.weight': [1024, 3072], 'midlayer.self_attn.k_proj.weight': [128, 2048], 'lm_head.weight': [16000, 1024] },
  },
];

for (const c of cases) {
  test(`${c.recipe} parses and sizes its draft from the published config`, () => {
    const r = loadRecipe(path.join(recipes, c.recipe));
    const target = parseModelConfig(JSON.parse(fs.readFileSync(fixture(`hf-configs/${c.config}`), 'utf8')));
    const draft = draftConfigFor(target, resolveAuxLayers(r.model.aux_layer_ids, target.numLayers), r.model.draft_vocab_size);
    assert.deepEqual(draft.auxLayerIds, c.aux);
    assert.equal(draft.draftVocabSize, c.vd);
    const shapes = draftTensorShapes(draft);
    for (const [name, shape] of Object.entries(c.shapes)) assert.deepEqual(shapes.get(name), shape, name);
    const json = draftConfigJson(draft);
    assert.equal(json.vocab_size, target.vocabSize);
    assert.deepEqual((json.eagle_config as { eagle_aux_hidden_state_layer_ids: number[] }).eagle_aux_hidden_state_layer_ids, c.aux);
    if (target.headDim !== target.hiddenSize / target.numHeads) assert.equal(json.head_dim, target.headDim);
  });
}

test('every recipe in recipes/ parses', () => {
  for (const f of fs.readdirSync(recipes).filter((f) => f.endsWith('.yaml'))) loadRecipe(path.join(recipes, f));
});
