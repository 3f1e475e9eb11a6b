/**
 * k decode steps per session.run (LoopDecodeRunner, the `--device cuda` path) vs one step per run, side by side in one
 * process on the CPU provider: `streams` rows with prompts of `promptTokens` tokens, greedy, `tokens` decode tokens per
 * row, repeated in rotation (one-step graph with host argmax, then the Loop graph at each k). On the CPU nothing crosses
 * a bus, so this measures what the Loop costs per step; what it saves on CUDA (PCIe bytes per token / k) is in
 * docs/gpu.md and needs a GPU to measure. Also checks that every mode produces the same greedy tokens for row 0.
 */
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { LoopDecodeRunner } from '../../src/model/runner/loop-decode-runner.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { INT4 } from '../lib/quant-variants.ts';
import { median, significant } from '../lib/stats.ts';

interface Settings {
  preset: ModelPreset;
  streams: number;
  promptTokens: number;
  tokens: number;
  ks: number[];
  rounds: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', streams: 4, promptTokens: 16, tokens: 8, ks: [4, 8], rounds: 2 },
  full: { preset: 'small', streams: 16, promptTokens: 64, tokens: 24, ks: [1, 4, 8], rounds: 3 },
};

const BLOCK_TOKENS = 16;

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const model = await ctx.models.converted(s.preset, INT4);
  const blocksPerRow = Math.ceil((s.promptTokens + s.tokens + 1) / BLOCK_TOKENS);
  const runner = await LoopDecodeRunner.create({ modelDir: model.dir, kvCacheBytes: 1024 ** 3, blockSizeTokens: BLOCK_TOKENS, numAdapterSlots: 1, maxDecodeStepsPerRun: Math.max(...s.ks) });
  try {
    const vocab = runner.layout.vocabSize;
    const tables = Array.from({ length: s.streams }, (_, r) => Array.from({ length: blocksPerRow }, (_, j) => r * blocksPerRow + j));
    const argmax = (logits: Float32Array, row: number) => {
      let best = 0;
      for (let i = 1; i < vocab; i++) if (logits[row * vocab + i] > logits[row * vocab + best]) best = i;
      return best;
    };
    let seqBase = 0;
    const prefill = async (): Promise<number[]> => {
      seqBase += s.streams;
      const result = await runner.execute({
        stepId: 0,
        sequences: tables.map((blockTable, r) => ({
          seqId: seqBase + r,
          tokenIds: Array.from({ length: s.promptTokens }, (_, j) => ((r * 131 + j * 17) % (vocab - 5)) + 5),
          startPosition: 0,
          blockTable,
          adapterSlot: 0,
          sampleNext: true,
        })),
      });
      return result.outcomes.map((o) => argmax(result.logits, o.logitsRow));
    };
    /** k = 0: the one-step graph with host argmax. Returns ms per step of all rows and row 0's tokens. */
    const decode = async (k: number): Promise<{ msPerStep: number; ids: number[] }> => {
      let last = await prefill();
      const ids: number[] = [];
      const started = performance.now();
      for (let done = 0; done < s.tokens; ) {
        const start = s.promptTokens + done;
        if (k === 0) {
          const result = await runner.execute({
            stepId: 1,
            sequences: tables.map((blockTable, r) => ({ seqId: seqBase + r, tokenIds: [last[r]], startPosition: start, blockTable, adapterSlot: 0, sampleNext: true })),
          });
          last = result.outcomes.map((o) => argmax(result.logits, o.logitsRow));
          ids.push(last[0]);
          done++;
        } else {
          const steps = Math.min(k, s.tokens - done);
          const rows: SequenceWork[] = tables.map((blockTable, r) => ({
            seqId: seqBase + r,
            tokenIds: [last[r]],
            startPosition: start,
            blockTable,
            adapterSlot: 0,
            sampleNext: true,
            loopSampling: { temperature: 0, topK: 0, seed: r },
          }));
          const out = (await runner.runLoop(rows, steps)).sampled!;
          last = rows.map((_, r) => out.tokenIds[r * steps + steps - 1]);
          ids.push(...out.tokenIds.subarray(0, steps));
          done += steps;
        }
      }
      return { msPerStep: (performance.now() - started) / s.tokens, ids };
    };

    const modes = [0, ...s.ks];
    const samples = new Map<number, number[]>(modes.map((k) => [k, []]));
    const sameTokens = new Map<number, boolean>(modes.map((k) => [k, true]));
    ctx.log('warm-up');
    for (const k of modes) await decode(k);
    let reference: number[] | null = null;
    for (let round = 0; round < s.rounds; round++) {
      ctx.log(`round ${round + 1} of ${s.rounds}`);
      for (const k of modes) {
        const { msPerStep, ids } = await decode(k);
        samples.get(k)!.push(msPerStep);
        reference ??= ids;
        if (ids.join() !== reference.join()) sameTokens.set(k, false);
      }
    }
    const oneStepMs = median(samples.get(0)!);
    const rows: Cell[][] = modes.map((k) => {
      const ms = median(samples.get(k)!);
      return [k === 0 ? 'one step per run' : `Loop, k = ${k}`, significant(ms), significant((s.streams * 1000) / ms), significant(oneStepMs / ms), sameTokens.get(k)! ? 'yes' : 'no'];
    });
    const data: Record<string, unknown> = { settings: s, msPerStep: Object.fromEntries(modes.map((k) => [k === 0 ? 'oneStep' : `k${k}`, samples.get(k)])) };
    const best = Math.max(...s.ks);
    return {
      tables: [
        {
          title: `Decode, ${s.streams} streams, ${s.preset} int4, CPU provider: one step per run vs k steps per run (prompt ${s.promptTokens}, ${s.tokens} tokens per row, median of ${s.rounds})`,
          columns: ['mode', 'ms per step', 'tok/s', 'speed vs one step per run', 'row 0 tokens = one-step greedy'],
          rows,
          notes: [
            'On the CPU provider there is no bus to save: this is the Loop\'s own cost per step; on CUDA k divides the past\'s PCIe traffic (docs/gpu.md).',
            'int4 (MatMulNBits, int8 activations): a different near-tie greedy token in a longer attention window is quantization noise, not an error (fp32 is exact in the tests).',
          ],
        },
      ],
      summary: [{ metric: `decode-loop: k = ${best} steps per run vs one step per run, ${s.streams} streams (${s.preset} int4, CPU)`, value: `${significant(oneStepMs / median(samples.get(best)!))}x` }],
      data,
    };
  } finally {
    await runner.release();
  }
}

const benchCase: BenchCase = { name: 'decode-loop', description: 'k decode steps per session.run (the CUDA path) vs one step per run, on the CPU provider', run };
export default benchCase;
