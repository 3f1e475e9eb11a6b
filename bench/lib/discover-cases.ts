/** Finds bench cases: every bench/cases/*.ts (tests excluded) whose default export is a BenchCase. */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TesseraError } from '../../src/errors.ts';
import { isBenchCase, type BenchCase } from './bench-case.ts';

export async function discoverCases(casesDir: string): Promise<BenchCase[]> {
  const files = fs
    .readdirSync(casesDir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .sort();
  const cases: BenchCase[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(path.join(casesDir, f)).href)) as { default?: unknown };
    const found = mod.default;
    if (!isBenchCase(found)) throw new TesseraError('INVALID_ARGUMENT', `${path.join(casesDir, f)}: default export must be { name, description, run(ctx) }`);
    if (cases.some((c) => c.name === found.name)) throw new TesseraError('INVALID_ARGUMENT', `${f}: case name "${found.name}" is used twice`);
    cases.push(found);
  }
  return cases;
}

/**
 * The cases named by --only, in the order given (unknown names are an error listing the known ones); without --only,
 * every case but those that run only when named.
 */
export function selectCases(cases: BenchCase[], only: string[] | null): BenchCase[] {
  if (only === null) return cases.filter((c) => c.onlyWhenNamed !== true);
  return only.map((name) => {
    const found = cases.find((c) => c.name === name);
    if (!found) throw new TesseraError('INVALID_ARGUMENT', `\`--only\` names an unknown case. Given: ${JSON.stringify(name)}; known: ${cases.map((c) => c.name).join(', ')}`);
    return found;
  });
}
