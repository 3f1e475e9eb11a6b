import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA (every row of the batch may use a different adapter), from stacked adapter slots, gathering each
 * adapter used in the batch once (not once per row).
 *
 *   inputs:  x [B, S, in]          (flattened to the T = B*S tokens of the step)
 *            used [U] int64: the distinct adapter slots of this batch's rows
 *            mask [U, T, 1]: scale (lora_alpha / r) of token t's adapter where its row uses used[u], else 0
 *            aStack [numSlots, in, maxRank], bStack [numSlots, maxRank, out]
 *   A = aStack[used]  [U, in, R]          B = bStack[used]  [U, R, out]
 *   for each u:  t[u] = mask[u] * (x @ A[u])        [U, T, R]     (U matrix products of T rows each)
 *   delta = sum_u t[u] @ B[u]                        [T, out] -> [B, S, out]
 *
 * Only U adapters' factors are copied per step (16 rows over 2 adapters copy 2, not 16), and each product is one GEMM
 * over all T tokens rather than a tiny GEMM per row; the x @ A[u] of tokens that do not use u are rank-sized and are
 * zeroed by the mask. Adapters of rank r < maxRank occupy the first r columns of A and rows of B; the rest stay zero,
 * so padding changes the cost (maxRank / r) but not the result. Stacks are graph inputs owned by the runner: loading
 * an adapter writes a slot, it never rebuilds the graph.
 */
export function multiLoraDelta(
  g: OnnxGraph,
  x: string,
  stacks: { a: string; b: string },
  rows: { used: string; mask: string },
  dims: { inFeatures: number; outFeatures: number },
  hint: string,
): string {
  const tokens = g.op('Reshape', [x, g.constInt64('shape_tokens', [-1, dims.inFeatures])], { hint: `${hint}_tokens` });
  const a = g.op('Gather', [stacks.a, rows.used], { attrs: { axis: { i: 0 } }, hint: `${hint}_a` });
  const b = g.op('Gather', [stacks.b, rows.used], { attrs: { axis: { i: 0 } }, hint: `${hint}_b` });
  const xa = g.op('Mul', [g.op('MatMul', [tokens, a], { hint: `${hint}_xa` }), rows.mask], { hint: `${hint}_xa_masked` });
  const delta = g.op('ReduceSum', [g.op('MatMul', [xa, b], { hint: `${hint}_xab` }), g.constInt64('axis0', [0])], { attrs: { keepdims: { i: 0 } }, hint: `${hint}_delta_tokens` });
  const shape = g.op('Concat', [g.op('Shape', [x], { attrs: { start: { i: 0 }, end: { i: 2 } }, hint: `${hint}_bs` }), g.constInt64('out_features', [dims.outFeatures])], { attrs: { axis: { i: 0 } }, hint: `${hint}_shape` });
  return g.op('Reshape', [delta, shape], { hint: `${hint}_delta` });
}
