/**
 * Encoding with control over where special tokens are recognised. @huggingface/tokenizers always splits a text at
 * every added token, so user text that spells `<|im_end|>` becomes the control token (transformers' default; its
 * `split_special_tokens=True` switch has no counterpart in the JS library). This is the library's
 * `Tokenizer.encode_text` + post-processing rebuilt from the tokenizer's public parts (normalizer, pre_tokenizer,
 * model, post_processor, added tokens), with one change: a special added token is matched only where
 * `specialAllowed(start, end)` says so for its position in the text; elsewhere its characters are tokenized as text.
 * Non-special added tokens are matched everywhere, as in the library. With every position allowed the result equals
 * the library's `encode` (text-encoder.test.ts checks it on random texts).
 *
 *   sections  = split text at added-token matches (longest match, left to right; specials only where allowed)
 *   each added-token section: its id (lstrip/rstrip trim the neighbouring text sections)
 *   each text section: [remove_space] [lowercase_and_remove_accent] normalizer -> split at normalized added tokens
 *                      (specials only if allowed over the whole section) -> pre_tokenizer -> model
 *   post_processor(tokens, null, addSpecialTokens): its added tokens (BOS/EOS) map through the added-token table
 *
 * Ids of text come from the model's own table, so text never turns into a special token's id by name; the one
 * exception would be a model whose merges produce a special token's exact string from text (no byte-level BPE can:
 * its pre-tokenizer splits such strings at their punctuation).
 */
