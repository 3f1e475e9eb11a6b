import type { OnnxGraph } from './onnx-graph.ts';
import { MS_DOMAIN } from './onnx-graph.ts';

/**
 * Rotary position embedding, "rotate half" (non-interleaved) layout as in Llama-family checkpoints.
 *
 *   for each head h, position p = positionIds[b, s], i < d/2:
 *     angle = p * theta^(-2i/d)
 *     x1 = x[h, i], x2 = x[h, i + d/2]
 *     y[h, i]       = x1 * cos(angle) - x2 * sin(angle)
 *     y[h, i + d/2] = x2 * cos(angle) + x1 * sin(angle)
 *
 * Implemented by com.microsoft.RotaryEmbedding on a [batch, seq, numHeads * headDim] input, with cos/sin tables
 * [maxPositions, headDim / 2] as initializers.
 */
export function rotary(
  g: OnnxGraph,
  x: string,
  positionIds: string,
  tables: { cos: string; sin: string },
  numHeads: number,
  headDim: number,
  hint = 'rotary',
): string {
  return g.op('RotaryEmbedding', [x, positionIds, tables.cos, tables.sin], {
    domain: MS_DOMAIN,
    attrs: { interleaved: { i: 0 }, num_heads: { i: numHeads }, rotary_embedding_dim: { i: headDim } },
    hint,
  });
}

/** cos/sin tables [maxPositions, headDim/2], computed in float64 and rounded once. */
export function rotaryTables(theta: number, maxPositions: number, headDim: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let i = 0; i < half; i++) {
    const invFreq = Math.pow(theta, (-2 * i) / headDim);
    for (let p = 0; p < maxPositions; p++) {
      const angle = p * invFreq;
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

export function addRotaryTables(g: OnnxGraph, theta: number, maxPositions: number, headDim: number): { cos: string; sin: string } {
  const t = rotaryTables(theta, maxPositions, headDim);
  return {
    cos: g.initializer('rotary.cos', 'float32', [maxPositions, headDim / 2], t.cos),
    sin: g.initializer('rotary.sin', 'float32', [maxPositions, headDim / 2], t.sin),
  };
}
