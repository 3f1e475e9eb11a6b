import type { OnnxGraph } from './onnx-graph.ts';

/**
 * Sampling inside the graph, for the k-steps-per-run decode loop (src/model/graph/decode-loop-graph.ts).
 *
 * Counter-based random stream: the uniform number for vocabulary entry v of the token that a row with seed s places at
 * position t is a pure function u(s, t, v), so a row's draws depend on nothing else (not its batch mates, not how the
 * decode steps were grouped into runs). Integer ONNX ops only (int64 Mul/Add/Mod/Div; opset 17 has no bitwise XOR), all
 * intermediate values in [0, 2^31), so products stay below 2^62 and every result is exact on every provider:
 *
 *   P = 2^31 - 1 (prime)
 *   rot(x)       = (x mod 2^16) * 2^15 + floor(x / 2^16)        31-bit rotation (keeps [0, P))
 *   round(x, m, c) = (y * (rot(y) + 1)) mod P  with y = (x * m + c) mod P
 *                  (the product of y and its rotation is what mixes: an affine map and a rotation alone left
 *                   neighbouring v visibly correlated, lag-1 correlation -0.46)
 *   row(s, t)    = round((round(s mod P, M0, C0) + t) mod P, M1, C1)               per row and step: [B] values
 *   h(s, t, v)   = round(round(round((row(s, t) + v) mod P, M2, C2), M3, C3), M4, C4)   per row and vocab entry: [B, V]
 *   u            = (2 * floor(h / 2^8) + 1) / 2^24                                  in (0, 1), exact in float32
 *
 * Gumbel-max: token = argmax_v(logit_v / T + g_v) with g_v = -log(-log(u_v)) draws v with probability softmax(logit / T)_v.
 * top-k (k > 0): logits below the row's k-th largest are set to -inf first (ties at the k-th value are all kept).
 * Greedy rows (T = 0): token = argmax_v(logit_v), ties to the lowest id (ArgMax select_last_index = 0), as the host sampler.
 * Not a cryptographic generator; tested for uniformity and independence of neighbouring entries (loop-sampling.test.ts).
 */
export const HASH_PRIME = 2147483647;
const MULTIPLIERS = [48271, 69621, 1103515245 % HASH_PRIME, 950706376, 742938285] as const;
const ADDENDS = [12345, 2891336453 % HASH_PRIME, 1013904223, 362436069, 521288629] as const;

function rotRef(x: bigint): bigint {
  return (x % 65536n) * 32768n + x / 65536n;
}

function roundRef(x: bigint, i: number): bigint {
  const p = BigInt(HASH_PRIME);
  const y = (x * BigInt(MULTIPLIERS[i]) + BigInt(ADDENDS[i])) % p;
  return (y * (rotRef(y) + 1n)) % p;
}

/** Host reference of the per-row part: row(s, t). `seed` is any non-negative safe integer. */
export function rowHashRef(seed: number, position: number): bigint {
  const p = BigInt(HASH_PRIME);
  return roundRef((roundRef(BigInt(seed) % p, 0) + BigInt(position)) % p, 1);
}

/** Host reference of u(s, t, v) (the graph computes exactly this, up to float32 rounding of the last division). */
export function uniformRef(seed: number, position: number, vocabIndex: number): number {
  const p = BigInt(HASH_PRIME);
  const h = roundRef(roundRef(roundRef((rowHashRef(seed, position) + BigInt(vocabIndex)) % p, 2), 3), 4);
  return (2 * Number(h / 256n) + 1) / 2 ** 24;
}

function rot(g: OnnxGraph, x: string, hint: string): string {
  const low = g.op('Mod', [x, g.constInt64(`${hint}_2p16`, [65536], [])], { hint: `${hint}_low` });
  const high = g.op('Div', [x, g.constInt64(`${hint}_2p16d`, [65536], [])], { hint: `${hint}_high` });
  const shifted = g.op('Mul', [low, g.constInt64(`${hint}_2p15`, [32768], [])], { hint: `${hint}_shifted` });
  return g.op('Add', [shifted, high], { hint });
}

function round(g: OnnxGraph, x: string, i: number, hint: string): string {
  const mul = g.op('Mul', [x, g.constInt64(`${hint}_m`, [MULTIPLIERS[i]], [])], { hint: `${hint}_mul` });
  const add = g.op('Add', [mul, g.constInt64(`${hint}_c`, [ADDENDS[i]], [])], { hint: `${hint}_add` });
  const y = g.op('Mod', [add, g.constInt64(`${hint}_p`, [HASH_PRIME], [])], { hint: `${hint}_y` });
  const rotated = g.op('Add', [rot(g, y, `${hint}_rot`), g.constInt64(`${hint}_one`, [1], [])], { hint: `${hint}_rot1` });
  return g.op('Mod', [g.op('Mul', [y, rotated], { hint: `${hint}_prod` }), g.constInt64(`${hint}_p2`, [HASH_PRIME], [])], { hint });
}

function modP(g: OnnxGraph, x: string, hint: string): string {
  return g.op('Mod', [x, g.constInt64(`${hint}_p`, [HASH_PRIME], [])], { hint });
}

