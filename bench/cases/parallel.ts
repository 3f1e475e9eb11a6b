/**
 * World size 1 vs PP=2 vs TP=2 (worker threads), side by side in one run on the same converted model: decode
 * tokens/s and per-step latency, with each step's time split into compute (inside ORT, summed over workers),
 * communication (round trip minus compute: message passing, copies, queueing) and the controller's host-staged
 * all-reduce. A trace of one PP=2 decode step shows micro-batches overlapping across stages.
 * These machines have 2 cores: speedup is not the point; overlap and the cost model are.
 */
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { ShardController, type StepTiming } from '../../src/parallel/controller.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { INT4 } from '../lib/quant-variants.ts';
import { quantile, significant } from '../lib/stats.ts';

interface Settings {
  preset: ModelPreset;
  batch: number;
  promptTokens: number;
  decodeSteps: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', batch: 4, promptTokens: 16, decodeSteps: 8 },
  full: { preset: 'small', batch: 8, promptTokens: 32, decodeSteps: 24 },
};

const LAYOUTS = [
  { name: 'world 1', tp: 1, pp: 1 },
  { name: 'PP=2', tp: 1, pp: 2 },
  { name: 'TP=2', tp: 2, pp: 1 },
];

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

export const parallelCase: BenchCase = {
  name: 'parallel',
  description: 'tensor- and pipeline-parallel shard groups (worker threads) vs world size 1: tokens/s, step latency, communication per step',
  async run(ctx: BenchContext): Promise<CaseOutput> {
    const s = SETTINGS[ctx.mode];
    const model = await ctx.models.converted(s.preset, INT4);
    const rows: Cell[][] = [];
    const data: Record<string, unknown> = {};
    let overlap: StepTiming | null = null;
    for (const layout of LAYOUTS) {
      ctx.log(`parallel: ${layout.name} on ${s.preset}`);
      const controller = await ShardController.start({ modelDir: model.dir, tp: layout.tp, pp: layout.pp, kvCacheBytes: 64 << 20, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 8, intraOpThreads: 1 });
      try {
        const vocab = controller.layout.vocabSize;
        const blocksPerSeq = Math.ceil((s.promptTokens + s.decodeSteps + 1) / 16);
        const seqs: SequenceWork[] = Array.from({ length: s.batch }, (_, i) => ({
          seqId: i,
          tokenIds: Array.from({ length: s.promptTokens }, (_, k) => (17 * i + 31 * k + 1) % vocab),
          startPosition: 0,
          blockTable: Array.from({ length: blocksPerSeq }, (_, k) => i * blocksPerSeq + k),
          adapterSlot: 0,
          sampleNext: true,
        }));
        let result = await controller.execute({ stepId: 0, sequences: seqs });
        const stepMs: number[] = [];
        const timings: StepTiming[] = [];
        for (let step = 1; step <= s.decodeSteps; step++) {
          for (const o of result.outcomes) {
            const seq = seqs[o.seqId];
            const next = argmax(result.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab));
            seq.startPosition += seq.tokenIds.length;
            seq.tokenIds = [next];
          }
          const t0 = performance.now();
          result = await controller.execute({ stepId: step, sequences: seqs });
          stepMs.push(performance.now() - t0);
          timings.push(controller.lastTiming!);
        }
        const mean = (f: (t: StepTiming) => number) => timings.reduce((a, t) => a + f(t), 0) / timings.length;
        const totalS = stepMs.reduce((a, b) => a + b, 0) / 1000;
        const perWorker = controller.workerMemory().map((w) => w.memory!.weightsBytes);
        rows.push([
          layout.name,
          significant((s.batch * s.decodeSteps) / totalS),
          significant(quantile(stepMs, 0.5)),
          significant(quantile(stepMs, 0.99)),
          significant(mean((t) => t.computeMs)),
          significant(mean((t) => t.commMs)),
          significant(mean((t) => t.reduceMs)),
          significant(mean((t) => t.numRuns)),
          perWorker.map((b) => (b / 2 ** 20).toFixed(1)).join(' / '),
        ]);
        data[layout.name] = { stepMs, timings: timings.map(({ trace: _trace, ...t }) => t), weightsBytesPerWorker: perWorker };
        if (layout.pp === 2) overlap = timings[timings.length - 1];
      } finally {
        await controller.shutdown();
      }
    }
    const traceRows: Cell[][] = (overlap?.trace ?? []).map((t) => [`worker ${t.worker}`, t.microBatch, t.segment, significant(t.startMs), significant(t.endMs)]);
    return {
      tables: [
        {
          title: `Shard groups on ${s.preset} (int4), batch ${s.batch}, ${s.decodeSteps} decode steps, 1 ORT thread per worker`,
          columns: ['layout', 'tokens/s', 'step p50 ms', 'step p99 ms', 'compute ms/step', 'comm ms/step', 'all-reduce ms/step', 'runs/step', 'weights MiB per worker'],
          rows,
          notes: [
            'compute = time inside ORT summed over the step\'s worker runs (overlapping runs both count);',
            'comm = per run, controller round trip minus worker compute (postMessage, copies, queueing behind other micro-batches), summed;',
            'all-reduce = controller time summing TP partials and gathering vocab slices (host-staged).',
          ],
        },
        {
          title: 'One PP=2 decode step: micro-batches in flight (ms from step start, compute only)',
          columns: ['worker (stage)', 'micro-batch', 'segment', 'start ms', 'end ms'],
          rows: traceRows,
          notes: ['stage 0 runs micro-batch 1 while stage 1 runs micro-batch 0 when the intervals overlap.'],
        },
      ],
      summary: rows.map((r) => ({ metric: `parallel ${r[0]} tokens/s (${s.preset}, batch ${s.batch})`, value: String(r[1]) })),
      data,
    };
  },
};

export default parallelCase;
