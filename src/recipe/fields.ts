// A small declarative schema for recipe files: each field's type, default and one-line doc. The same
// table validates recipes (errors name file:line and the field) and generates the reference in docs/recipes.md.

export type FieldType = 'string' | 'path' | 'number' | 'integer' | 'boolean' | 'enum' | 'integer[]' | 'number[]' | 'path[]';

export interface FieldSpec {
  type: FieldType;
  doc: string;
  default?: unknown;
  /** Must be given (no default). */
  required?: boolean;
  /** null is a valid value (meaning: derive it, as documented). */
  nullable?: boolean;
  values?: readonly string[];
  min?: number;
  max?: number;
  /** Exact length of a list. */
  length?: number;
}

export type SectionSpec = Record<string, FieldSpec>;
export type RecipeSpec = Record<string, SectionSpec>;

/** Checks one value against its spec; returns an error message (without location) or null. */
export function checkValue(spec: FieldSpec, v: unknown): string | null {
  if (v === null) return spec.nullable ? null : 'may not be null';
  const describe = (x: unknown) => JSON.stringify(x);
  const num = (x: unknown, int: boolean): string | null => {
    if (typeof x !== 'number' || !Number.isFinite(x) || (int && !Number.isInteger(x)))
      return `expected ${int ? 'an integer' : 'a number'}, got ${describe(x)}`;
    if (spec.min !== undefined && x < spec.min) return `must be >= ${spec.min}, got ${x}`;
    if (spec.max !== undefined && x > spec.max) return `must be <= ${spec.max}, got ${x}`;
    return null;
  };
  switch (spec.type) {
    case 'string':
    case 'path':
      return typeof v === 'string' && v.length > 0 ? null : `expected a non-empty string, got ${describe(v)}`;
    case 'number':
      return num(v, false);
    case 'integer':
      return num(v, true);
    case 'boolean':
      return typeof v === 'boolean' ? null : `expected true or false, got ${describe(v)}`;
    case 'enum':
      return spec.values!.includes(v as string) ? null : `expected one of ${spec.values!.join(', ')}, got ${describe(v)}`;
    case 'integer[]':
    case 'number[]': {
      const int = spec.type === 'integer[]';
      if (!Array.isArray(v)) return `expected a list of ${int ? 'integers' : 'numbers'}, got ${describe(v)}`;
      if (spec.length !== undefined && v.length !== spec.length) return `expected ${spec.length} values, got ${v.length}`;
      for (const x of v) {
        const e = num(x, int);
        if (e) return `list item: ${e}`;
      }
      return null;
    }
    case 'path[]':
      if (typeof v === 'string' && v.length > 0) return null; // one path is a list of one
      if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && x.length > 0))
        return `expected a path or a non-empty list of paths, got ${describe(v)}`;
      return null;
  }
}
