/** Hugging Face module names of the linears LoRA can target, shared by checkpoint checks and PEFT adapters. */
import type { LoraTarget } from '../model-config.ts';

/** e.g. (3, 'q_proj') -> "model.layers.3.self_attn.q_proj", (3, 'up_proj') -> "model.layers.3.mlp.up_proj". */
export function linearModuleName(layer: number, target: LoraTarget): string {
  const block = target === 'gate_proj' || target === 'up_proj' || target === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${target}`;
}

/** PEFT's saved name of a LoRA factor: "base_model.model.<module>.lora_A.weight" ([r, in]) or lora_B ([out, r]). */
export function peftLoraTensorName(layer: number, target: LoraTarget, factor: 'A' | 'B'): string {
  return `base_model.model.${linearModuleName(layer, target)}.lora_${factor}.weight`;
}
