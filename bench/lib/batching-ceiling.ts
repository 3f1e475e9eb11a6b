/**
 * How much continuous batching can gain at most, from the cost of the steps it is made of: for requests of P prompt
 * tokens and N output tokens,
 *   sequential per request  = prefill(P) + N * decode(batch 1)
 *   batched per request    >= prefill(P in a batch of B) / B + N * decode(batch B) / B
 * so throughput(batched) / throughput(sequential) <= sequential / batched, whatever the scheduler does. Measured two
 * ways: the whole model step through the executor the engine uses, and the model's linear layers alone (a graph of
 * only its MatMulNBits / DynamicQuantizeMatMul nodes, same shapes and storage, random codes: a kernel's cost does not
 * depend on the weight values), which shows how much of the cap the quantized matmul kernels set by themselves.
 */
import * as ort from 'onnxruntime-node';
import { linear, type LinearWeight } from '../../kernels/linear.ts';
import { OnnxGraph } from '../../kernels/onnx-graph.ts';
import type { Executor, SequenceWork } from '../../src/engine/executor.ts';
import { serializeModel } from '../../src/model/graph/onnx-serialize.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';
import { createPrng } from '../../src/engine/sampler/prng.ts';
import type { QuantVariant } from './quant-variants.ts';

export interface StepCosts {
  batch: number;
  promptTokens: number;
  /** One prompt of promptTokens tokens, alone. */
  prefillMs: number;
  /** `batch` prompts of promptTokens tokens in one step. */
  prefillBatchMs: number;
  /** One decode token, batch 1. */
  decode1Ms: number;
  /** One decode token for each of `batch` rows. */
  decodeBatchMs: number;
}

/** Upper bound of batched / sequential throughput for requests of promptTokens + outputTokens (see the file comment). */
export function ceilingRatio(c: StepCosts, outputTokens: number): number {
  const sequentialMs = c.prefillMs + outputTokens * c.decode1Ms;
  const batchedMs = c.prefillBatchMs / c.batch + (outputTokens * c.decodeBatchMs) / c.batch;
  return sequentialMs / batchedMs;
}

async function medianMs(runs: number, f: () => Promise<unknown>): Promise<number> {
  await f();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/**
 * Step costs of the whole model through `executor` (base model, no adapters): prompts of promptTokens tokens, decode
 * steps over a past of promptTokens positions. Uses sequence ids of its own (never reused) and the first KV blocks; run it while the engine is idle.
 */
export async function executorStepCosts(executor: Executor, opts: { batch: number; promptTokens: number; runs: number }): Promise<StepCosts> {
  const { batch, promptTokens, runs } = opts;
  const { blockSizeTokens, numKvBlocks, vocabSize } = executor.layout;
  const blocksPerSeq = Math.ceil((promptTokens + 1) / blockSizeTokens);
  if (batch * blocksPerSeq > numKvBlocks) throw new Error(`the KV cache (${numKvBlocks} blocks) cannot hold ${batch} sequences of ${promptTokens + 1} tokens`);
  let nextSeqId = 1_000_000_000;
  let stepId = 1_000_000_000;
  const prompt = (row: number) => Array.from({ length: promptTokens }, (_, j) => ((row * 7919 + j * 104729) % (vocabSize - 1)) + 1);
  const rows = (n: number, tokens: (row: number) => number[], startPosition: number, ids: number[]): SequenceWork[] =>
    Array.from({ length: n }, (_, row) => ({
      seqId: ids[row],
      tokenIds: tokens(row),
      startPosition,
      blockTable: Array.from({ length: blocksPerSeq }, (_, j) => row * blocksPerSeq + j),
      adapterSlot: 0,
      sampleNext: true,
    }));
  const run = async (sequences: SequenceWork[]) => {
    const result = await executor.execute({ stepId: stepId++, sequences });
    const failed = result.outcomes.find((o) => o.error !== undefined);
    if (failed) throw new Error(`step failed: ${failed.error}`);
  };
  const fresh = (n: number) => Array.from({ length: n }, () => nextSeqId++);
  const prefillMs = await medianMs(runs, () => run(rows(1, prompt, 0, fresh(1))));
  const prefillBatchMs = await medianMs(Math.max(1, Math.floor(runs / 4)), () => run(rows(batch, prompt, 0, fresh(batch))));
  // Decode steps over a prefilled past: the KV blocks hold the last batch prefill; every step rewrites position P.
  const decodeIds = fresh(batch);
  await run(rows(batch, prompt, 0, decodeIds));
  const decode = (n: number) => () => run(rows(n, () => [1], promptTokens, decodeIds));
  const decode1Ms = await medianMs(runs, decode(1));
  const decodeBatchMs = await medianMs(runs, decode(batch));
  return { batch, promptTokens, prefillMs, prefillBatchMs, decode1Ms, decodeBatchMs };
}

/** Random weights in the variant's storage, shaped like a model linear (cost-equivalent to converted weights). */
function randomLinear(variant: QuantVariant, inFeatures: number, outFeatures: number, seed: number): LinearWeight {
  const prng = createPrng(seed);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(prng.nextFloat() * 256));
  if (variant.quant === 'int4') {
    const blockSize = variant.blockSize ?? 32;
    const kBlocks = Math.ceil(inFeatures / blockSize);
    return {
      kind: 'int4',
      inFeatures,
      outFeatures,
      blockSize,
      packed: bytes((outFeatures * kBlocks * blockSize) / 2),
      scales: new Float32Array(outFeatures * kBlocks).fill(0.01),
      zeroPoints: new Uint8Array(outFeatures * Math.ceil(kBlocks / 2)).fill(0x88),
      ...(variant.int4AccuracyLevel !== undefined ? { accuracyLevel: variant.int4AccuracyLevel } : {}),
    };
  }
  if (variant.quant === 'int8') {
    const blockSize = variant.blockSize ?? 32;
    const kBlocks = Math.ceil(inFeatures / blockSize);
    return { kind: 'int8', inFeatures, outFeatures, blockSize, packed: bytes(outFeatures * kBlocks * blockSize), scales: new Float32Array(outFeatures * kBlocks).fill(0.01) };
  }
  return { kind: 'fp32', inFeatures, outFeatures, weightInOut: Float32Array.from({ length: inFeatures * outFeatures }, () => prng.nextFloat() - 0.5) };
}

