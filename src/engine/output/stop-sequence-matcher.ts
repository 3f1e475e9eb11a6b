/**
 * Stop sequences matched across token boundaries on the detokenized text. Text that could still be the start of a
 * stop sequence is held back; a matched stop sequence (and anything after it) is never emitted.
 *
 * Invariant: no stop sequence can start inside text already emitted, because emitted text excludes the longest
 * suffix that is a prefix of some stop sequence. So completed matches are searched for in the held text only.
 */

export interface StopMatch {
  /** Text safe to emit now. */
  text: string;
  /** True when a stop sequence was found: generation ends, `text` is the last of it. */
  stopped: boolean;
}

export interface StopSequenceMatcher {
  push(text: string): StopMatch;
  /** End of generation without a match: the held text is output after all. */
  flush(): string;
}

export function createStopSequenceMatcher(stopSequences: readonly string[]): StopSequenceMatcher {
  const stops = stopSequences.filter((s) => s.length > 0);
  let held = '';
  return {
    push(text: string): StopMatch {
      if (stops.length === 0) return { text, stopped: false };
      const window = held + text;
      let first = -1;
      for (const s of stops) {
        const at = window.indexOf(s);
        if (at !== -1 && (first === -1 || at < first)) first = at;
      }
      if (first !== -1) {
        held = '';
        return { text: window.slice(0, first), stopped: true };
      }
      const keep = longestSuffixThatStartsAStop(window, stops);
      held = window.slice(window.length - keep);
      return { text: window.slice(0, window.length - keep), stopped: false };
    },
    flush(): string {
      const out = held;
      held = '';
      return out;
    },
  };
}

function longestSuffixThatStartsAStop(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops) {
    const maxLen = Math.min(s.length - 1, text.length);
    for (let len = maxLen; len > best; len--) {
      if (text.endsWith(s.slice(0, len))) {
        best = len;
        break;
      }
    }
  }
  return best;
}
