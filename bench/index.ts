/**
 * Bench runner: `npm run bench -- [--quick | --full] [--only NAME,...]`.
 * Discovers bench/cases/*.ts, runs the selected ones one after another, prints each case's tables, writes
 * bench/results/<case>.json (full) or bench/results/quick/<case>.json (quick) with machine info, and in full mode
 * regenerates the generated sections of the docs (as bench/report.ts does).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isTesseraError } from '../src/errors.ts';
import type { CaseResultFile } from './lib/bench-case.ts';
import { BenchModels, defaultBenchCacheDir } from './lib/bench-models.ts';
import { BENCH_USAGE, parseBenchArgs } from './lib/cli-args.ts';
import { discoverCases, selectCases } from './lib/discover-cases.ts';
import { updateDocs } from './lib/docs-report.ts';
import { describeMachine, machineInfo } from './lib/machine-info.ts';
import { readResults, resultsDir, writeResult } from './lib/result-files.ts';
import { formatTextTable } from './lib/text-table.ts';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.dirname(benchDir);

async function main(): Promise<number> {
  const args = parseBenchArgs(process.argv.slice(2));
  if (args.help) {
    console.log(BENCH_USAGE);
    return 0;
  }
  const cases = selectCases(await discoverCases(path.join(benchDir, 'cases')), args.only);
  const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
  const models = new BenchModels({ cacheDir: defaultBenchCacheDir(), log });
  const command = `npm run bench -- --${args.mode}${args.only ? ` --only ${args.only.join(',')}` : ''}`;
  log(`${args.mode} mode, cases: ${cases.map((c) => c.name).join(', ')}; cache ${models.cacheDir}`);
  const outDir = resultsDir(benchDir, args.mode);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      models.cleanup(); // a killed run leaves no converted models behind
      process.exit(130);
    });
  }
  try {
    for (const c of cases) {
      const machine = machineInfo();
      const startedAt = new Date().toISOString();
      const started = performance.now();
      const caseLog = (message: string) => log(`${c.name}: ${message}`);
      const output = await c.run({ mode: args.mode, models, log: caseLog });
      const result: CaseResultFile = { case: c.name, description: c.description, mode: args.mode, command, machine, startedAt, durationMs: Math.round(performance.now() - started), ...output };
      console.log(`\n== ${c.name}: ${c.description}\n   ${describeMachine(machine)}; ${(result.durationMs / 1000).toFixed(1)} s\n`);
      for (const table of output.tables) console.log(formatTextTable(table) + '\n');
      log(`wrote ${path.relative(repoRoot, writeResult(outDir, result))}`);
    }
  } finally {
    models.cleanup();
  }
  if (args.mode === 'full') {
    for (const u of updateDocs(path.join(repoRoot, 'docs'), readResults(outDir))) if (u.changed) log(`updated ${path.relative(repoRoot, u.file)}`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(isTesseraError(err) ? `bench: ${err.message}` : err);
    process.exit(isTesseraError(err) && err.code === 'INVALID_ARGUMENT' ? 2 : 1);
  },
);