/**
 * The model's decoder linears only (per layer: fused QKV, O, fused gate/up, down; the LM head is left out), chained so
 * each layer's input depends on the previous one, in the variant's storage.
 */
function linearStackGraph(config: ModelConfig, variant: QuantVariant): Uint8Array {
  const { hiddenSize, intermediateSize, numHeads, numKvHeads, headDim, numLayers } = config;
  const qkvOut = (numHeads + 2 * numKvHeads) * headDim;
  const g = new OnnxGraph('linear_stack');
  let x = g.input('x', 'float32', ['batch', 'seq', hiddenSize]);
  for (let layer = 0; layer < numLayers; layer++) {
    const qkv = linear(g, x, `l${layer}.qkv`, randomLinear(variant, hiddenSize, qkvOut, 4 * layer));
    const attn = g.op('Slice', [qkv, g.constInt64(`l${layer}_s`, [0]), g.constInt64(`l${layer}_e`, [numHeads * headDim]), g.constInt64(`l${layer}_a`, [-1])]);
    const o = linear(g, attn, `l${layer}.o`, randomLinear(variant, numHeads * headDim, hiddenSize, 4 * layer + 1));
    const gateUp = linear(g, o, `l${layer}.gate_up`, randomLinear(variant, hiddenSize, 2 * intermediateSize, 4 * layer + 2));
    const act = g.op('Slice', [gateUp, g.constInt64(`l${layer}_gs`, [0]), g.constInt64(`l${layer}_ge`, [intermediateSize]), g.constInt64(`l${layer}_ga`, [-1])]);
    x = linear(g, act, `l${layer}.down`, randomLinear(variant, intermediateSize, hiddenSize, 4 * layer + 3));
  }
  g.output(x, 'float32', ['batch', 'seq', hiddenSize]);
  return serializeModel(g, null);
}

/** Step costs of the model's linear layers alone (see linearStackGraph), on the CPU provider. */
export async function linearStackStepCosts(config: ModelConfig, variant: QuantVariant, opts: { batch: number; promptTokens: number; runs: number }): Promise<StepCosts> {
  const session = await ort.InferenceSession.create(linearStackGraph(config, variant), { graphOptimizationLevel: 'all', executionMode: 'sequential' });
  try {
    const prng = createPrng(7);
    const input = (batch: number, seq: number) =>
      new ort.Tensor('float32', Float32Array.from({ length: batch * seq * config.hiddenSize }, () => prng.nextFloat() - 0.5), [batch, seq, config.hiddenSize]);
    const timed = (batch: number, seq: number, runs: number) => {
      const x = input(batch, seq);
      return medianMs(runs, () => session.run({ x }));
    };
    const { batch, promptTokens, runs } = opts;
    return {
      batch,
      promptTokens,
      prefillMs: await timed(1, promptTokens, runs),
      prefillBatchMs: await timed(batch, promptTokens, Math.max(1, Math.floor(runs / 4))),
      decode1Ms: await timed(1, 1, runs),
      decodeBatchMs: await timed(batch, 1, runs),
    };
  } finally {
    await session.release();
  }
}
