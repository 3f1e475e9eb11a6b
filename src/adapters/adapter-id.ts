/**
 * The one rule for adapter ids, shared by the server (request fields) and the adapter registry (LoadAdapter, names
 * taken from an adapters directory):
 *   - `name` or Hugging Face-style `org/name` (one `/` at most), 1 to 128 characters (the server may set a lower bound);
 *   - each part starts with a letter or digit and continues with letters, digits, `.`, `_` and `-`.
 * So `support-v2`, `acme/support-v2` and `Qwen2.5-lora_r8` are ids; `/x`, `a/`, `a//b`, `a/b/c`, `.hidden`, `../x`,
 * `a b` and `é` are not. Errors name the field, the bound and the value given.
 */
import { outOfRange } from '../errors.ts';

/** An id that passed parseAdapterId. */
export type AdapterId = string & { readonly __brand: 'AdapterId' };

export const MAX_ADAPTER_ID_LENGTH = 128;

const ADAPTER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(?:\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;
const ADAPTER_ID_RULE = '`name` or `org/name`, each part a letter or digit followed by letters, digits, ".", "_" or "-"';

export interface AdapterIdRule {
  /** Field named in errors, as the caller spells it (`adapter_id`, `adapterId`). */
  field: string;
  /** Longest accepted id in characters; at most MAX_ADAPTER_ID_LENGTH (the default). */
  maxLength?: number;
}

/** Checks `given` against the rule; throws INVALID_ARGUMENT naming `rule.field`, the bound and the value. */
export function parseAdapterId(given: string, rule: AdapterIdRule): AdapterId {
  const maxLength = Math.min(rule.maxLength ?? MAX_ADAPTER_ID_LENGTH, MAX_ADAPTER_ID_LENGTH);
  if (given === '') throw outOfRange(rule.field, 'a non-empty adapter id', given);
  if (given.length > maxLength) throw outOfRange(rule.field, `at most ${maxLength} characters`, `${given.slice(0, 16)}... (${given.length} characters)`);
  if (!ADAPTER_ID_PATTERN.test(given)) throw outOfRange(rule.field, ADAPTER_ID_RULE, given);
  return given as AdapterId;
}
