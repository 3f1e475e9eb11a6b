/**
 * A small byte-level BPE trainer for generated test models: start from the 256 byte characters and repeatedly
 * merge the most frequent adjacent pair of symbols inside pre-tokens, weighting each distinct pre-token by its count.
 * Ties go to the lexicographically smallest pair, so training is deterministic.
 */
import { BYTE_TO_CHAR, preTokenize, toByteLevel } from './byte-level.ts';

export interface BpeVocabulary {
  /** Token strings in id order (before any offset the caller adds): the 256 byte characters, then merge results. */
  tokens: string[];
  /** Merges in priority order, as [left, right] token strings. */
  merges: Array<[string, string]>;
}

interface Word {
  symbols: string[];
  count: number;
}

function collectWords(corpus: string): Word[] {
  const counts = new Map<string, number>();
  for (const piece of preTokenize(corpus)) {
    const w = toByteLevel(piece);
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  return [...counts.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([w, count]) => ({ symbols: Array.from(w), count }));
}

const SEP = '\u0000'; // never part of a byte-level symbol

function bestPair(words: Word[]): [string, string] | null {
  const counts = new Map<string, number>();
  for (const w of words) {
    for (let i = 0; i + 1 < w.symbols.length; i++) {
      const key = w.symbols[i] + SEP + w.symbols[i + 1];
      counts.set(key, (counts.get(key) ?? 0) + w.count);
    }
  }
  let best: string | null = null;
  let bestCount = 0;
  for (const [key, count] of counts) {
    if (count > bestCount || (count === bestCount && best !== null && key < best)) {
      best = key;
      bestCount = count;
    }
  }
  if (best === null) return null;
  const [left, right] = best.split(SEP);
  return [left, right];
}

function applyMerge(words: Word[], left: string, right: string): void {
  const merged = left + right;
  for (const w of words) {
    const s = w.symbols;
    let out: string[] | null = null;
    for (let i = 0; i < s.length; i++) {
      if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
        out ??= s.slice(0, i);
        out.push(merged);
        i++;
      } else if (out !== null) {
        out.push(s[i]);
      }
    }
    if (out !== null) w.symbols = out;
  }
}

/** Learns up to `numMerges` merges from `corpus` (fewer if every pre-token becomes one symbol first). */
export function trainByteLevelBpe(corpus: string, numMerges: number): BpeVocabulary {
  const words = collectWords(corpus);
  const tokens = [...BYTE_TO_CHAR];
  const known = new Set(tokens);
  const merges: Array<[string, string]> = [];
  while (merges.length < numMerges) {
    const pair = bestPair(words);
    if (pair === null) break;
    merges.push(pair);
    applyMerge(words, pair[0], pair[1]);
    const merged = pair[0] + pair[1];
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
  }
  return { tokens, merges };
}
