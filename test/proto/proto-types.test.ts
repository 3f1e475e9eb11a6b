import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect, test } from 'vitest';
import { GENERATED_TYPES_DIR, generateProtoTypes } from '../../src/server/proto-codegen.ts';
import { tempDir } from '../helpers/tiny-model.ts';

function filesUnder(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(relative(dir, p), readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return out;
}

test('src/gen holds the types proto-loader-gen-types makes from the public protos today (else: npm run gen:proto)', () => {
  const fresh = tempDir('proto-types');
  generateProtoTypes(fresh);
  const expected = filesUnder(fresh);
  expect(expected.get('tessera/v1/GenerateRequest.ts')).toContain('export interface GenerateRequest__Output');
  const actual = filesUnder(GENERATED_TYPES_DIR);
  expect([...actual.keys()].sort(), 'src/gen is stale: run `npm run gen:proto`').toEqual([...expected.keys()].sort());
  for (const [file, text] of expected) expect(actual.get(file), `src/gen/${file} is stale: run \`npm run gen:proto\``).toBe(text);
});
