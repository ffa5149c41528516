// Loads a recipe YAML: unknown sections or fields and ill-typed values are errors naming file:line and
// the field; defaults fill the rest; relative paths resolve against the recipe file's folder.
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, isMap, isScalar, parseDocument } from 'yaml';
import { checkValue, type FieldSpec } from './fields.ts';
import { RECIPE_SPEC } from './schema.ts';

type Spec = typeof RECIPE_SPEC;
// Enum fields are typed as their literal values, so callers need no casts.
type ValueOf<F> = F extends { type: 'enum'; values: readonly (infer V)[] }
  ? V
  : F extends { type: 'integer[]' | 'number[]' }
    ? number[]
    : F extends { type: 'path[]' }
      ? string[]
      : F extends { type: 'boolean' }
        ? boolean
        : F extends { type: 'number' | 'integer' }
          ? number
          : string;
type FieldValue<F> = F extends { nullable: true } ? ValueOf<F> | null : ValueOf<F>;
export type Recipe = { [S in keyof Spec]: { [K in keyof Spec[S]]: FieldValue<Spec[S][K]> } } & { file: string };

export class RecipeError extends Error {}

export function loadRecipe(file: string, overrides: Record<string, unknown> = {}): Recipe {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new RecipeError(`${file}: cannot read (${(e as Error).message})`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0];
    throw new RecipeError(`${file}:${lines.linePos(e.pos[0]).line}: YAML error: ${e.message.split('\n')[0]}`);
  }
  const where = (node: unknown) => {
    const range = (node as { range?: [number, number] } | null)?.range;
    return range ? `${file}:${lines.linePos(range[0]).line}` : file;
  };
  const root = doc.contents;
  if (root !== null && !isMap(root))
    throw new RecipeError(`${where(root)}: a recipe is a mapping of sections (${Object.keys(RECIPE_SPEC).join(', ')})`);
  const dir = path.dirname(path.resolve(file));
  const out: Record<string, Record<string, unknown>> = {};
  const given = new Map<string, Map<string, unknown>>();
  for (const item of root?.items ?? []) {
    const section = String(isScalar(item.key) ? item.key.value : item.key);
    if (!(section in RECIPE_SPEC))
      throw new RecipeError(`${where(item.key)}: unknown section '${section}'; expected one of ${Object.keys(RECIPE_SPEC).join(', ')}`);
    if (item.value !== null && !isMap(item.value))
      throw new RecipeError(`${where(item.value)}: section '${section}' must be a mapping of fields`);
    const fields = new Map<string, unknown>();
    for (const f of (item.value as { items?: { key: unknown; value: unknown }[] } | null)?.items ?? []) {
      const key = String(isScalar(f.key) ? f.key.value : f.key);
      const spec = (RECIPE_SPEC as Record<string, Record<string, FieldSpec>>)[section];
      if (!(key in spec))
        throw new RecipeError(`${where(f.key)}: unknown field '${section}.${key}'; ${section} takes ${Object.keys(spec).join(', ')}`);
      fields.set(key, f.value);
    }
    given.set(section, fields);
  }
  for (const [section, spec] of Object.entries(RECIPE_SPEC as Record<string, Record<string, FieldSpec>>)) {
    out[section] = {};
    for (const [key, fs_] of Object.entries(spec)) {
      const name = `${section}.${key}`;
      const node = given.get(section)?.get(key);
      let value: unknown;
      let loc = file;
      if (name in overrides && overrides[name] !== undefined) {
        value = overrides[name];
        loc = `${file} (overridden by the command line)`;
      } else if (node !== undefined) {
        value = (node as { toJSON?: () => unknown })?.toJSON
          ? (node as { toJSON: () => unknown }).toJSON()
          : isScalar(node)
            ? node.value
            : node;
        loc = where(node);
      } else if (fs_.required) {
        throw new RecipeError(`${file}: missing field '${name}': ${fs_.doc}`);
      } else {
        value = fs_.default;
      }
      const err = checkValue(fs_, value);
      if (err) throw new RecipeError(`${loc}: field '${name}': ${err}`);
      if (fs_.type === 'path' && typeof value === 'string') value = path.resolve(dir, value);
      if (fs_.type === 'path[]' && value !== null)
        value = (Array.isArray(value) ? value : [value]).map((p) => path.resolve(dir, p as string));
      out[section][key] = value;
    }
  }
  return { ...out, file: path.resolve(file) } as unknown as Recipe;
}

/** The recipe reference as a Markdown table (docs/recipes.md carries this output; a test keeps it in sync). */
export function recipeReference(): string {
  const rows = ['| field | type | default | meaning |', '|---|---|---|---|'];
  for (const [section, spec] of Object.entries(RECIPE_SPEC as Record<string, Record<string, FieldSpec>>)) {
    for (const [key, f] of Object.entries(spec)) {
      const type = f.type === 'enum' ? f.values!.join(' \\| ') : f.type;
      const dflt = f.required ? '(required)' : JSON.stringify(f.default);
      rows.push(`| \`${section}.${key}\` | ${type} | ${dflt} | ${f.doc.replace(/\|/g, '\\|')} |`);
    }
  }
  return rows.join('\n');
}
