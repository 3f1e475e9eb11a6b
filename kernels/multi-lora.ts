import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA (BGMV: every row of the batch may use a different adapter), from stacked adapter slots.
 *
 *   inputs:  x [B, S, in], slot [B] int64, rowScale [B, 1, 1] (lora_alpha / r of the row's adapter, 0 for slot 0)
 *            aStack [numSlots, in, maxRank], bStack [numSlots, maxRank, out]    (slot 0 is all zeros = no adapter)
 *   for each row b:  delta[b] = rowScale[b] * (x[b] @ aStack[slot[b]]) @ bStack[slot[b]]
 *   returns delta [B, S, out]
 *
 * Adapters of rank r < maxRank occupy the first r columns of A and rows of B; the rest stay zero, so padding changes
 * the cost (maxRank / r) but not the result. Stacks are graph inputs owned by the runner: loading an adapter writes a
 * slot, it never rebuilds the graph.
 */
export function multiLoraDelta(
  g: OnnxGraph,
  x: string,
  stacks: { a: string; b: string },
  rows: { slot: string; scale: string },
  hint: string,
): string {
  const a = g.op('Gather', [stacks.a, rows.slot], { attrs: { axis: { i: 0 } }, hint: `${hint}_a` });
  const b = g.op('Gather', [stacks.b, rows.slot], { attrs: { axis: { i: 0 } }, hint: `${hint}_b` });
  const xa = g.op('MatMul', [x, a], { hint: `${hint}_xa` });
  const xab = g.op('MatMul', [xa, b], { hint: `${hint}_xab` });
  return g.op('Mul', [xab, rows.scale], { hint: `${hint}_delta` });
}
