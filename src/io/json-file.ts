// Reading a JSON file whose errors say which file: the parser's own message names neither the file nor
// what it was meant to hold.
import fs from 'node:fs';

export class JsonFileError extends Error {}

/** The parsed contents of `file` (`what` names it in errors: "a draft config", "the trainer state"). */
export function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new JsonFileError(`${file}: cannot read ${what} (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new JsonFileError(`${file}: not valid JSON, expected ${what} (${(e as Error).message})`);
  }
}

/** readJsonFile, and the value must be a JSON object. */
export function readJsonObject(file: string, what: string): Record<string, unknown> {
  const v = readJsonFile(file, what);
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new JsonFileError(`${file}: expected ${what} (a JSON object), got ${JSON.stringify(v)?.slice(0, 40)}`);
  return v as Record<string, unknown>;
}
