/**
 * adapter_config.json of a PEFT LoRA adapter, checked and normalised. Malformed JSON or values ->
 * CHECKPOINT_INVALID; well-formed settings Tessera cannot serve (DoRA, per-layer ranks, extra trained modules,
 * other PEFT methods, targets other than the seven linears) -> ADAPTER_INCOMPATIBLE.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import { LORA_TARGETS, type LoraTarget } from '../../model/model-config.ts';

export interface PeftAdapterConfig {
  rank: number;
  loraAlpha: number;
  useRslora: boolean;
  /** Targeted linears, in LORA_TARGETS order. */
  targets: LoraTarget[];
  baseModel: string | null;
  /** Layers carrying LoRA weights (layers_to_transform), or null for every layer. */
  layers: number[] | null;
}

type Json = Record<string, unknown>;

function malformed(file: string, key: string, problem: string, given: unknown): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', `${file}: \`${key}\` ${problem}. Given: ${JSON.stringify(given) ?? 'undefined'}`);
}

function unsupported(file: string, key: string, problem: string, given: unknown): TesseraError {
  return new TesseraError('ADAPTER_INCOMPATIBLE', `${file}: \`${key}\` ${problem}. Given: ${JSON.stringify(given) ?? 'undefined'}`);
}

function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && Object.keys(v as object).length === 0);
}

/** Maps a target_modules entry ("q_proj", "model.layers.0.self_attn.q_proj", ...) to a LoraTarget, or null. */
function targetOf(entry: string): LoraTarget | null {
  const last = entry.split('.').pop() ?? '';
  return (LORA_TARGETS as readonly string[]).includes(last) ? (last as LoraTarget) : null;
}

function parseTargets(file: string, raw: unknown): LoraTarget[] {
  if (raw === 'all-linear') return [...LORA_TARGETS];
  if (typeof raw === 'string') {
    const t = targetOf(raw);
    if (t === null) throw unsupported(file, 'target_modules', `must be "all-linear" or name the supported linears (${LORA_TARGETS.join(', ')}); regular expressions are not supported`, raw);
    return [t];
  }
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((e) => typeof e === 'string')) {
    throw malformed(file, 'target_modules', 'must be a non-empty list of module names or "all-linear"', raw);
  }
  const found = new Set<LoraTarget>();
  for (const entry of raw as string[]) {
    const t = targetOf(entry);
    if (t === null) throw unsupported(file, 'target_modules', `may only name ${LORA_TARGETS.join(', ')}; "${entry}" is not supported`, raw);
    found.add(t);
  }
  return LORA_TARGETS.filter((t) => found.has(t));
}

function parseLayers(file: string, raw: unknown): number[] | null {
  if (raw === undefined || raw === null) return null;
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || !list.every((l) => Number.isSafeInteger(l) && l >= 0)) {
    throw malformed(file, 'layers_to_transform', 'must be a layer index or a non-empty list of them', raw);
  }
  return [...new Set(list as number[])].sort((a, b) => a - b);
}

/** Parses an adapter_config.json object; `file` is used in messages. */
export function parsePeftAdapterConfig(json: unknown, file: string): PeftAdapterConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TesseraError('CHECKPOINT_INVALID', `${file}: must hold a JSON object`);
  }
  const c = json as Json;
  if (c.peft_type !== 'LORA') throw unsupported(file, 'peft_type', 'must be "LORA"', c.peft_type);
  if (!Number.isSafeInteger(c.r) || (c.r as number) <= 0) throw malformed(file, 'r', 'must be a positive integer', c.r);
  const rank = c.r as number;
  const loraAlpha = c.lora_alpha ?? 8; // PEFT's default
  if (typeof loraAlpha !== 'number' || !Number.isFinite(loraAlpha) || loraAlpha <= 0) {
    throw malformed(file, 'lora_alpha', 'must be a positive number', c.lora_alpha);
  }
  const useRslora = c.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') throw malformed(file, 'use_rslora', 'must be true or false', c.use_rslora);
  if (c.use_dora === true) throw unsupported(file, 'use_dora', 'is not supported (DoRA adapters)', c.use_dora);
  if (c.bias !== undefined && c.bias !== null && c.bias !== 'none') throw unsupported(file, 'bias', 'must be "none" (trained biases are not supported)', c.bias);
  if (c.fan_in_fan_out === true) throw unsupported(file, 'fan_in_fan_out', 'must be false (Conv1D-style weights are not supported)', c.fan_in_fan_out);
  if (!isEmpty(c.modules_to_save)) throw unsupported(file, 'modules_to_save', 'must be empty (fully trained extra modules are not supported)', c.modules_to_save);
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    if (!isEmpty(c[key])) throw unsupported(file, key, 'must be empty (per-module ranks and alphas are not supported)', c[key]);
  }
  const baseModel = c.base_model_name_or_path ?? null;
  if (baseModel !== null && typeof baseModel !== 'string') {
    throw malformed(file, 'base_model_name_or_path', 'must be a string or null', baseModel);
  }
  return {
    rank,
    loraAlpha,
    useRslora,
    targets: parseTargets(file, c.target_modules),
    baseModel,
    layers: parseLayers(file, c.layers_to_transform),
  };
}

/** Reads and checks `dir/adapter_config.json`. */
export function readPeftAdapterConfig(dir: string): PeftAdapterConfig {
  const file = path.join(dir, 'adapter_config.json');
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'ADAPTER_NOT_FOUND' : 'CHECKPOINT_INVALID';
    throw new TesseraError(code, `${file}: cannot read JSON (${(err as Error).message})`, { cause: err });
  }
  return parsePeftAdapterConfig(json, file);
}
