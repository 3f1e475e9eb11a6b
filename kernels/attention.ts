import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Grouped-query attention over a paged KV cache that the runner gathers per step, written with standard ONNX ops.
 *
 *   inputs:  q [B, S, H*D] (rotary applied, already scaled by 1/sqrt(D)), k, v [B, S, Hkv*D] (k rotary applied)
 *            pastK, pastV [B, Hkv, P, D]: the cached keys/values of each row (rows shorter than P are padded)
 *            bias [B, 1, 1, S, P+S]: 0 where query s of row b may attend key t, a large negative number elsewhere
 *   G = H / Hkv; query head h uses kv head h / G
 *   K = concat(pastK, k), V = concat(pastV, v)          along the position axis
 *   for each b, kv head j, group g, query s:
 *     p = softmax_t(q[b, s, j*G+g] . K[b, j, t] + bias[b, 0, 0, s, t])
 *     out[b, s, j*G+g] = sum_t p[t] * V[b, j, t]
 *   returns out [B, S, H*D] and the new k, v as [B, Hkv, S, D] for the runner to write into the cache.
 *
 * Grouping the G query heads of a kv head into one matrix [G*S, D] lets one MatMul per kv head serve all of them,
 * so the kv heads are never repeated in memory.
 */
export interface AttentionShapes {
  /** int64 [5] = [B, Hkv, G, S, P+S] */
  scores5: string;
  /** int64 [4] = [B, Hkv, G*S, P+S] */
  scores4: string;
}

export function groupedQueryAttention(
  g: OnnxGraph,
  io: { q: string; k: string; v: string; pastK: string; pastV: string; bias5: string },
  dims: { numHeads: number; numKvHeads: number; headDim: number },
  shapes: AttentionShapes,
  hint: string,
): { out: string; newK: string; newV: string } {
  const { numHeads, numKvHeads, headDim } = dims;
  const groups = numHeads / numKvHeads;
  const reshape = (x: string, shape: string, h: string) => g.op('Reshape', [x, shape], { hint: `${hint}_${h}` });
  const transpose = (x: string, perm: number[], h: string) => g.op('Transpose', [x], { attrs: { perm: { ints: perm } }, hint: `${hint}_${h}` });

  const q5 = reshape(io.q, g.constInt64('shape_q5', [0, 0, numKvHeads, groups, headDim]), 'q5');
  const qGrouped = reshape(transpose(q5, [0, 2, 3, 1, 4], 'q_t'), g.constInt64('shape_q4', [0, 0, -1, headDim]), 'q4');

  const kvShape = g.constInt64('shape_kv4', [0, 0, numKvHeads, headDim]);
  const newK = transpose(reshape(io.k, kvShape, 'k4'), [0, 2, 1, 3], 'new_k');
  const newV = transpose(reshape(io.v, kvShape, 'v4'), [0, 2, 1, 3], 'new_v');
  const keys = g.op('Concat', [io.pastK, newK], { attrs: { axis: { i: 2 } }, hint: `${hint}_keys` });
  const values = g.op('Concat', [io.pastV, newV], { attrs: { axis: { i: 2 } }, hint: `${hint}_values` });

  const scores = g.op('MatMul', [qGrouped, transpose(keys, [0, 1, 3, 2], 'keys_t')], { hint: `${hint}_scores` });
  const masked = g.op('Add', [reshape(scores, shapes.scores5, 'scores5'), io.bias5], { hint: `${hint}_masked` });
  const probs = g.op('Softmax', [masked], { attrs: { axis: { i: -1 } }, hint: `${hint}_probs` });
  const context = g.op('MatMul', [reshape(probs, shapes.scores4, 'probs4'), values], { hint: `${hint}_context` });
  const context5 = reshape(context, g.constInt64('shape_ctx5', [0, 0, groups, -1, headDim]), 'ctx5');
  const out = reshape(transpose(context5, [0, 3, 1, 2, 4], 'ctx_t'), g.constInt64('shape_out', [0, 0, -1]), 'out');
  return { out, newK, newV };
}
