/**
 * Step time of the serving executor of two checkouts, side by side in one process (A/B): each checkout's
 * ThreadExecutor (controller + one worker thread, the default serving path) over the same converted model, the same
 * plans executed alternately (A then B, then B then A, ...), so the noise of a shared machine hits both alike; reports
 * per scenario the executor.execute times and the geometric mean of the B/A ratios of the pairs with its 95% interval,
 * and checks that both return the same logits.
 *
 *   git archive main | tar -x -C /tmp/a && ln -s "$PWD/node_modules" /tmp/a/node_modules && cp -r src/gen /tmp/a/src/
 *   npx tessera convert ~/.cache/tessera/bench/checkpoints/tessera-small-s0-v1 --quant int4 --out /tmp/small-int4
 *   node bin/run-ts.mjs scripts/ab-step-time.ts --a /tmp/a --b . --model /tmp/small-int4 [--steps 64]
 *
 * Scenarios (16 rows with 64 tokens of history each): decode on the base model; decode with 8 adapters (ranks 8 and 16)
 * cycling over the rows; 15 decode rows + one 64-token prefill chunk with adapters.
 */
import { resolve, join } from 'node:path';
import { parseArgs } from 'node:util';
import { SeededRandom } from '../src/util/seeded-random.ts';

const { values } = parseArgs({ options: { a: { type: 'string' }, b: { type: 'string' }, model: { type: 'string' }, steps: { type: 'string', default: '64' } } });
if (!values.a || !values.b || !values.model) {
  console.error('usage: ab-step-time.ts --a CHECKOUT --b CHECKOUT --model CONVERTED_DIR [--steps N]');
  process.exit(2);
}
const steps = Number(values.steps);
const modelDir = resolve(values.model);
type Executor = {
  execute(plan: unknown): Promise<{ logits: Float32Array; outcomes: Array<{ seqId: number; logitsRow: number }> }>;
  loadAdapterSlot(slot: number, w: unknown): Promise<void>;
  shutdown(): Promise<void>;
};
const start = async (root: string): Promise<Executor> => {
  const { ThreadExecutor } = await import(join(resolve(root), 'src/parallel/thread-executor.ts'));
  return ThreadExecutor.start({ modelDir, kvCacheBytes: 1024 << 20, blockSizeTokens: 16, numAdapterSlots: 9, maxAdapterRank: 16 });
};
const { readManifest } = await import(join(resolve(values.b), 'src/model/converted-model.ts'));
const config = readManifest(modelDir).config;
const executors = { a: await start(values.a), b: await start(values.b) };

const random = new SeededRandom(7, 'ab-step-time adapters');
const shapes: Record<string, [number, number]> = {
  q_proj: [config.hiddenSize, config.numHeads * config.headDim],
  k_proj: [config.hiddenSize, config.numKvHeads * config.headDim],
  v_proj: [config.hiddenSize, config.numKvHeads * config.headDim],
  o_proj: [config.numHeads * config.headDim, config.hiddenSize],
  gate_proj: [config.hiddenSize, config.intermediateSize],
  up_proj: [config.hiddenSize, config.intermediateSize],
  down_proj: [config.intermediateSize, config.hiddenSize],
};
const small = (n: number) => Float32Array.from({ length: n }, () => (random.nextUniform() - 0.5) * 0.02);
for (let slot = 1; slot <= 8; slot++) {
  const rank = slot % 2 ? 8 : 16;
  const layers = Array.from({ length: config.numLayers }, () => Object.fromEntries(Object.entries(shapes).map(([t, [i, o]]) => [t, { a: small(rank * i), b: small(o * rank) }])));
  for (const ex of Object.values(executors)) await ex.loadAdapterSlot(slot, { rank, scale: 2, layers });
}

