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

/**
 * Counts of adjacent symbol pairs over all words (weighted by word count) and, per pair, the words holding it. Kept
 * up to date across merges by re-counting only the words a merge touches, so a merge costs the words it changes plus
 * one scan of the pair table, not a pass over the whole corpus.
 */
class PairTable {
  private readonly counts = new Map<string, number>();
  private readonly wordsWith = new Map<string, Set<number>>();

  constructor(private readonly words: Word[]) {
    words.forEach((_, i) => this.add(i, 1));
  }

  /** Adds (sign 1) or removes (sign -1) word i's pairs. */
  private add(i: number, sign: 1 | -1): void {
    const { symbols, count } = this.words[i];
    for (let k = 0; k + 1 < symbols.length; k++) {
      const key = symbols[k] + SEP + symbols[k + 1];
      const next = (this.counts.get(key) ?? 0) + sign * count;
      if (next === 0) {
        this.counts.delete(key);
        this.wordsWith.delete(key);
        continue;
      }
      this.counts.set(key, next);
      if (sign === 1) {
        let set = this.wordsWith.get(key);
        if (!set) this.wordsWith.set(key, (set = new Set()));
        set.add(i);
      }
    }
  }

  /** The most frequent pair; ties go to the lexicographically smallest key. */
  best(): [string, string] | null {
    let best: string | null = null;
    let bestCount = 0;
    for (const [key, count] of this.counts) {
      if (count > bestCount || (count === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === null) return null;
    const [left, right] = best.split(SEP);
    return [left, right];
  }

  /** Replaces every (left, right) in the words holding it, left to right without overlap. */
  merge(left: string, right: string): void {
    const key = left + SEP + right;
    const touched = [...(this.wordsWith.get(key) ?? [])].sort((a, b) => a - b);
    const merged = left + right;
    for (const i of touched) {
      const s = this.words[i].symbols;
      const out: string[] = [];
      for (let k = 0; k < s.length; k++) {
        if (k + 1 < s.length && s[k] === left && s[k + 1] === right) {
          out.push(merged);
          k++;
        } else {
          out.push(s[k]);
        }
      }
      if (out.length === s.length) continue; // the set may hold words whose pair was already merged away
      this.add(i, -1);
      this.words[i].symbols = out;
      this.add(i, 1);
    }
  }
}

/** Learns up to `numMerges` merges from `corpus` (fewer if every pre-token becomes one symbol first). */
export function trainByteLevelBpe(corpus: string, numMerges: number): BpeVocabulary {
  const pairs = new PairTable(collectWords(corpus));
  const tokens = [...BYTE_TO_CHAR];
  const known = new Set(tokens);
  const merges: Array<[string, string]> = [];
  while (merges.length < numMerges) {
    const pair = pairs.best();
    if (pair === null) break;
    merges.push(pair);
    pairs.merge(pair[0], pair[1]);
    const merged = pair[0] + pair[1];
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
  }
  return { tokens, merges };
}
