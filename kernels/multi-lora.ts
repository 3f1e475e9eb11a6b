import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA (every row of the batch may use a different adapter), from stacked adapter slots, gathering each
 * adapter used in the batch once (not once per row).
 *
 *   inputs:  x [B, S, in]
 *            used [U] int64: the distinct adapter slots of this batch's rows
 *            mask [U, B, 1, 1]: scale (lora_alpha / r) of row b's adapter where row b uses used[u], else 0
 *            aStack [numSlots, in, maxRank], bStack [numSlots, maxRank, out]
 *   A = aStack[used]  [U, in, R]          B = bStack[used]  [U, R, out]
 *   for each u, row b:  t[u, b] = mask[u, b] * (x[b] @ A[u])        [U, B, S, R]
 *   delta[b] = sum_u t[u, b] @ B[u]                                  [B, S, out]
 *
 * Only U adapters' factors are copied per step (a batch of 16 rows over 2 adapters copies 2, not 16), and the x @ A
 * products of the other U - 1 adapters per row are rank-sized and cheap. Adapters of rank r < maxRank occupy the first r
 * columns of A and rows of B; the rest stay zero, so padding changes the cost (maxRank / r) but not the result.
 * Stacks are graph inputs owned by the runner: loading an adapter writes a slot, it never rebuilds the graph.
 */
export function multiLoraDelta(g: OnnxGraph, x: string, stacks: { a: string; b: string }, rows: { used: string; mask: string }, hint: string): string {
  const axis1 = g.constInt64('axis1', [1]);
  const a = g.op('Unsqueeze', [g.op('Gather', [stacks.a, rows.used], { attrs: { axis: { i: 0 } }, hint: `${hint}_a` }), axis1], { hint: `${hint}_a4` });
  const b = g.op('Unsqueeze', [g.op('Gather', [stacks.b, rows.used], { attrs: { axis: { i: 0 } }, hint: `${hint}_b` }), axis1], { hint: `${hint}_b4` });
  const xa = g.op('Mul', [g.op('MatMul', [x, a], { hint: `${hint}_xa` }), rows.mask], { hint: `${hint}_xa_masked` });
  const xab = g.op('MatMul', [xa, b], { hint: `${hint}_xab` });
  return g.op('ReduceSum', [xab, g.constInt64('axis0', [0])], { attrs: { keepdims: { i: 0 } }, hint: `${hint}_delta` });
}
