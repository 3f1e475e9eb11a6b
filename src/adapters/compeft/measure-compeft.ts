/**
 * Measures ComPEFT reconstruction error (relative Frobenius error of each module's BA) and size for scale choices
 * auto / fixed alpha / one global scalar, on synthetic trained-like LoRA factors. Prints markdown tables
 * (docs/compeft.md). Run: npx tsx src/adapters/compeft/measure-compeft.ts [numLayers]
 */
import { LORA_TARGETS } from '../../model/model-config.ts';
import { chooseScales, type ModuleFactors, type ScaleMode } from './compeft-scales.ts';
import { SMALL_TEST_CONFIG, syntheticLoraTensors } from './compeft-synthetic.ts';
import { selectTopK } from './compeft-topk.ts';
import type { LoraTensor } from './compeft-types.ts';
import { writeCompeft } from './compeft-writer.ts';

const DENSITIES = [0.05, 0.1, 0.2, 0.3];
const ALPHAS = [0.5, 1, 2, 3, 4];

function overall(choices: ReturnType<typeof chooseScales>): number {
  let e = 0;
  let n = 0;
  for (const c of choices) {
    e += c.relError ** 2 * c.stats.normBA2;
    n += c.stats.normBA2;
  }
  return Math.sqrt(e / n);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function run(label: string, tensors: LoraTensor[], numLayers: number): void {
  const numParams = tensors.reduce((s, t) => s + t.data.length, 0);
  console.log(`\n### ${label}\n`);
  const modeNames = ['auto', ...ALPHAS.map((a) => `α=${a}`), 'global best', 'global α=1'];
  console.log(`| density | ${modeNames.join(' | ')} | bytes | x vs fp16 |`);
  console.log(`|---|${modeNames.map(() => '---').join('|')}|---|---|`);
  const perTarget: string[] = [];
  for (const density of DENSITIES) {
    const patterns = tensors.map((t) => selectTopK(t.data, density));
    const factors: ModuleFactors[] = [];
    for (let i = 0; i < tensors.length; i += 2) {
      factors.push({ a: tensors[i], b: tensors[i + 1], patternA: patterns[i], patternB: patterns[i + 1] });
    }
    const modes: ScaleMode[] = [
      { kind: 'auto' },
      ...ALPHAS.map((alpha): ScaleMode => ({ kind: 'alpha', alpha })),
      { kind: 'global', alpha: 'auto' },
      { kind: 'global', alpha: 1 },
    ];
    const results = modes.map((m) => chooseScales(factors, m));
    const auto = results[0];
    const bytes = writeCompeft(
      { baseModel: null, numLayers, rank: tensors[0].rows, loraAlpha: 32, scale: 2, density, alpha: 'auto' },
      tensors.map((t, i) => ({ ...t, scale: i % 2 === 0 ? auto[i >> 1].scaleA : auto[i >> 1].scaleB, ...patterns[i] })),
    );
    console.log(`| ${density} | ${results.map((r) => overall(r).toFixed(4)).join(' | ')} | ${bytes.length} | ${((numParams * 2) / bytes.length).toFixed(1)} |`);
    const cells = LORA_TARGETS.map((target) => {
      const errs = auto.filter((_, i) => tensors[2 * i].target === target).map((c) => c.relError);
      return errs.length ? `${median(errs).toFixed(3)} (${Math.min(...errs).toFixed(3)}–${Math.max(...errs).toFixed(3)})` : '-';
    });
    perTarget.push(`| ${density} | ${cells.join(' | ')} |`);
  }
  console.log(`\nPer module, auto scales: median (min–max over layers) relative error of BA\n`);
  console.log(`| density | ${LORA_TARGETS.join(' | ')} |`);
  console.log(`|---|${LORA_TARGETS.map(() => '---').join('|')}|`);
  for (const line of perTarget) console.log(line);
}

const numLayers = Number(process.argv[2] ?? SMALL_TEST_CONFIG.numLayers);
const cfg = { config: SMALL_TEST_CONFIG, rank: 16, numLayers };
run('Trained-like B (effective rank 4, Student-t(3) heavy tails, log-normal channel scales); A ~ N(0, 1/in)', syntheticLoraTensors({ ...cfg, seed: 1 }), numLayers);
run('Full-rank B (effective rank 16, same tails)', syntheticLoraTensors({ ...cfg, seed: 2, bEffectiveRank: 16 }), numLayers);
run(
  'Trained-like B with module magnitudes spread across layers/targets (log-normal, sigma 0.7)',
  syntheticLoraTensors({ ...cfg, seed: 3, moduleMagnitudeSpread: 0.7 }),
  numLayers,
);
