import type { QuantKind } from '../converted-model.ts';
import { singleRowPathDiffers } from '../quantization/kernel-check.ts';
import type { Device } from './model-runner.ts';

const probes = new Map<number, Promise<boolean>>();

/**
 * Whether one-row steps must be padded to two rows (step-inputs.ts, padSingleRow) for a request to compute the same
 * alone as in a batch: only where this CPU's MatMulNBits kernel for the model's bits takes a different path for one
 * row (measured once per process, kernel-check.ts). `override` forces it either way.
 */
export function needsSingleRowPadding(quant: QuantKind, device: Device, override?: boolean): Promise<boolean> {
  if (override !== undefined) return Promise.resolve(override);
  if (device !== 'cpu' || quant === 'fp32') return Promise.resolve(false);
  const bits = quant === 'int4' ? 4 : 8;
  let probe = probes.get(bits);
  if (!probe) {
    probe = singleRowPathDiffers(bits);
    probes.set(bits, probe);
  }
  return probe;
}
