/**
 * log(sum(exp(x))) over a whole row in float64 with Math.exp (exact, for scoring and quality measurements; the sampler
 * has its own over a prefix with a fast exp).
 */
export function exactLogSumExp(x: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  return max + Math.log(sum);
}
