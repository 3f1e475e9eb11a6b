import type { OnnxGraph } from './onnx-graph.ts';
import { MS_DOMAIN } from './onnx-graph.ts';

/**
 * RMSNorm over the last axis.
 *
 *   y[..., j] = x[..., j] / sqrt(mean_j(x[..., j]^2) + eps) * weight[j]
 *
 * ORT's SimplifiedLayerNormalization (registered in the ONNX domain by onnxruntime) computes exactly this.
 */
export function rmsNorm(g: OnnxGraph, x: string, weight: string, eps: number, hint = 'rms_norm'): string {
  return g.op('SimplifiedLayerNormalization', [x, weight], {
    attrs: { axis: { i: -1 }, epsilon: { f: eps }, stash_type: { i: 1 } },
    hint,
  });
}

/**
 * Residual add fused with RMSNorm (com.microsoft.SkipSimplifiedLayerNormalization).
 *
 *   sum = x + skip
 *   y   = rmsNorm(sum) * weight
 *   returns [y, sum]
 */
export function skipRmsNorm(g: OnnxGraph, x: string, skip: string, weight: string, eps: number, hint = 'skip_rms_norm'): [string, string] {
  const [y, , , sum] = g.node('SkipSimplifiedLayerNormalization', [x, skip, weight], {
    domain: MS_DOMAIN,
    attrs: { epsilon: { f: eps } },
    outputs: [g.fresh(hint), '', '', g.fresh(`${hint}_sum`)],
  });
  return [y, sum];
}
