import { MS_DOMAIN, type OnnxGraph } from './onnx-graph.ts';

/**
 * Batched multi-LoRA over packed int8 factors (used by quantized models). Every resident adapter's rank dimensions
 * are packed side by side at their true rank (no padding to a max rank) into U "LoRA columns" shared by all modules;
 * column j belongs to one adapter (slot) and one of its rank dimensions.
 *
 *   inputs:  x [B, S, in] float
 *            a [in, U] int8, aScale [U]       A column j = a[:, j] * aScale[j]   (aScale also carries B's row factor)
 *            b [U, out] int8                  B row j = b[j, :] (each row normalised to max |b| = 127)
 *            mask [B, 1, U]                   mask[r, 0, j] = lora_alpha / r of row r's adapter if column j is its
 *                                             adapter's, else 0 (rows of the base model: all 0)
 *   h = x @ A                                 (DynamicQuantizeMatMul: x quantized to uint8 per tensor)
 *   delta = (h * mask) @ b                    (DynamicQuantizeMatMul, b scale 1)
 *   returns delta [B, S, out]
 *
 * Each token multiplies every resident adapter's columns and the mask keeps its own: the work is tokens x U x
 * (in + out), against tokens x maxRank x (in + out) for a per-row gather, but there is no per-row copy of factors,
 * int8 reads a quarter of the bytes, and there are 3 nodes per module instead of 5. That wins on decode batches
 * (few tokens, many rows sharing few adapters), loses on long prefill groups with U >> rank.
 */
export function packedMultiLoraDelta(
  g: OnnxGraph,
  x: string,
  factors: { a: string; aScale: string; b: string },
  mask: string,
  hint: string,
): string {
  const one = g.constFloat('lora_packed_b_scale', [1], [1]);
  const h = g.op('DynamicQuantizeMatMul', [x, factors.a, factors.aScale], { domain: MS_DOMAIN, hint: `${hint}_xa` });
  const masked = g.op('Mul', [h, mask], { hint: `${hint}_masked` });
  return g.op('DynamicQuantizeMatMul', [masked, factors.b, one], { domain: MS_DOMAIN, hint: `${hint}_delta` });
}
