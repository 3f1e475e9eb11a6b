/**
 * Plain-TypeScript building blocks of a Llama-family decoder, written from the math. Activations are float64,
 * weights float32; every dot product accumulates in float64 so these serve as a trustworthy reference.
 *
 *   rmsNorm(x, w)     y_i = x_i / sqrt(mean_j(x_j^2) + eps) * w_i
 *   rotary(x, pos)    non-interleaved ("rotate half"): d = headDim, half = d/2,
 *                     inv_freq_i = theta^(-2i/d), a_i = pos * inv_freq_i (i < half)
 *                     x'_i        = x_i cos a_i - x_{i+half} sin a_i
 *                     x'_{i+half} = x_{i+half} cos a_i + x_i sin a_i
 *   matVec(W, x)      y_o = sum_i W[o, i] x_i   (W in HF layout [out, in], so y = x W^T)
 *   silu(x)           x / (1 + exp(-x))
 */

/** RMSNorm of `x` (length n) scaled by `weight`, written to `out` (may alias `x`). */
export function rmsNorm(
  x: Float64Array, // [n]
  weight: Float32Array, // [n]
  eps: number,
  out: Float64Array = new Float64Array(x.length), // [n]
): Float64Array {
  let sumSq = 0;
  for (let i = 0; i < x.length; i++) sumSq += x[i] * x[i];
  const inv = 1 / Math.sqrt(sumSq / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inv * weight[i];
  return out;
}

/** RMSNorm applied separately to each of `numHeads` consecutive slices of width `headDim`, in place. */
export function rmsNormPerHead(
  x: Float64Array, // [numHeads * headDim]
  weight: Float32Array, // [headDim]
  numHeads: number,
  headDim: number,
  eps: number,
): void {
  for (let h = 0; h < numHeads; h++) {
    const head = x.subarray(h * headDim, (h + 1) * headDim);
    rmsNorm(head, weight, eps, head);
  }
}

/** inv_freq_i = theta^(-2i/headDim) for i < headDim/2. */
export function rotaryInverseFrequencies(headDim: number, theta: number): Float64Array {
  const half = headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = Math.pow(theta, (-2 * i) / headDim);
  return invFreq;
}

/** Rotates each head of `x` (numHeads slices of invFreq.length * 2) to position `pos`, in place. */
export function applyRotary(
  x: Float64Array, // [numHeads * headDim]
  numHeads: number,
  pos: number,
  invFreq: Float64Array, // [headDim / 2]
): void {
  const half = invFreq.length;
  const headDim = 2 * half;
  for (let i = 0; i < half; i++) {
    const angle = pos * invFreq[i];
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    for (let h = 0; h < numHeads; h++) {
      const base = h * headDim;
      const x1 = x[base + i];
      const x2 = x[base + i + half];
      x[base + i] = x1 * cos - x2 * sin;
      x[base + i + half] = x2 * cos + x1 * sin;
    }
  }
}

/** y = W x for W [rows, cols] row-major; accumulates in float64. */
export function matVec(
  weight: Float32Array, // [rows, cols]
  rows: number,
  cols: number,
  x: Float64Array | Float32Array, // [cols]
  out: Float64Array = new Float64Array(rows), // [rows]
): Float64Array {
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += weight[base + c] * x[c];
    out[r] = acc;
  }
  return out;
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** Numerically stable softmax over `x`, in place. */
export function softmaxInPlace(x: Float64Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < x.length; i++) x[i] /= sum;
  return x;
}
