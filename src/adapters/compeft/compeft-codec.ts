import { TesseraError } from '../../errors.ts';
import type { LoraTarget } from '../../model/model-config.ts';
import { chooseScales, type ModuleFactors, type ScaleMode } from './compeft-scales.ts';
import { checkDensity, selectTopK } from './compeft-topk.ts';
import type { LoraTensor, SignPattern, TernaryTensor } from './compeft-types.ts';

export interface CompressTensorsOptions {
  /** Fraction of each tensor's values kept, in (0, 1]. */
  density: number;
  /** 'auto' (default): per-module optimal scales; a number: the paper's alpha x per-tensor std. */
  alpha?: 'auto' | number;
  /** Overrides `alpha` (used by measurements to compare against the paper's one global scalar). */
  scaleMode?: ScaleMode;
}

export interface ModuleError {
  layer: number;
  target: LoraTarget;
  /** ||BA - B^A^||_F / ||BA||_F. */
  relError: number;
  /** ||BA||_F. */
  normBA: number;
}

export interface CompressedTensors {
  /** Same order as the input tensors. */
  tensors: TernaryTensor[];
  modules: ModuleError[];
  /** sqrt(sum of squared module errors / sum of ||BA||^2) over the whole adapter. */
  overallRelError: number;
}

/**
 * ComPEFT on LoRA factors: top-k by magnitude per tensor, then ternary values with scales chosen per `alpha`.
 * Every (layer, target) must have exactly one A [r, in] and one B [out, r].
 */
export function compressLoraTensors(tensors: LoraTensor[], opts: CompressTensorsOptions): CompressedTensors {
  checkDensity(opts.density);
  const alpha = opts.alpha ?? 'auto';
  const mode: ScaleMode = opts.scaleMode ?? (alpha === 'auto' ? { kind: 'auto' } : { kind: 'alpha', alpha });
  const pairs = pairModules(tensors);
  const patterns = new Map<LoraTensor, SignPattern>();
  for (const t of tensors) {
    checkTensor(t);
    patterns.set(t, selectTopK(t.data, opts.density));
  }
  const factors: ModuleFactors[] = pairs.map(({ a, b }) => ({ a, b, patternA: patterns.get(a)!, patternB: patterns.get(b)! }));
  const choices = chooseScales(factors, mode);
  const scaleOf = new Map<LoraTensor, number>();
  let errSq = 0;
  let normSq = 0;
  const modules: ModuleError[] = pairs.map(({ a, b }, i) => {
    const c = choices[i];
    scaleOf.set(a, c.scaleA);
    scaleOf.set(b, c.scaleB);
    errSq += c.relError * c.relError * c.stats.normBA2;
    normSq += c.stats.normBA2;
    return { layer: a.layer, target: a.target, relError: c.relError, normBA: Math.sqrt(c.stats.normBA2) };
  });
  const out: TernaryTensor[] = tensors.map((t) => {
    const p = patterns.get(t)!;
    return {
      name: t.name,
      layer: t.layer,
      target: t.target,
      kind: t.kind,
      rows: t.rows,
      cols: t.cols,
      scale: scaleOf.get(t)!,
      positions: p.positions,
      negative: p.negative,
    };
  });
  return { tensors: out, modules, overallRelError: normSq > 0 ? Math.sqrt(errSq / normSq) : 0 };
}

function pairModules(tensors: LoraTensor[]): Array<{ a: LoraTensor; b: LoraTensor }> {
  const byModule = new Map<string, { a?: LoraTensor; b?: LoraTensor }>();
  for (const t of tensors) {
    const key = `${t.layer}:${t.target}`;
    const entry = byModule.get(key) ?? {};
    const slot = t.kind === 'A' ? 'a' : 'b';
    if (entry[slot]) {
      throw new TesseraError('INVALID_ARGUMENT', `LoRA tensor ${t.kind} for layer ${t.layer} ${t.target} given twice: ${t.name}`);
    }
    entry[slot] = t;
    byModule.set(key, entry);
  }
  const pairs: Array<{ a: LoraTensor; b: LoraTensor }> = [];
  for (const [key, { a, b }] of byModule) {
    if (!a || !b) {
      throw new TesseraError('INVALID_ARGUMENT', `LoRA module ${key} needs both A and B; only ${a ? 'A' : 'B'} was given`);
    }
    if (b.cols !== a.rows) {
      throw new TesseraError('INVALID_ARGUMENT', `LoRA module ${key}: B has ${b.cols} columns, A has ${a.rows} rows; they must match (rank)`);
    }
    pairs.push({ a, b });
  }
  return pairs;
}

function checkTensor(t: LoraTensor): void {
  if (!(Number.isInteger(t.rows) && Number.isInteger(t.cols) && t.rows > 0 && t.cols > 0) || t.data.length !== t.rows * t.cols) {
    throw new TesseraError('INVALID_ARGUMENT', `LoRA tensor ${t.name}: shape [${t.rows}, ${t.cols}] does not match ${t.data.length} values`);
  }
}
