import type { OnnxGraph } from './onnx-graph.ts';

/**
 * log(sum(exp(x))) over the last axis of x [rows, V], returned as [rows]:
 *   logSoftmax[r, j] = x[r, j] - lse[r]     =>     lse[r] = x[r, 0] - logSoftmax[r, 0]
 * Taken from LogSoftmax rather than ReduceLogSumExp: ONNX Runtime's CPU ReduceLogSumExp is scalar (3.4 ms for
 * 16 x 49152 logits on the 2-core bench machine), LogSoftmax is vectorised and threaded (0.29 ms). The rounding error
 * is one ulp of |x[r, 0] - lse[r]| (~4e-6 for logits of magnitude 20). The plain ReduceMax/Exp/ReduceSum form was
 * measured as fast but ORT's ReduceMax returns a wrong shape for zero rows (a prefill chunk that samples nothing).
 */
export function logSumExpRows(g: OnnxGraph, x: string, hint: string): string {
  const logSoftmax = g.op('LogSoftmax', [x], { attrs: { axis: { i: -1 } }, hint: `${hint}_log_softmax` });
  const column0 = g.constInt64(`${hint}_column0`, [0], []);
  const x0 = g.op('Gather', [x, column0], { attrs: { axis: { i: 1 } }, hint: `${hint}_x0` });
  const logProb0 = g.op('Gather', [logSoftmax, column0], { attrs: { axis: { i: 1 } }, hint: `${hint}_logprob0` });
  return g.op('Sub', [x0, logProb0], { hint });
}
