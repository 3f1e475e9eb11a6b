/** Command line of bench/index.ts: [--quick | --full] [--only NAME,...]. */
import { TesseraError } from '../../src/errors.ts';
import type { BenchMode } from './bench-case.ts';

export interface BenchArgs {
  mode: BenchMode;
  /** Case names to run; null = all. */
  only: string[] | null;
  help: boolean;
}

export const BENCH_USAGE = 'usage: npm run bench -- [--quick | --full] [--only NAME[,NAME...]]\n' +
  '  --quick  tiny model, seconds (default; for CI smoke runs), results in bench/results/quick/\n' +
  '  --full   small model (SmolLM-135M shape), minutes; results in bench/results/ and the docs tables\n' +
  '  --only   these cases only; `peer` (llama.cpp, installs node-llama-cpp into bench/peer) runs only when named';

export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  let mode: BenchMode | null = null;
  let only: string[] | null = null;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick' || arg === '--full') {
      const wanted: BenchMode = arg === '--quick' ? 'quick' : 'full';
      if (mode !== null && mode !== wanted) throw new TesseraError('INVALID_ARGUMENT', '`--quick` and `--full` exclude each other. Given: both');
      mode = wanted;
    } else if (arg === '--only' || arg.startsWith('--only=')) {
      const value = arg === '--only' ? argv[++i] : arg.slice('--only='.length);
      if (value === undefined || value.startsWith('--')) throw new TesseraError('INVALID_ARGUMENT', '`--only` needs a comma-separated list of case names. Given: nothing');
      const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (names.length === 0) throw new TesseraError('INVALID_ARGUMENT', `\`--only\` needs at least one case name. Given: ${JSON.stringify(value)}`);
      only = [...(only ?? []), ...names];
    } else if (arg === '--help' || arg === '-h') {
      help = true;
    } else {
      throw new TesseraError('INVALID_ARGUMENT', `unknown bench argument. Given: ${JSON.stringify(arg)}\n${BENCH_USAGE}`);
    }
  }
  return { mode: mode ?? 'quick', only, help };
}
