import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { discoverCases, selectCases } from './discover-cases.ts';

const casesDir = fileURLToPath(new URL('../cases', import.meta.url));
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-cases-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('case discovery', () => {
  test('finds the committed cases, each with a name, description and run()', async () => {
    const cases = await discoverCases(casesDir);
    expect(cases.map((c) => c.name)).toEqual(expect.arrayContaining(['quantization', 'memory-bandwidth', 'profile', 'peer']));
    for (const c of cases) expect(c.description.length).toBeGreaterThan(10);
  });

  test('--only selects in the order given and rejects unknown names, listing the known ones', async () => {
    const cases = await discoverCases(casesDir);
    expect(selectCases(cases, ['quantization', 'memory-bandwidth']).map((c) => c.name)).toEqual(['quantization', 'memory-bandwidth']);
    expect(selectCases(cases, null).map((c) => c.name)).toEqual(cases.filter((c) => c.name !== 'peer').map((c) => c.name));
    expect(selectCases(cases, ['peer']).map((c) => c.name)).toEqual(['peer']); // the llama.cpp peer installs ~600 MB: only when named
    expect(() => selectCases(cases, ['nope'])).toThrow(/Given: "nope"; known: .*quantization/);
  });

  test('a file without a case as default export is an error naming the file', async () => {
    fs.writeFileSync(path.join(scratch, 'bad.ts'), 'export const name = "bad";\n');
    await expect(discoverCases(scratch)).rejects.toThrow(/bad.ts: default export must be/);
  });
});
