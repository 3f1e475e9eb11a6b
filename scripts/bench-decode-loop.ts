/**
 * Decode throughput of k steps per session.run (LoopDecodeRunner) vs one step per run, side by side in one process:
 * `streams` rows with `promptTokens`-token prompts, greedy, `tokens` decode tokens per row, repeated `rounds` times in
 * rotation (k = 1 single-step graph with host argmax, then the Loop graph at each k). CPU provider unless --device.
 *   npx tsx scripts/bench-decode-loop.ts MODEL_DIR [--streams 16] [--tokens 32] [--prompt 64] [--ks 1,4,8] [--rounds 3]
 */
import { LoopDecodeRunner, type LoopRow } from '../src/model/runner/loop-decode-runner.ts';
import type { Device } from '../src/model/runner/model-runner.ts';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const modelDir = args[0];
const streams = Number(flag('streams', '16'));
const tokens = Number(flag('tokens', '32'));
const promptTokens = Number(flag('prompt', '64'));
const ks = flag('ks', '1,4,8').split(',').map(Number);
const rounds = Number(flag('rounds', '3'));
const device = flag('device', 'cpu') as Device;

const blockSizeTokens = 16;
const blocksPerRow = Math.ceil((promptTokens + tokens + 1) / blockSizeTokens);
const runner = await LoopDecodeRunner.create({ modelDir, device, kvCacheBytes: 2 * 1024 ** 3, blockSizeTokens, numAdapterSlots: 1, maxDecodeStepsPerRun: Math.max(...ks) });
const vocab = runner.layout.vocabSize;
const tables = Array.from({ length: streams }, (_, r) => Array.from({ length: blocksPerRow }, (_, j) => r * blocksPerRow + j));
const argmax = (logits: Float32Array, row: number) => {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (logits[row * vocab + i] > logits[row * vocab + best]) best = i;
  return best;
};

let seqBase = 0;
async function prefill(): Promise<number[]> {
  seqBase += streams;
  const result = await runner.execute({
    stepId: 0,
    sequences: tables.map((blockTable, r) => ({ seqId: seqBase + r, tokenIds: Array.from({ length: promptTokens }, (_, j) => (r * 131 + j * 17) % 40000 + 5), startPosition: 0, blockTable, adapterSlot: 0, sampleNext: true })),
  });
  return result.outcomes.map((o) => argmax(result.logits, o.logitsRow));
}

/** Decode `tokens` tokens per row; k = 0 means the single-step graph with host argmax. Returns ms per step of all rows. */
async function decode(k: number): Promise<{ msPerToken: number; ids: number[] }> {
  let last = await prefill();
  const ids: number[] = [];
  const started = performance.now();
  for (let done = 0; done < tokens; ) {
    const start = promptTokens + done;
    if (k === 0) {
      const result = await runner.execute({ stepId: 1, sequences: tables.map((blockTable, r) => ({ seqId: seqBase + r, tokenIds: [last[r]], startPosition: start, blockTable, adapterSlot: 0, sampleNext: true })) });
      last = result.outcomes.map((o) => argmax(result.logits, o.logitsRow));
      ids.push(last[0]);
      done++;
    } else {
      const steps = Math.min(k, tokens - done);
      const rows: LoopRow[] = tables.map((blockTable, r) => ({ seqId: seqBase + r, tokenId: last[r], startPosition: start, blockTable, adapterSlot: 0, sampling: { temperature: 0, topK: 0, seed: r } }));
      const out = await runner.decodeSteps(rows, steps);
      last = rows.map((_, r) => out.tokenIds[r * steps + steps - 1]);
      ids.push(...out.tokenIds.subarray(0, steps));
      done += steps;
    }
  }
  return { msPerToken: (performance.now() - started) / tokens, ids };
}

const modes = [0, ...ks];
const samples = new Map<number, number[]>(modes.map((k) => [k, []]));
await decode(0); // warm-up
for (const k of ks) await decode(k);
let reference: number[] | null = null;
for (let round = 0; round < rounds; round++) {
  for (const k of modes) {
    const { msPerToken, ids } = await decode(k);
    samples.get(k)!.push(msPerToken);
    reference ??= ids;
    if (ids.join() !== reference.join()) console.error(`k=${k}: row 0 tokens differ from single-step greedy`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`streams ${streams}, prompt ${promptTokens}, ${tokens} decode tokens per row, ${rounds} rounds, device ${device}`);
for (const k of modes) {
  const ms = median(samples.get(k)!);
  const label = k === 0 ? 'one step per run (single-step graph, host argmax)' : `Loop graph, k = ${k}`;
  console.log(`${label.padEnd(52)} ${ms.toFixed(1).padStart(7)} ms per step  ${((streams * 1000) / ms).toFixed(1).padStart(7)} tok/s   (runs: ${samples.get(k)!.map((x) => x.toFixed(1)).join(', ')})`);
}
await runner.release();
