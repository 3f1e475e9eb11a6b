/**
 * Byte-level BPE alphabet: each of the 256 byte values is shown as one printable Unicode character, so token
 * strings never hold whitespace or control characters. Bytes that are already visible Latin-1 characters
 * ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 are given code points 256, 257, ... in
 * increasing byte order. (This is the alphabet Hugging Face's ByteLevel pre-tokenizer and decoder assume.)
 */

function isVisible(byte: number): boolean {
  return (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
}

function buildByteToChar(): string[] {
  const table: string[] = [];
  let next = 256;
  for (let byte = 0; byte < 256; byte++) table.push(String.fromCodePoint(isVisible(byte) ? byte : next++));
  return table;
}

/** BYTE_TO_CHAR[b] is the character that stands for byte b. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

/** UTF-8 bytes of `text`, each as its alphabet character. */
export function toByteLevel(text: string): string {
  let out = '';
  for (const b of utf8.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** Inverse of toByteLevel for a whole token string; undefined when a character is outside the alphabet. */
export function fromByteLevel(token: string): Uint8Array | undefined {
  const bytes: number[] = [];
  for (const c of token) {
    const b = CHAR_TO_BYTE.get(c);
    if (b === undefined) return undefined;
    bytes.push(b);
  }
  return Uint8Array.from(bytes);
}

/**
 * Splits text into pre-tokens the way the ByteLevel pre-tokenizer does (GPT-2 rule): English contractions,
 * an optional space + letters, an optional space + digits, an optional space + other symbols, whitespace runs
 * (a run before a word leaves its last space to that word).
 */
export const PRE_TOKEN_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export function preTokenize(text: string): string[] {
  return text.match(PRE_TOKEN_PATTERN) ?? [];
}
