/**
 * Incremental detokenizer: turns a growing list of token ids into text deltas without ever emitting half a character.
 *
 * It decodes a small window of ids twice: [prefix, read) (text already emitted from that window) and [prefix, end).
 * The delta is the second minus the first, emitted only when it does not end in U+FFFD (the tokenizer's replacement
 * for an incomplete UTF-8 sequence: the next tokens will complete it). A few prompt tokens seed the window so that
 * tokenizers which drop a leading space at the start of a decode still produce the right first word.
 */

export interface Detokenizer {
  decode(ids: readonly number[]): string;
}

const REPLACEMENT_CHAR = '\uFFFD';
/** Prompt tokens used as left context for the first generated tokens. */
const CONTEXT_TOKENS = 5;
/** Window compaction threshold. */
const COMPACT_AFTER_TOKENS = 64;

export interface IncrementalDetokenizer {
  /** Adds a generated token; returns the newly stable text ('' when waiting for more bytes). */
  push(tokenId: number): string;
  /** End of generation: returns whatever text is still pending, incomplete characters included. */
  flush(): string;
}

export function createIncrementalDetokenizer(
  detokenizer: Detokenizer,
  promptTokenIds: readonly number[],
): IncrementalDetokenizer {
  let ids = promptTokenIds.slice(Math.max(0, promptTokenIds.length - CONTEXT_TOKENS));
  let prefix = 0;
  let read = ids.length;
  let emittedInWindow = detokenizer.decode(ids.slice(prefix, read));

  return {
    push(tokenId: number): string {
      ids.push(tokenId);
      const text = detokenizer.decode(ids.slice(prefix));
      if (text.length <= emittedInWindow.length || text.endsWith(REPLACEMENT_CHAR)) return '';
      const delta = text.slice(emittedInWindow.length);
      prefix = read;
      read = ids.length;
      if (prefix > COMPACT_AFTER_TOKENS) {
        ids = ids.slice(prefix);
        read -= prefix;
        prefix = 0;
      }
      emittedInWindow = detokenizer.decode(ids.slice(prefix, read));
      return delta;
    },
    flush(): string {
      const text = detokenizer.decode(ids.slice(prefix));
      const delta = text.length > emittedInWindow.length ? text.slice(emittedInWindow.length) : '';
      prefix = ids.length;
      read = ids.length;
      emittedInWindow = '';
      return delta;
    },
  };
}
