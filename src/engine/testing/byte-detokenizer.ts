import { concatArrays } from '../../util/concat-arrays.ts';
import type { Detokenizer } from '../output/incremental-detokenizer.ts';

/**
 * A byte-level toy tokenizer for tests: each token id stands for a byte string; decode() concatenates the bytes and
 * decodes them as UTF-8 the way real tokenizers do (an incomplete character becomes U+FFFD).
 * Default table: 0 and 1 decode to '' (EOS, padding), ids >= 2 to one ASCII letter 'a' + (id - 2) % 26, overridden
 * by `bytes`.
 */
export function createByteDetokenizer(bytes: Record<number, number[] | string> = {}): Detokenizer & { calls: number } {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8', { fatal: false });
  const table = new Map<number, Uint8Array>();
  for (const [id, b] of Object.entries(bytes)) table.set(Number(id), typeof b === 'string' ? encoder.encode(b) : Uint8Array.from(b));
  const bytesOf = (id: number): Uint8Array =>
    table.get(id) ?? (id < 2 ? new Uint8Array(0) : Uint8Array.of(97 + ((id - 2) % 26)));
  const det = {
    calls: 0,
    decode(ids: readonly number[]): string {
      det.calls++;
      return decoder.decode(concatArrays(Uint8Array, ids.map(bytesOf)));
    },
  };
  return det;
}
