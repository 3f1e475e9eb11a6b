/**
 * The contract between the bench runner (bench/index.ts) and the cases in bench/cases/*.ts. A case measures the
 * things it compares side by side in one run (machines are shared and noisy, so only same-run ratios mean much) and
 * returns plain data: tables to print and store, a few summary rows for docs/benchmarks.md, and raw numbers.
 */
import type { BenchModels } from './bench-models.ts';

export type BenchMode = 'quick' | 'full';

export type Cell = string | number | null;

export interface ResultTable {
  title: string;
  columns: string[];
  rows: Cell[][];
  /** Lines printed and stored under the table (units, how a column was computed). */
  notes?: string[];
}

/** One line of the summary table in docs/benchmarks.md. */
export interface SummaryRow {
  metric: string;
  value: string;
}

export interface CaseOutput {
  tables: ResultTable[];
  summary: SummaryRow[];
  /** Raw measurements, JSON-able. */
  data: Record<string, unknown>;
  /**
   * The page under docs/ whose `bench:<case>-tables` section gets this case's tables in full mode (the section is
   * appended when the page has no markers yet); default `<case>.md`, only when that page exists.
   */
  docsPage?: string;
}

export interface BenchContext {
  mode: BenchMode;
  /** Generated checkpoints (cached across runs) and converted models (converted once per run). */
  models: BenchModels;
  /** Progress line on stderr. */
  log(message: string): void;
}

export interface BenchCase {
  name: string;
  description: string;
  /**
   * Runs only when `--only` names it, never in a plain `npm run bench`: for a case that installs something large the
   * first time (the llama.cpp peer).
   */
  onlyWhenNamed?: boolean;
  run(ctx: BenchContext): Promise<CaseOutput>;
}

/** What bench/index.ts writes to bench/results/<case>.json. */
export interface CaseResultFile extends CaseOutput {
  case: string;
  description: string;
  mode: BenchMode;
  command: string;
  machine: import('./machine-info.ts').MachineInfo;
  startedAt: string;
  durationMs: number;
}

export function isBenchCase(value: unknown): value is BenchCase {
  const c = value as Partial<BenchCase> | null;
  return c !== null && typeof c === 'object' && typeof c.name === 'string' && typeof c.description === 'string' && typeof c.run === 'function';
}
