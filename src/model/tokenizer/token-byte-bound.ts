/**
 * An upper bound on how many bytes of input text one token can stand for, read off tokenizer.json, so a prompt can be
 * refused as too long from its byte length alone, before any tokenizing: a text of more than maxTokens x bound bytes
 * needs more than maxTokens tokens.
 *
 * Why the bound holds: BPE covers the (normalized) input with tokens from its vocabulary, each standing for at most
 * as many input bytes as its own string has UTF-8 bytes (byte-level BPE spells each input byte as one character of
 * 1-2 UTF-8 bytes; Metaspace spells a 1-byte space as the 3-byte U+2581; byte-fallback tokens `<0x41>` stand for one
 * byte), added tokens stand for their own text, and the post-processor only adds tokens. What can break it is a step
 * that deletes or shrinks input, so the bound is the longest token times the worst shrink factor of the normalizers,
 * and none (null) when a step can delete text without limit:
 *   - normalizers: NFC/NFD/NFKC/NFKD shrink at most 4x (a 4-byte mathematical letter to one ASCII byte under NFKC),
 *     Lowercase at most 3x (U+212A KELVIN SIGN to `k`), Prepend never, Replace of a fixed string by a non-empty one
 *     by their length ratio; anything else (Strip, StripAccents, Bert, Precompiled, regex Replace) -> null;
 *   - pre-tokenizers that drop text (Whitespace, WhitespaceSplit, Bert, CharDelimiterSplit, Split/Punctuation with
 *     behavior Removed) -> null;
 *   - a model other than BPE, or a BPE that can drop or fuse unknown characters (no byte-level pre-tokenizer, no
 *     byte_fallback, and no unk_token or fuse_unk) -> null;
 *   - added tokens with lstrip/rstrip (they eat neighbouring whitespace) and tokenizer_config's remove_space or
 *     do_lowercase_and_remove_accent -> null.
 * A null bound means prompts are tokenized (off the event loop) before their length is known.
 */
type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/** How much a normalizer can shrink its input (>= 1), or null when it can delete text without limit. */
function shrinkOf(n: unknown): number | null {
  if (n === null || n === undefined) return 1;
  if (!isObject(n)) return null;
  switch (n.type) {
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return 4;
    case 'Lowercase':
      return 3;
    case 'Prepend':
      return 1;
    case 'Replace': {
      const pattern = isObject(n.pattern) ? n.pattern.String : undefined;
      if (typeof pattern !== 'string' || pattern === '' || typeof n.content !== 'string' || n.content === '') return null;
      return Math.max(1, utf8Bytes(pattern) / utf8Bytes(n.content));
    }
    case 'Sequence': {
      if (!Array.isArray(n.normalizers)) return null;
      let product = 1;
      for (const inner of n.normalizers) {
        const s = shrinkOf(inner);
        if (s === null) return null;
        product *= s;
      }
      return product;
    }
    default:
      return null;
  }
}

/** Whether a pre-tokenizer keeps every character (and whether it is byte-level somewhere). */
function preTokenizerKeepsText(p: unknown): { keeps: boolean; byteLevel: boolean } {
  if (p === null || p === undefined) return { keeps: true, byteLevel: false };
  if (!isObject(p)) return { keeps: false, byteLevel: false };
  switch (p.type) {
    case 'ByteLevel':
      return { keeps: true, byteLevel: true };
    case 'Metaspace':
    case 'Digits':
    case 'UnicodeScripts':
      return { keeps: true, byteLevel: false };
    case 'Split':
    case 'Punctuation':
      return { keeps: p.behavior !== 'Removed' && p.behavior !== 'removed', byteLevel: false };
    case 'Sequence': {
      if (!Array.isArray(p.pretokenizers)) return { keeps: false, byteLevel: false };
      const parts = p.pretokenizers.map(preTokenizerKeepsText);
      return { keeps: parts.every((x) => x.keeps), byteLevel: parts.some((x) => x.byteLevel) };
    }
    default:
      return { keeps: false, byteLevel: false };
  }
}

/** The most input bytes one token can stand for, or null when no such bound holds for this tokenizer. */
export function maxBytesPerTokenOf(tokenizerJson: Json, tokenizerConfig: Json): number | null {
  const model = tokenizerJson.model;
  if (!isObject(model) || model.type !== 'BPE' || !isObject(model.vocab)) return null;
  if (tokenizerConfig.remove_space === true || tokenizerConfig.do_lowercase_and_remove_accent === true) return null;
  const pre = preTokenizerKeepsText(tokenizerJson.pre_tokenizer);
  if (!pre.keeps) return null;
  const unknownsKept = pre.byteLevel || model.byte_fallback === true || (typeof model.unk_token === 'string' && model.fuse_unk !== true);
  if (!unknownsKept) return null;
  const shrink = shrinkOf(tokenizerJson.normalizer);
  if (shrink === null) return null;
  let longest = 1;
  for (const token of Object.keys(model.vocab)) longest = Math.max(longest, utf8Bytes(token));
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  for (const t of added) {
    if (!isObject(t) || typeof t.content !== 'string') return null;
    if (t.lstrip === true || t.rstrip === true) return null;
    longest = Math.max(longest, utf8Bytes(t.content));
  }
  // A byte-level BPE without byte_fallback spells a 4-byte character as 4 one-byte tokens: covered by longest >= 1.
  return Math.ceil(longest * shrink);
}
