/**
 * Quality of a quantized model against a reference, position by position over rows of logits [positions, vocab]:
 *   top1Agreement  fraction of positions whose argmax matches
 *   meanKl         mean over positions of KL(softmax(ref) || softmax(test)) = sum_v p_v (log p_v - log q_v), nats
 *   maxAbsDiff     max |ref - test| over all logits
 */
import { TesseraError, outOfRange } from '../../errors.ts';
import { exactLogSumExp } from '../../util/log-sum-exp.ts';

export interface LogitComparison {
  positions: number;
  top1Agreement: number;
  meanKl: number;
  maxAbsDiff: number;
}

export function compareLogits(ref: Float32Array, test: Float32Array, vocab: number): LogitComparison {
  if (!Number.isInteger(vocab) || vocab < 1) throw outOfRange('vocab', 'an integer >= 1', vocab);
  if (ref.length !== test.length) {
    throw new TesseraError('INVALID_ARGUMENT', `\`test.length\` must equal ref.length (${ref.length}). Given: ${test.length}`);
  }
  if (ref.length === 0 || ref.length % vocab !== 0) {
    throw outOfRange('ref.length', `a positive multiple of vocab (${vocab})`, ref.length);
  }
  const positions = ref.length / vocab;
  let agree = 0;
  let klSum = 0;
  let maxAbsDiff = 0;
  for (let p = 0; p < positions; p++) {
    const r = ref.subarray(p * vocab, (p + 1) * vocab);
    const t = test.subarray(p * vocab, (p + 1) * vocab);
    if (argmax(r) === argmax(t)) agree++;
    const logZr = exactLogSumExp(r);
    const logZt = exactLogSumExp(t);
    let kl = 0;
    for (let v = 0; v < vocab; v++) {
      const logP = r[v] - logZr;
      const logQ = t[v] - logZt;
      kl += Math.exp(logP) * (logP - logQ);
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(r[v] - t[v]));
    }
    klSum += Math.max(0, kl); // KL >= 0; rounding can give -1e-17
  }
  return { positions, top1Agreement: agree / positions, meanKl: klSum / positions, maxAbsDiff };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
