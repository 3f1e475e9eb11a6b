import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA over packed factors (used by quantized models). Every adapter the group's rows use has its rank
 * dimensions packed side by side at their true rank (no padding to a max rank) into U "LoRA columns" shared by all
 * modules; column j belongs to one adapter (slot) and one of its rank dimensions.
 *
 *   inputs:  x [B, S, in] float
 *            a [in, U] float        A column j = the adapter's A column times its scale (lora_alpha / r)
 *            b [U, out] float       B row j = the adapter's B row
 *            select [B, 1, U] bool  select[r, 0, j] = column j belongs to row r's adapter (rows of the base model: none)
 *   h = x @ a                                 every row against every packed column
 *   delta = Where(select, h, 0) @ b           each row keeps its own adapter's columns
 *   returns delta [B, S, out]
 *
 * Selecting (Where), not multiplying by a 0/1 mask, is what keeps rows isolated: a column of another tenant's adapter
 * may give Inf for this row's x, and Inf * 0 is NaN; Where returns exactly 0, and 0 times a finite B (adapters are
 * checked finite at load) adds exactly nothing, so a base row's output is bit-identical to the base graph's.
 * Each token multiplies every packed column, so the work is tokens x U x (in + out) against tokens x maxRank x
 * (in + out) for a per-row gather, but there is no per-row copy of the factors and 3 nodes per module instead of 5:
 * that wins on decode batches (few tokens, many rows sharing few adapters).
 */
export function packedMultiLoraDelta(g: OnnxGraph, x: string, factors: { a: string; b: string }, select: string, hint: string): string {
  const h = g.op('MatMul', [x, factors.a], { hint: `${hint}_xa` });
  const kept = g.op('Where', [select, h, g.constFloat('lora_zero', [0], [])], { hint: `${hint}_selected` });
  return g.op('MatMul', [kept, factors.b], { hint: `${hint}_delta` });
}
