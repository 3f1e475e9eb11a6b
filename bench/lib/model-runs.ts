/**
 * Drives a ModelRunner the way the benchmarks need: fixed prompts, next-token logits at every position of a prompt
 * tail, prefill latency, and decode-step latency at batch 1.
 *
 * Logits at every position: the runner returns logits only for the last token of each sequence in a step, so the
 * tail is walked token by token: one prefill of the first `fromTokens` tokens (its row predicts token fromTokens),
 * then one decode step per following token (each row predicts the next token). All prompts advance together as one
 * batch per step, which is batched decode, the path the server runs.
 */
import { PagedKvCache } from '../../src/model/runner/paged-kv-cache.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { outOfRange } from '../../src/errors.ts';
import { readManifest } from '../../src/model/converted-model.ts';
import { timeMs } from './stats.ts';
import { SeededRandom } from '../../src/util/seeded-random.ts';

export const BLOCK_SIZE_TOKENS = 16;

export interface OpenRunnerOptions {
  /** Sequences that hold KV at the same time. */
  maxSequences: number;
  /** Longest sequence, in tokens. */
  maxSequenceTokens: number;
  intraOpThreads?: number;
}

/** Opens a runner with a KV cache just large enough for `maxSequences` sequences of `maxSequenceTokens`, base model only. */
export async function openBenchRunner(modelDir: string, options: OpenRunnerOptions): Promise<ModelRunner> {
  const config = readManifest(modelDir).config;
  const bytesPerBlock = PagedKvCache.bytesPerBlock({ numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens: BLOCK_SIZE_TOKENS });
  const numBlocks = options.maxSequences * Math.ceil(options.maxSequenceTokens / BLOCK_SIZE_TOKENS);
  return ModelRunner.create({
    modelDir,
    kvCacheBytes: numBlocks * bytesPerBlock,
    blockSizeTokens: BLOCK_SIZE_TOKENS,
    numAdapterSlots: 1,
    maxAdapterRank: 1,
    ...(options.intraOpThreads !== undefined ? { intraOpThreads: options.intraOpThreads } : {}),
  });
}

/** Block table of the `index`-th concurrent sequence: its own contiguous run of blocks. */
export function blockTableFor(index: number, maxSequenceTokens: number): number[] {
  const perSequence = Math.ceil(maxSequenceTokens / BLOCK_SIZE_TOKENS);
  return Array.from({ length: perSequence }, (_, i) => index * perSequence + i);
}

/** Deterministic prompts of token ids in [0, vocabSize) (a seeded stream per prompt). */
export function benchPrompts(options: { numPrompts: number; lengthTokens: number; vocabSize: number; seed?: number }): number[][] {
  const seed = options.seed ?? 1;
  return Array.from({ length: options.numPrompts }, (_, p) => {
    const rng = new SeededRandom(seed, `bench-prompt-${p}`);
    return Array.from({ length: options.lengthTokens }, () => rng.nextInt(options.vocabSize));
  });
}

function rowOf(result: { outcomes: Array<{ seqId: number; logitsRow: number; error?: string }> }, seqId: number): number {
  const outcome = result.outcomes.find((o) => o.seqId === seqId);
  if (!outcome || outcome.error !== undefined || outcome.logitsRow < 0) {
    throw new Error(`sequence ${seqId} produced no logits: ${outcome?.error ?? 'missing outcome'}`);
  }
  return outcome.logitsRow;
}

/**
 * Next-token logits after tokens fromTokens-1 .. L-2 of every prompt (all prompts of length L):
 * [numPrompts * (L - fromTokens), vocab], prompt-major. Row r of prompt p predicts token fromTokens + r.
 */
export async function collectTailLogits(runner: ModelRunner, prompts: number[][], fromTokens: number): Promise<Float32Array> {
  const length = prompts[0]?.length ?? 0;
  if (prompts.some((p) => p.length !== length)) throw outOfRange('prompts', 'all of one length', prompts.map((p) => p.length));
  if (!(Number.isInteger(fromTokens) && fromTokens >= 1 && fromTokens < length)) throw outOfRange('fromTokens', `an integer in [1, ${length})`, fromTokens);
  const vocab = runner.layout.vocabSize;
  const rowsPerPrompt = length - fromTokens;
  const out = new Float32Array(prompts.length * rowsPerPrompt * vocab);
  const tables = prompts.map((_, i) => blockTableFor(i, length));
  const work = (i: number, position: number, count: number): SequenceWork => ({
    seqId: i + 1,
    tokenIds: prompts[i].slice(position, position + count),
    startPosition: position,
    blockTable: tables[i],
    adapterSlot: 0,
    sampleNext: true,
  });
  let stepId = 0;
  for (let r = 0; r < rowsPerPrompt; r++) {
    const position = r === 0 ? 0 : fromTokens + r - 1;
    const count = r === 0 ? fromTokens : 1;
    const result = await runner.execute({ stepId: stepId++, sequences: prompts.map((_, i) => work(i, position, count)) });
    prompts.forEach((_, i) => {
      const row = rowOf(result, i + 1);
      out.set(result.logits.subarray(row * vocab, (row + 1) * vocab), (i * rowsPerPrompt + r) * vocab);
    });
  }
  return out;
}

/** Wall time of one prefill step of `prompt` at batch 1 (positions 0..len-1 of sequence slot 0). */
export async function prefillMs(runner: ModelRunner, prompt: number[], maxSequenceTokens: number): Promise<number> {
  const blockTable = blockTableFor(0, maxSequenceTokens);
  return timeMs(() => runner.execute({ stepId: 0, sequences: [{ seqId: 1, tokenIds: prompt, startPosition: 0, blockTable, adapterSlot: 0, sampleNext: true }] }));
}

/**
 * Wall times of `numSteps` decode steps at batch 1 following a (untimed) prefill of `prompt`; the fed tokens repeat
 * the prompt, the context grows from prompt.length to prompt.length + numSteps - 1.
 */
export async function decodeStepsMs(runner: ModelRunner, prompt: number[], numSteps: number, maxSequenceTokens: number): Promise<number[]> {
  if (prompt.length + numSteps > maxSequenceTokens) throw outOfRange('numSteps', `<= ${maxSequenceTokens - prompt.length} (maxSequenceTokens - prompt length)`, numSteps);
  const blockTable = blockTableFor(0, maxSequenceTokens);
  await runner.execute({ stepId: 0, sequences: [{ seqId: 1, tokenIds: prompt, startPosition: 0, blockTable, adapterSlot: 0, sampleNext: true }] });
  const times: number[] = [];
  for (let s = 0; s < numSteps; s++) {
    const token = prompt[s % prompt.length];
    times.push(await timeMs(() => runner.execute({ stepId: 1 + s, sequences: [{ seqId: 1, tokenIds: [token], startPosition: prompt.length + s, blockTable, adapterSlot: 0, sampleNext: true }] })));
  }
  return times;
}
