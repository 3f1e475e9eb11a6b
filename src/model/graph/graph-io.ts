import type { LoraTarget } from '../model-config.ts';

/** Graph input/output names shared by the graph builder and the runner. */
export const GRAPH_IO = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  attentionBias: 'attention_bias',
  logitsIndex: 'logits_index',
  loraSlot: 'lora_slot',
  loraScale: 'lora_scale',
  /** Packed LoRA graph: [adapters, M, 2] int64, (row, position) of each adapter's tokens (kernels/multi-lora-packed.ts). */
  loraTokenIndex: 'lora_token_index',
  /** Packed LoRA graph: [batch, seq, 2] int64, (adapter, entry) of each token's delta, (0, M) for none. */
  loraRowIndex: 'lora_row_index',
  logits: 'logits',
  logitsLogSumExp: 'logits_lse',
  /** Residual stream [B, S, hidden] entering a pipeline stage that does not start at layer 0. */
  hiddenIn: 'hidden_in',
  /** Residual stream [B, S, hidden] leaving a pipeline stage that does not end at the LM head. */
  hiddenOut: 'hidden_out',
  /** [B, kvHeads, P, headDim] per layer: the rows' cached keys / values, gathered by the runner (masked past a row's length). */
  pastKey: (layer: number) => `past_key.${layer}`,
  pastValue: (layer: number) => `past_value.${layer}`,
  /** [B, kvHeads, S, headDim] per layer: the keys / values of the step's positions, for the runner to write back. */
  newKey: (layer: number) => `new_key.${layer}`,
  newValue: (layer: number) => `new_value.${layer}`,
  loraA: (layer: number, target: LoraTarget) => `lora_a.${layer}.${target}`,
  loraB: (layer: number, target: LoraTarget) => `lora_b.${layer}.${target}`,
} as const;

/** Value added to the attention scores of positions a query must not see. Finite, so fully masked rows stay NaN-free. */
export const MASKED_SCORE = -1e9;
