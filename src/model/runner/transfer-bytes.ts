/**
 * Bytes that cross the host <-> device link (PCIe) per generated token in a decode step, for the three ways of running
 * the model on a GPU (docs/gpu.md has the table and the reasoning). Decode step: `streams` rows, each with
 * `contextTokens` positions already cached, one new token each.
 *
 *   e = KV element bytes (4 fp32), KVrow(n) = 2 * layers * kvHeads * n * headDim * e   (keys and values of n positions)
 *   small per row and step: ids 8 + position 8 + logits index 8 + attention bias (C + 1) * 4   (+ slot 8 + scale 4 with adapters)
 *   (a) host cache, one step per run (ModelRunner on CUDA: onnxruntime-node has no IO binding, every input is copied in):
 *       up   = streams * (small + KVrow(C)) + loraStacks                   down = streams * (KVrow(1) + vocab * 4 + 4)
 *   (b) k steps per run (LoopDecodeRunner, decode-loop-graph.ts: ONNX Loop, per-run KV window carried inside the loop,
 *       bias and write indices computed in the graph, sampling in the graph, per-row seeds):
 *       per row and run: id 8 + start position 8 + temperature 4 + top-k 8 + seed 8 (+ slot 8 + scale 4 with adapters)
 *       up   = streams * (36 + KVrow(C)) + loraStacks                      down = streams * k * (KVrow(1) + 8 id + 4 logprob)
 *       per token: divide by streams * k.  (C here is the gathered past: the runner rounds it up to 32 positions.)
 *   (c) device-resident cache and stacks (DeviceKvRunner on WebGPU; kernels/paged-kv-device.ts), one step per run:
 *       up   = streams * (small + ceil(C / block) * 8 + kvHeads * 3 * 8 + sampling 28) + 1
 *              (sampling: temperature 4 + top-k 8 + seed 8 + position 8 per row, fed on every step; 1: the any-sampled flag)
 *       logits back (steps with a host-only row: penalties, top-p, min-p, top-n logprobs):
 *                                                                          down = streams * (vocab * 4 + 4) (logits rows)
 *       sampled in the graph (every other step, what `--device webgpu` does): down = streams * (8 id + 4 logprob)
 * loraStacks = every A/B stack of every layer and target: slots * (in + out) * maxRank * 4 (only when a row has an adapter).
 */
export interface TransferShape {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  vocabSize: number;
}

export interface TransferCase {
  streams: number;
  contextTokens: number;
  /** Decode steps per session.run for design (b). */
  stepsPerRun: number;
  kvElementBytes?: number;
  blockSizeTokens?: number;
  /** Adapter slots uploaded with the stacks (0 = base model only: no LoRA inputs at all). */
  adapterSlots?: number;
  maxAdapterRank?: number;
}

export interface TransferBytes {
  /** Host -> device bytes per token. */
  upBytes: number;
  /** Device -> host bytes per token. */
  downBytes: number;
}

export type TransferDesign = 'host-kv-per-step' | 'loop-k-steps' | 'device-kv' | 'device-kv-sampled';

/** Sum over layers and LoRA targets of (in + out) features. */
export function loraFeatureSum(s: TransferShape): number {
  const q = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const h = s.hiddenSize;
  const i = s.intermediateSize;
  const perLayer = (h + q) + (h + kv) + (h + kv) + (q + h) + (h + i) + (h + i) + (i + h);
  return s.numLayers * perLayer;
}

export function transferBytesPerToken(shape: TransferShape, c: TransferCase, design: TransferDesign): TransferBytes {
  const e = c.kvElementBytes ?? 4;
  const block = c.blockSizeTokens ?? 16;
  const slots = c.adapterSlots ?? 0;
  const rank = c.maxAdapterRank ?? 16;
  const n = c.streams;
  const ctx = c.contextTokens;
  const kvRow = (positions: number) => 2 * shape.numLayers * shape.numKvHeads * positions * shape.headDim * e;
  const small = 8 + 8 + 8 + (ctx + 1) * 4 + (slots > 0 ? 12 : 0);
  const loraStacks = slots > 0 ? slots * loraFeatureSum(shape) * rank * 4 : 0;
  switch (design) {
    case 'host-kv-per-step':
      return { upBytes: (n * (small + kvRow(ctx)) + loraStacks) / n, downBytes: kvRow(1) + shape.vocabSize * 4 + 4 };
    case 'loop-k-steps': {
      const k = c.stepsPerRun;
      const loopSmall = 8 + 8 + 4 + 8 + 8 + (slots > 0 ? 12 : 0);
      return { upBytes: (n * (loopSmall + kvRow(ctx)) + loraStacks) / (n * k), downBytes: kvRow(1) + 12 };
    }
    case 'device-kv':
    case 'device-kv-sampled': {
      const up = small + Math.ceil(ctx / block) * 8 + shape.numKvHeads * 3 * 8 + 28 + 1 / n;
      return { upBytes: up, downBytes: design === 'device-kv' ? shape.vocabSize * 4 + 4 : 12 };
    }
  }
}
