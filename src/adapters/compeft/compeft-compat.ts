import { TesseraError } from '../../errors.ts';
import { loraTargetShape, type ModelConfig } from '../../model/model-config.ts';
import type { CompeftFile } from './compeft-format.ts';

/**
 * Checks a parsed `.cpeft` against the serving model and slot size before any decode:
 * layer count, every tensor's shape for its target, and rank <= maxRank. Throws ADAPTER_INCOMPATIBLE.
 */
export function checkCompeftCompatible(file: CompeftFile, config: ModelConfig, opts: { maxRank?: number } = {}): void {
  const h = file.header;
  const maxRank = opts.maxRank ?? Infinity;
  if (h.rank > maxRank) {
    throw new TesseraError('ADAPTER_INCOMPATIBLE', `adapter rank must be <= the engine's max rank ${maxRank}. Given: ${h.rank}`);
  }
  if (h.numLayers !== config.numLayers) {
    throw new TesseraError('ADAPTER_INCOMPATIBLE', `adapter has ${h.numLayers} layers; the model has ${config.numLayers}`);
  }
  for (const t of h.tensors) {
    const [inF, outF] = loraTargetShape(config, t.target);
    const expected = t.kind === 'A' ? [h.rank, inF] : [outF, h.rank];
    if (t.rows !== expected[0] || t.cols !== expected[1]) {
      throw new TesseraError(
        'ADAPTER_INCOMPATIBLE',
        `tensor ${t.name} has shape [${t.rows}, ${t.cols}]; the model needs [${expected[0]}, ${expected[1]}] for ${t.target} ${t.kind}`,
      );
    }
  }
}
