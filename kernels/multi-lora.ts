import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA (every row of the batch may use a different adapter) over all adapter slots at once, with no
 * per-row gathers.
 *
 *   inputs:  x [B, S, in]                               (T = B*S tokens)
 *            aStack [numSlots, in, R], bStack [numSlots, R, out]        (slot 0 = zeros = base model; R = max rank)
 *            mask [T, numSlots*R]: scale (lora_alpha / r) of token t's adapter on the R columns of its slot, 0 elsewhere
 *   A  = aStack viewed as [in, numSlots*R]   (one transpose: slot-major columns)
 *   B  = bStack viewed as [numSlots*R, out]  (a reshape, no copy)
 *   delta = ((x @ A) * mask) @ B                          [T, out] -> [B, S, out]
 *
 * x @ A computes every token's projection onto every slot's A (numSlots*R columns, cheap at LoRA ranks); the mask keeps
 * only the token's own adapter, scaled; the second GEMM then applies that adapter's B. Two GEMMs per target, whatever
 * the mix of adapters in the batch; each slot's factors are read once per step instead of being gathered once per row
 * (a per-row Gather of padded A/B moved ~300 MB per decode step at 16 rows). Adapters of rank r < R occupy the first r
 * columns of A and rows of B; the rest stay zero. Stacks are graph inputs owned by the runner: loading an adapter writes
 * a slot, it never rebuilds the graph.
 */
export function multiLoraDelta(
  g: OnnxGraph,
  x: string,
  stacks: { a: string; b: string },
  mask: string,
  dims: { inFeatures: number; outFeatures: number; outShape: string },
  hint: string,
): string {
  const tokens = g.op('Reshape', [x, g.constInt64('shape_tokens', [-1, dims.inFeatures])], { hint: `${hint}_tokens` });
  const aSlotMajor = g.op('Transpose', [stacks.a], { attrs: { perm: { ints: [1, 0, 2] } }, hint: `${hint}_a_t` });
  const a = g.op('Reshape', [aSlotMajor, g.constInt64('shape_a', [dims.inFeatures, -1])], { hint: `${hint}_a` });
  const b = g.op('Reshape', [stacks.b, g.constInt64('shape_b', [-1, dims.outFeatures])], { hint: `${hint}_b` });
  const xa = g.op('Mul', [g.op('MatMul', [tokens, a], { hint: `${hint}_xa` }), mask], { hint: `${hint}_xa_masked` });
  return g.op('Reshape', [g.op('MatMul', [xa, b], { hint: `${hint}_xab` }), dims.outShape], { hint: `${hint}_delta` });
}

/** The mask input of multiLoraDelta for rows of `stepLength` tokens: [rows*stepLength, numSlots*maxRank]. */
export function loraTokenMask(slots: readonly number[], stepLength: number, numSlots: number, maxRank: number, scales: ArrayLike<number>): Float32Array {
  const width = numSlots * maxRank;
  const mask = new Float32Array(slots.length * stepLength * width);
  slots.forEach((slot, row) => {
    if (slot === 0) return;
    for (let i = 0; i < stepLength; i++) {
      const at = (row * stepLength + i) * width + slot * maxRank;
      mask.fill(scales[slot], at, at + maxRank);
    }
  });
  return mask;
}

/** Shape tensors [B, S, out] for multiLoraDelta, one per output width, from an int64 [2] tensor holding [B, S]. */
export function loraOutShapes(g: OnnxGraph, batchSeq: string): (outFeatures: number) => string {
  const shapes = new Map<number, string>();
  return (outFeatures) => {
    let shape = shapes.get(outFeatures);
    if (!shape) {
      shape = g.op('Concat', [batchSeq, g.constInt64(`lora_out_${outFeatures}`, [outFeatures])], { attrs: { axis: { i: 0 } }, hint: `lora_shape_${outFeatures}` });
      shapes.set(outFeatures, shape);
    }
    return shape;
  };
}
