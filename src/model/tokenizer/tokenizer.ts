/**
 * A checkpoint's tokenizer: `tokenizer.json` (+ optional `tokenizer_config.json`, `chat_template.jinja`) loaded with
 * @huggingface/tokenizers, behind a small interface the rest of Tessera uses.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { TesseraError } from '../../errors.ts';
import { readJsonFile, readRegularTextFile } from '../checkpoint/regular-file.ts';
import { createTextEncoder, type SpecialTokenAllowed, type TextEncoder } from './text-encoder.ts';
import { maxBytesPerTokenOf } from './token-byte-bound.ts';

export interface EncodeOptions {
  /** Add the tokenizer's special tokens (e.g. a BOS from its post-processor). Default true, as in transformers. */
  addSpecialTokens?: boolean;
  /**
   * Where text that spells a special token (`<|im_end|>`) becomes that control token: 'parse' everywhere (default,
   * as in transformers), 'as-text' nowhere (it is tokenized as the characters it is), or where the function allows.
   */
  specialTokens?: 'parse' | 'as-text' | SpecialTokenAllowed;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS/EOS, chat markers) from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  /** One past the largest token id (vocabulary and added tokens). */
  vocabSize: number;
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids that are not tokens (padding rows of a larger embedding) decode to nothing. */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  bosTokenId: number | null;
  eosTokenIds: number[];
  chatTemplate: string | null;
  tokenToId(t: string): number | null;
  /** Ids of the special (control) tokens. */
  specialTokenIds: ReadonlySet<number>;
  /** Most input bytes one token can stand for (token-byte-bound.ts); null when no bound holds for this tokenizer. */
  maxBytesPerToken: number | null;
}

type Json = Record<string, unknown>;

function invalid(message: string, cause?: unknown): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', message, cause === undefined ? undefined : { cause });
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readJsonObject(file: string): Json {
  const parsed = readJsonFile(file);
  if (!isObject(parsed)) throw invalid(`${file}: must hold a JSON object`);
  return parsed;
}

/**
 * Checks the ids tokenizer.json declares before the library sees them: every vocabulary and added-token id a
 * non-negative integer below `vocabSize` (the model's embedding rows), added tokens with non-empty text. Names the
 * field and the value.
 */
function checkTokenizerIds(json: Json, file: string, vocabSize: number): void {
  const bad = (field: string, problem: string, given: unknown) => invalid(`${file}: \`${field}\` ${problem}. Given: ${JSON.stringify(given) ?? 'undefined'}`);
  const checkId = (field: string, id: unknown) => {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw bad(field, 'must be a non-negative integer', id);
    if ((id as number) >= vocabSize) throw bad(field, `must be < vocab_size (${vocabSize}) of config.json`, id);
  };
  const model = json.model;
  if (!isObject(model)) throw bad('model', 'must be an object', model);
  if (typeof model.type !== 'string') throw bad('model.type', 'must be a string', model.type);
  if (model.type === 'Unigram') {
    if (!Array.isArray(model.vocab)) throw bad('model.vocab', 'must be a list of [piece, score]', typeof model.vocab);
    if (model.vocab.length > vocabSize) throw bad('model.vocab', `must have at most vocab_size (${vocabSize}) entries`, model.vocab.length);
  } else if (model.vocab !== undefined) {
    if (!isObject(model.vocab)) throw bad('model.vocab', 'must be an object of token -> id', typeof model.vocab);
    for (const [token, id] of Object.entries(model.vocab)) checkId(`model.vocab[${JSON.stringify(token)}]`, id);
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw bad('added_tokens', 'must be a list', typeof added);
  added.forEach((t: unknown, i) => {
    if (!isObject(t)) throw bad(`added_tokens[${i}]`, 'must be an object', t);
    checkId(`added_tokens[${i}].id`, t.id);
    if (typeof t.content !== 'string' || t.content === '') throw bad(`added_tokens[${i}].content`, 'must be a non-empty string', t.content);
  });
}

/** Text every tokenizer of the supported families encodes to known ids. */
const PROBE_TEXT = 'Hello, world! 123';

/** `bos_token` / `eos_token` in tokenizer_config.json: a string or an AddedToken-like {content}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

/** chat_template: a string, or a list of {name, template} from which "default" is taken; else chat_template.jinja. */
function chatTemplateOf(dir: string, config: Json, configFile: string): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((e) => typeof e === 'object' && e !== null && (e as Json).name === 'default');
    if (named !== undefined && typeof (named as Json).template === 'string') return (named as Json).template as string;
    throw invalid(`${configFile}: \`chat_template\` list has no entry named "default"`);
  }
  if (t !== undefined && t !== null) throw invalid(`${configFile}: \`chat_template\` must be a string or a list of {name, template}`);
  const jinjaFile = path.join(dir, 'chat_template.jinja');
  return fs.existsSync(jinjaFile) ? readRegularTextFile(jinjaFile) : null;
}

