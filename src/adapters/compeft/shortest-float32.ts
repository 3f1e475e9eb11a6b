import type { LoraTarget } from '../../model/model-config.ts';
import type { LoraKind } from './compeft-types.ts';

/** PEFT's key for a LoRA factor of a Llama-family model; `.cpeft` headers omit names equal to this. */
export function peftTensorName(layer: number, target: LoraTarget, kind: LoraKind): string {
  const block = target === 'gate_proj' || target === 'up_proj' || target === 'down_proj' ? 'mlp' : 'self_attn';
  return `base_model.model.model.layers.${layer}.${block}.${target}.lora_${kind}.weight`;
}

/** Shortest decimal that reads back (through Math.fround) as the same float32 value. */
export function shortestFloat32(value: number): number {
  const f = Math.fround(value);
  if (!Number.isFinite(f) || f === 0) return f;
  for (let p = 1; p <= 9; p++) {
    const d = Number(f.toPrecision(p));
    if (Math.fround(d) === f) return d;
  }
  return f;
}
