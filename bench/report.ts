/**
 * `node bin/run-ts.mjs bench/report.ts`: regenerates the generated sections of docs/benchmarks.md (summary table) and
 * of docs/<case>.md (that case's tables) from bench/results/*.json, keeping the hand-written text.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateDocs } from './lib/docs-report.ts';
import { readResults, resultsDir } from './lib/result-files.ts';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.dirname(benchDir);
const results = readResults(resultsDir(benchDir, 'full'));
for (const u of updateDocs(path.join(repoRoot, 'docs'), results)) {
  console.log(`${path.relative(repoRoot, u.file)}: ${u.changed ? 'updated' : 'unchanged'}`);
}
