/** bench/results/<case>.json (full mode, committed) and bench/results/quick/<case>.json (quick mode, git-ignored). */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../src/errors.ts';
import type { BenchMode, CaseResultFile } from './bench-case.ts';

export function resultsDir(benchDir: string, mode: BenchMode): string {
  return mode === 'full' ? path.join(benchDir, 'results') : path.join(benchDir, 'results', 'quick');
}

export function writeResult(dir: string, result: CaseResultFile): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${result.case}.json`);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(result, null, 2) + '\n');
  fs.renameSync(tmp, file);
  return file;
}

/** Every result file in `dir` (not recursive), sorted by case name. */
export function readResults(dir: string): CaseResultFile[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => {
      const file = path.join(dir, f);
      let parsed: Partial<CaseResultFile>;
      try {
        parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<CaseResultFile>;
      } catch (err) {
        throw new TesseraError('INVALID_ARGUMENT', `${file}: not valid JSON: ${(err as Error).message}`);
      }
      if (typeof parsed.case !== 'string' || !Array.isArray(parsed.tables) || !Array.isArray(parsed.summary) || !parsed.machine) {
        throw new TesseraError('INVALID_ARGUMENT', `${file}: not a bench result (needs case, tables, summary, machine)`);
      }
      return parsed as CaseResultFile;
    });
}