export interface LoadTokenizerOptions {
  /** The model's vocabulary size (embedding rows): every token id must be below it. */
  vocabSize?: number;
}

/**
 * Loads `dir/tokenizer.json`; returns null when the directory has none. Everything wrong with the files is one
 * CHECKPOINT_INVALID naming the file, the field and the value (ids past `vocabSize` included), checked here rather
 * than when a prompt first meets it.
 */
export function loadTokenizer(dir: string, opts: LoadTokenizerOptions = {}): Tokenizer | null {
  const tokenizerFile = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(tokenizerFile)) return null;
  const tokenizerJson = readJsonObject(tokenizerFile);
  checkTokenizerIds(tokenizerJson, tokenizerFile, opts.vocabSize ?? Number.MAX_SAFE_INTEGER);
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(configFile) ? readJsonObject(configFile) : {};

  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(tokenizerJson, config);
    // The library accepts some malformed files and fails only when encoding: try it once now.
    const ids = hf.encode(PROBE_TEXT).ids;
    if (!ids.every((id: unknown) => Number.isSafeInteger(id) && (id as number) >= 0)) throw new Error(`encoding ${JSON.stringify(PROBE_TEXT)} gave ids ${JSON.stringify(ids)}`);
    hf.decode(ids);
  } catch (err) {
    throw invalid(`${tokenizerFile}: unsupported or malformed tokenizer (${(err as Error).message})`, err);
  }
  let maxId = -1;
  for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
  if (maxId < 0) throw invalid(`${tokenizerFile}: vocabulary is empty`);

  const tokenToId = (t: string): number | null => hf.token_to_id(t) ?? null;
  const idOfConfigToken = (key: string): number | null => {
    const text = tokenText(config[key]);
    if (text === null) return null;
    const id = tokenToId(text);
    if (id === null) throw invalid(`${configFile}: \`${key}\` ${JSON.stringify(text)} is not a token of ${tokenizerFile}`);
    return id;
  };
  const eos = idOfConfigToken('eos_token');
  const chatTemplate = chatTemplateOf(dir, config, configFile);
  let textEncoder: TextEncoder;
  try {
    textEncoder = createTextEncoder(hf, config);
  } catch (err) {
    throw invalid(`${tokenizerFile}: unsupported or malformed tokenizer (${(err as Error).message})`, err);
  }
  const noSpecials: SpecialTokenAllowed = () => false;

  return {
    vocabSize: maxId + 1,
    encode: (text, opts = {}) => {
      const addSpecialTokens = opts.addSpecialTokens ?? true;
      const policy = opts.specialTokens ?? 'parse';
      if (policy === 'parse') return hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
      return textEncoder.encode(text, { addSpecialTokens, specialAllowed: policy === 'as-text' ? noSpecials : policy });
    },
    decode: (ids, opts = {}) => {
      // Like Hugging Face's Rust tokenizers, ids without a token (e.g. the padding rows of a model's larger
      // embedding, which a model can still sample) decode to nothing instead of failing.
      const known = ids.filter((id) => hf.id_to_token(id) !== undefined);
      if (known.length === 0) return '';
      return hf.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
    },
    bosTokenId: idOfConfigToken('bos_token'),
    eosTokenIds: eos === null ? [] : [eos],
    chatTemplate,
    tokenToId,
    specialTokenIds: textEncoder.specialIds,
    maxBytesPerToken: maxBytesPerTokenOf(tokenizerJson, config),
  };
}

export { encodeChat, renderChat, type ChatMessage } from './chat-template.ts';
export type { SpecialTokenAllowed } from './text-encoder.ts';