import type { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

/** May a special token that matches text[start, end) be taken as that token? */
export type SpecialTokenAllowed = (start: number, end: number) => boolean;

interface Added {
  content: string;
  id: number;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

interface TrieNode {
  next: Map<string, TrieNode>;
  token: Added | null;
}

function buildTrie(entries: Array<[string, Added]>): TrieNode {
  const root: TrieNode = { next: new Map(), token: null };
  for (const [text, token] of entries) {
    let node = root;
    for (const ch of text.split('')) {
      let child = node.next.get(ch);
      if (!child) node.next.set(ch, (child = { next: new Map(), token: null }));
      node = child;
    }
    node.token = token;
  }
  return root;
}

interface Section {
  text: string;
  /** Offset of the section in the split text. */
  start: number;
  token: Added | null;
}

/**
 * Splits `text` at added-token matches: at each position the longest acceptable match (a special one only where
 * allowed), else the position joins the current text run. A text run equal to an added token's string counts as that
 * token (the library's behaviour), if acceptable there.
 */
function split(text: string, trie: TrieNode, byText: ReadonlyMap<string, Added>, accept: (t: Added, start: number, end: number) => boolean): Section[] {
  const out: Section[] = [];
  let runStart = 0;
  const pushRun = (end: number) => {
    if (end <= runStart) return;
    const run = text.slice(runStart, end);
    const t = byText.get(run);
    out.push({ text: run, start: runStart, token: t !== undefined && accept(t, runStart, end) ? t : null });
  };
  let i = 0;
  while (i < text.length) {
    let node: TrieNode | undefined = trie;
    let match: Added | null = null;
    let matchEnd = i;
    for (let j = i; j < text.length && (node = node.next.get(text[j])) !== undefined; j++) {
      if (node.token !== null && accept(node.token, i, j + 1)) {
        match = node.token;
        matchEnd = j + 1;
      }
    }
    if (match === null) {
      i++;
      continue;
    }
    pushRun(i);
    out.push({ text: text.slice(i, matchEnd), start: i, token: match });
    i = matchEnd;
    runStart = i;
  }
  pushRun(text.length);
  return out;
}

/** lstrip/rstrip of an added token trim the whitespace of the text sections beside it (the library's rule). */
function applyStrips(sections: Section[]): void {
  sections.forEach((s, i) => {
    if (s.token === null) return;
    if (s.token.lstrip && i > 0) sections[i - 1].text = sections[i - 1].text.trimEnd();
    if (s.token.rstrip && i < sections.length - 1) sections[i + 1].text = sections[i + 1].text.trimStart();
  });
}

export interface TextEncoder {
  encode(text: string, opts: { addSpecialTokens: boolean; specialAllowed: SpecialTokenAllowed }): number[];
  /** Ids of the special added tokens. */
  readonly specialIds: ReadonlySet<number>;
}

/** A TextEncoder over a loaded tokenizer and its tokenizer_config.json. */
export function createTextEncoder(hf: HfTokenizer, tokenizerConfig: Record<string, unknown>): TextEncoder {
  const normalizer = hf.normalizer;
  const preTokenizer = hf.pre_tokenizer;
  const model = hf.model;
  const postProcessor = hf.post_processor;
  if (model === null) throw new Error('tokenizer has no model');
  const removeSpace = tokenizerConfig.remove_space === true;
  const lowercaseAndRemoveAccent = tokenizerConfig.do_lowercase_and_remove_accent === true;

  const added: Added[] = [...hf.get_added_tokens_decoder().values()].map((t) => ({ content: t.content, id: t.id, special: t.special, lstrip: t.lstrip, rstrip: t.rstrip }));
  const normalizedOf = new Map<Added, boolean>();
  const byText = new Map<string, Added>();
  const unnormalized: Array<[string, Added]> = [];
  const normalized: Array<[string, Added]> = [];
  const addedTokens = [...hf.get_added_tokens_decoder().values()];
  added.forEach((a, i) => {
    const isNormalized = addedTokens[i].normalized && normalizer !== null;
    normalizedOf.set(a, isNormalized);
    byText.set(a.content, a);
    if (isNormalized) {
      const n = normalizer!(a.content);
      normalized.push([n, a]);
      byText.set(n, a);
    } else unnormalized.push([a.content, a]);
  });
  const unnormalizedTrie = buildTrie(unnormalized);
  const normalizedTrie = buildTrie(normalized);
  const specialIds = new Set(added.filter((a) => a.special).map((a) => a.id));

  /** The library's id of a token string: added tokens first, then the model's table, then unk. */
  const idOf = (t: string): number => byText.get(t)?.id ?? model.tokens_to_ids.get(t) ?? (model.unk_token_id as number);

  function encodeText(text: string, specialAllowed: SpecialTokenAllowed): Array<{ token: string; id: number }> {
    const sections = split(text, unnormalizedTrie, byText, (t, s, e) => !t.special || specialAllowed(s, e));
    applyStrips(sections);
    const out: Array<{ token: string; id: number }> = [];
    sections.forEach((section, sectionIndex) => {
      if (section.text.length === 0) return;
      if (section.token !== null) {
        out.push({ token: section.token.content, id: section.token.id });
        return;
      }
      let processed = section.text;
      if (removeSpace) processed = processed.trim().split(/\s+/).join(' ');
      if (lowercaseAndRemoveAccent) processed = processed.toLowerCase().replace(/\p{M}/gu, '');
      if (normalizer !== null) processed = normalizer(processed);
      if (processed.length === 0) return;
      // Offsets inside normalized text do not map back: specials match here only if allowed over the whole section.
      const wholeAllowed = specialAllowed(section.start, section.start + section.text.length);
      const subsections = split(processed, normalizedTrie, byText, (t) => !t.special || wholeAllowed);
      applyStrips(subsections);
      for (const sub of subsections) {
        if (sub.text.length === 0) continue;
        if (sub.token !== null) {
          out.push({ token: sub.token.content, id: sub.token.id });
          continue;
        }
        const pieces = preTokenizer !== null ? preTokenizer(sub.text, { section_index: sectionIndex }) : [sub.text];
        for (const token of model!(pieces)) out.push({ token, id: model!.tokens_to_ids.get(token) ?? (model!.unk_token_id as number) });
      }
    });
    return out;
  }

  return {
    specialIds,
    encode(text, opts) {
      const encoded = encodeText(text, opts.specialAllowed);
      if (postProcessor === null) return encoded.map((e) => e.id);
      const tokens = encoded.map((e) => e.token);
      const processed = postProcessor(tokens, null, opts.addSpecialTokens).tokens;
      // Processors add tokens around the sequence; keep the text's own ids and map only what was added.
      const extra = processed.length - tokens.length;
      for (let k = 0; k <= extra; k++) {
        if (tokens.every((t, i) => processed[k + i] === t)) {
          return [...processed.slice(0, k).map(idOf), ...encoded.map((e) => e.id), ...processed.slice(k + tokens.length).map(idOf)];
        }
      }
      return processed.map(idOf);
    },
  };
}
