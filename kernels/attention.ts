import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Grouped-query attention over a paged KV cache that the runner gathers per step, written with standard ONNX ops.
 *
 *   inputs:  q [B, S, H*D] (rotary applied, already scaled by 1/sqrt(D)), k, v [B, S, Hkv*D] (k rotary applied)
 *            pastK, pastV [B, Hkv, P, D]: the cached keys/values of each row (rows shorter than P are padded)
 *            bias [B, 1, 1, S, P+S]: 0 where query s of row b may attend key t, a large negative number elsewhere
 *   G = H / Hkv; query head h uses kv head h / G
 *   K = concat(pastK, k), V = concat(pastV, v)          along the position axis (never materialised: see below)
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

  // Scores against the cached and the new keys separately, so the (large) cached keys and values are never copied into
  // a concatenation; ORT folds each key transpose into its MatMul (FusedMatMul, transB). Only the small score and
  // probability matrices are concatenated and sliced.
  const keysT = (keys: string, h: string) => transpose(keys, [0, 1, 3, 2], h);
  const scoresPast = g.op('MatMul', [qGrouped, keysT(io.pastK, 'past_k_t')], { hint: `${hint}_scores_past` });
  const scoresNew = g.op('MatMul', [qGrouped, keysT(newK, 'new_k_t')], { hint: `${hint}_scores_new` });
  const scores = g.op('Concat', [scoresPast, scoresNew], { attrs: { axis: { i: -1 } }, hint: `${hint}_scores` });
  const masked = g.op('Add', [reshape(scores, shapes.scores5, 'scores5'), io.bias5], { hint: `${hint}_masked` });
  const probs = reshape(g.op('Softmax', [masked], { attrs: { axis: { i: -1 } }, hint: `${hint}_probs` }), shapes.scores4, 'probs4');
  const pastLen = g.op('Shape', [io.pastK], { attrs: { start: { i: 2 }, end: { i: 3 } }, hint: `${hint}_past_len` });
  const lastAxis = g.constInt64('axis_last', [3]);
  const probsPast = g.op('Slice', [probs, g.constInt64('zero', [0]), pastLen, lastAxis], { hint: `${hint}_probs_past` });
  const probsNew = g.op('Slice', [probs, pastLen, g.constInt64('int64_max', [Number.MAX_SAFE_INTEGER]), lastAxis], { hint: `${hint}_probs_new` });
  const context = g.op('Add', [g.op('MatMul', [probsPast, io.pastV], { hint: `${hint}_ctx_past` }), g.op('MatMul', [probsNew, newV], { hint: `${hint}_ctx_new` })], { hint: `${hint}_context` });
  const context5 = reshape(context, g.constInt64('shape_ctx5', [0, 0, groups, -1, headDim]), 'ctx5');
  const out = reshape(transpose(context5, [0, 3, 1, 2, 4], 'ctx_t'), g.constInt64('shape_out', [0, 0, -1]), 'out');
  return { out, newK, newV };
}