/**
 * Gumbel noise g [B, V] float32 for the tokens placed at `position` [B, 1] int64 by rows with `seed` [B, 1] int64
 * (non-negative); `vocabIndex` is [1, V] int64 (0..V-1).
 */
export function gumbelNoise(g: OnnxGraph, seed: string, position: string, vocabIndex: string, hint: string): string {
  const s = round(g, modP(g, seed, `${hint}_seed`), 0, `${hint}_r0`);
  const row = round(g, modP(g, g.op('Add', [s, position], { hint: `${hint}_sp` }), `${hint}_spm`), 1, `${hint}_r1`); // [B, 1]
  let h = modP(g, g.op('Add', [row, vocabIndex], { hint: `${hint}_rv` }), `${hint}_rvm`); // [B, V]
  for (const i of [2, 3, 4]) h = round(g, h, i, `${hint}_r${i}`);
  const top24 = g.op('Div', [h, g.constInt64(`${hint}_2p8`, [256], [])], { hint: `${hint}_top24` });
  const odd = g.op('Add', [g.op('Mul', [top24, g.constInt64(`${hint}_two`, [2], [])], { hint: `${hint}_twice` }), g.constInt64(`${hint}_one`, [1], [])], { hint: `${hint}_odd` });
  const u = g.op('Mul', [g.op('Cast', [odd], { attrs: { to: { i: 1 } }, hint: `${hint}_oddf` }), g.constFloat(`${hint}_2m24`, [2 ** -24], [])], { hint: `${hint}_u` });
  const negLogU = g.op('Neg', [g.op('Log', [u], { hint: `${hint}_logu` })], { hint: `${hint}_neglogu` });
  return g.op('Neg', [g.op('Log', [negLogU], { hint: `${hint}_loglog` })], { hint });
}

/** Per-row sampling parameters of the loop graph. */
export interface LoopSamplingInputs {
  /** [B, 1] float32: 0 = greedy. */
  temperature: string;
  /** [B, 1] int64: 0 = off. */
  topK: string;
  /** [B, 1] int64, non-negative. */
  seed: string;
}

/**
 * Picks one token per row from `logits` [B, V]: greedy rows ArgMax, sampled rows Gumbel-max over logits / T (after
 * top-k) with `noise` (gumbelNoise [B, V] for the position the new token takes; a [1, 1] zero when no row samples).
 * Returns the token ids [B] int64.
 */
export function sampleTokens(g: OnnxGraph, logits: string, p: LoopSamplingInputs, noise: string, hint: string): string {
  const zeroF = g.constFloat(`${hint}_zero_f`, [0], []);
  const zeroI = g.constInt64(`${hint}_zero_i`, [0], []);
  const oneI = g.constInt64(`${hint}_one_i`, [1], []);
  const negInf = g.constFloat(`${hint}_neg_inf`, [-Infinity], []);
  const sampled = g.op('Greater', [p.temperature, zeroF], { hint: `${hint}_is_sampled` }); // [B, 1]
  // top-k threshold: the k-th largest logit of the row (k = max(topK, 1)); -inf where top-k is off.
  const kRow = g.op('Max', [p.topK, oneI], { hint: `${hint}_k_row` }); // [B, 1]
  const kMax = g.op('ReduceMax', [kRow], { attrs: { keepdims: { i: 0 } }, hint: `${hint}_k_max` }); // []
  const kMax1 = g.op('Reshape', [kMax, g.constInt64(`${hint}_shape1`, [1])], { hint: `${hint}_k_max1` }); // [1]
  const [topValues] = g.node('TopK', [logits, kMax1], { outputs: 2, attrs: { axis: { i: -1 }, largest: { i: 1 }, sorted: { i: 1 } }, hint: `${hint}_topk` });
  const kth = g.op('GatherElements', [topValues, g.op('Sub', [kRow, oneI], { hint: `${hint}_k_index` })], { attrs: { axis: { i: 1 } }, hint: `${hint}_kth` }); // [B, 1]
  const topKOn = g.op('Greater', [p.topK, zeroI], { hint: `${hint}_topk_on` });
  const threshold = g.op('Where', [topKOn, kth, negInf], { hint: `${hint}_threshold` });
  const kept = g.op('Where', [g.op('Less', [logits, threshold], { hint: `${hint}_below` }), negInf, logits], { hint: `${hint}_kept` });
  // Temperature 0 rows divide by 1 (their score is replaced by the raw logits below anyway).
  const safeT = g.op('Where', [sampled, p.temperature, g.constFloat(`${hint}_one_f`, [1], [])], { hint: `${hint}_safe_t` });
  const perturbed = g.op('Add', [g.op('Div', [kept, safeT], { hint: `${hint}_scaled` }), noise], { hint: `${hint}_perturbed` });
  const score = g.op('Where', [sampled, perturbed, logits], { hint: `${hint}_score` });
  return g.op('ArgMax', [score], { attrs: { axis: { i: 1 }, keepdims: { i: 0 }, select_last_index: { i: 0 } }, hint });
}
