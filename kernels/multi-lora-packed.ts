import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA over factors packed by adapter (used by quantized models): the A and B factors of the adapters a
 * batch's rows use are packed side by side along a leading "adapter" axis, each padded to the slots' max rank R, and the
 * batch's tokens are grouped by adapter so that each token meets its own adapter's factors only.
 *
 *   inputs:  x [B, S, in] float
 *            a [N, in, R] float          adapter n's A (transposed) times its scale lora_alpha / r; columns past its rank 0
 *            b [N, R, out] float         adapter n's B (transposed); rows past its rank 0
 *            tokenIndex [N, M, 2] int64  (row, position) of the tokens of adapter n, in any order, padded to M >= 2
 *                                        entries with any valid token (those results are never read)
 *            rowIndex [B, S, 2] int64    for each token, where its delta is: (n, m) of its entry, or (0, M) for a token
 *                                        without adapter (base-model rows, padding), which reads a zero row
 *   xg    = GatherND(x, tokenIndex)                    [N, M, in]   (made once per distinct x: shared by q/k/v, gate/up)
 *   d     = (xg @ a) @ b                               [N, M, out]  one GEMM pair per adapter, M rows each
 *   delta = GatherND(Concat(d, zeros [N, 1, out]), rowIndex)   [B, S, out]
 *
 * Each token is multiplied by its own adapter's factors alone, so nothing of another tenant's adapter ever reaches it
 * (no mask to multiply, so no Inf x 0), and the work is N x M x R x (in + out) instead of tokens x (sum of ranks) x
 * (in + out) for a column-packed kernel. Batch invariance: every GEMM has the same K and N whatever the batch (R is
 * the slots' max rank, not the batch's), and at least two rows: ONNX Runtime's CPU GEMM gives a row the same bits for
 * any M >= 2 and any position of the row, but takes a vector path with another summation order for M = 1, and its
 * results depend on N and K (measured: docs/adapters.md). A token's delta is therefore bit-identical alone and in any
 * batch, which the int8 activation quantization of the next linear needs (it can turn a 1e-7 difference into a
 * different code).
 */
export function packedMultiLoraDelta(
  g: OnnxGraph,
  gathered: string,
  factors: { a: string; b: string },
  rowIndex: string,
  zeroRow: string,
  hint: string,
): string {
  const d = g.op('MatMul', [g.op('MatMul', [gathered, factors.a], { hint: `${hint}_xa` }), factors.b], { hint: `${hint}_xab` });
  const withZero = g.op('Concat', [d, zeroRow], { attrs: { axis: { i: 1 } }, hint: `${hint}_with_zero` });
  return g.op('GatherND', [withZero, rowIndex], { hint: `${hint}_delta` });
}

/** The tokens of x [B, S, in] grouped by adapter: GatherND(x, tokenIndex) -> [N, M, in] (shared by the modules on x). */
export function gatherLoraTokens(g: OnnxGraph, x: string, tokenIndex: string, hint: string): string {
  return g.op('GatherND', [x, tokenIndex], { hint: `${hint}_lora_tokens` });
}

/** zeros [N, 1, out] for `packedMultiLoraDelta`, N taken from tokenIndex [N, M, 2] (made once per graph and width). */
export function loraZeroRow(g: OnnxGraph, tokenIndex: string, outFeatures: number, hint: string): string {
  const n = g.op('Shape', [tokenIndex], { attrs: { start: { i: 0 }, end: { i: 1 } }, hint: `${hint}_adapters` });
  const shape = g.op('Concat', [n, g.constInt64(`${hint}_zero_dims`, [1, outFeatures])], { attrs: { axis: { i: 0 } }, hint: `${hint}_zero_shape` });
  return g.op('ConstantOfShape', [shape], { hint: `${hint}_zero_row` });
}