const ROWS = 16;
const HISTORY = 64;
const BLOCK = 16;
const BLOCKS_PER_ROW = Math.ceil((HISTORY + steps + 70) / BLOCK);
const table = (row: number, group: number) => Array.from({ length: BLOCKS_PER_ROW }, (_, j) => (group * ROWS + row) * BLOCKS_PER_ROW + j);
const prompt = (n: number, r: number) => Array.from({ length: n }, (_, j) => ((r * 131 + j * 17) % 40000) + 10);
const scenarios = [
  { name: 'decode 16 rows, base model', adapters: false, prefillRows: 0 },
  { name: 'decode 16 rows, 8 adapters', adapters: true, prefillRows: 0 },
  { name: 'decode 15 + prefill 1x64, 8 adapters', adapters: true, prefillRows: 1 },
];
let seqId = 0;
let stepId = 0;
const quantile = (xs: number[], p: number) => [...xs].sort((m, n) => m - n)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
console.log(`${modelDir}: ${steps - 4} timed steps per scenario (A = ${values.a}, B = ${values.b}); ms per executor.execute, p10 / median / p90`);
for (const [group, sc] of scenarios.entries()) {
  const ids = Array.from({ length: ROWS }, () => ++seqId);
  const slot = (r: number) => (sc.adapters ? 1 + (r % 8) : 0);
  const history = { stepId: ++stepId, sequences: ids.map((id, r) => ({ seqId: id, tokenIds: prompt(HISTORY, r), startPosition: 0, blockTable: table(r, group), adapterSlot: slot(r), sampleNext: true })) };
  for (const ex of Object.values(executors)) await ex.execute(history);
  const ms = { a: [] as number[], b: [] as number[] };
  let worst = 0;
  for (let i = 0; i < steps; i++) {
    const decodeRows = ROWS - sc.prefillRows;
    const sequences = ids.slice(0, decodeRows).map((id, r) => ({ seqId: id, tokenIds: [((r * 7 + i) % 30000) + 5], startPosition: HISTORY + i, blockTable: table(r, group), adapterSlot: slot(r), sampleNext: true }));
    for (let p = 0; p < sc.prefillRows; p++) {
      const id = ++seqId;
      sequences.push({ seqId: id, tokenIds: prompt(64, id), startPosition: 0, blockTable: table(decodeRows + p, scenarios.length + (i % 2)), adapterSlot: slot(p + 3), sampleNext: true });
    }
    const plan = { stepId: ++stepId, sequences };
    const results: Partial<Record<'a' | 'b', Awaited<ReturnType<Executor['execute']>>>> = {};
    for (const who of i % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const)) {
      const t0 = performance.now();
      results[who] = await executors[who].execute(plan);
      if (i >= 4) ms[who].push(performance.now() - t0);
    }
    const v = config.vocabSize;
    for (const o of results.a!.outcomes) {
      const other = results.b!.outcomes.find((q) => q.seqId === o.seqId)!;
      if (o.logitsRow < 0 || other.logitsRow < 0) throw new Error(`sequence ${o.seqId} failed: ${JSON.stringify([o, other])}`);
      for (let k = 0; k < v; k++) worst = Math.max(worst, Math.abs(results.a!.logits[o.logitsRow * v + k] - results.b!.logits[other.logitsRow * v + k]));
    }
  }
  const logs = ms.b.map((b, i) => Math.log(b / ms.a[i]));
  const mean = logs.reduce((s, x) => s + x, 0) / logs.length;
  const half = (1.96 * Math.sqrt(logs.reduce((s, x) => s + (x - mean) ** 2, 0) / (logs.length - 1))) / Math.sqrt(logs.length);
  const f = (xs: number[]) => `${quantile(xs, 0.1).toFixed(1)} / ${quantile(xs, 0.5).toFixed(1)} / ${quantile(xs, 0.9).toFixed(1)}`;
  console.log(`${sc.name.padEnd(38)} A ${f(ms.a)}  B ${f(ms.b)}  B/A ${Math.exp(mean).toFixed(3)} (95% ${Math.exp(mean - half).toFixed(3)} .. ${Math.exp(mean + half).toFixed(3)})  max |logit A - B| ${worst}`);
}
for (const ex of Object.values(executors)) await ex.shutdown();
process.exit(0);
