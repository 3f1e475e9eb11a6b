/**
 * tokenizer.json + tokenizer_config.json for generated test models: a byte-level BPE (merges learned from
 * TRAINING_CORPUS, or from the caller's corpus), ByteLevel pre-tokenizer and decoder, special tokens <|endoftext|> (BOS and EOS),
 * <|im_start|> and <|im_end|>, and a ChatML chat template.
 */
import { trainByteLevelBpe } from './bpe-trainer.ts';
import { TRAINING_CORPUS } from './training-corpus.ts';

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** ChatML: <|im_start|>{role}\n{content}<|im_end|>\n per message, then an open assistant turn when asked. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface GeneratedTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfigJson: Record<string, unknown>;
  /** Number of token ids (special + bytes + merged tokens). */
  vocabSize: number;
  bosTokenId: number;
  eosTokenId: number;
}

export function generateTokenizer(opts: { numMerges: number; modelMaxLengthTokens: number; corpus?: string }): GeneratedTokenizer {
  const bpe = trainByteLevelBpe(opts.corpus ?? TRAINING_CORPUS, opts.numMerges);
  const vocab: Record<string, number> = {};
  SPECIAL_TOKENS.forEach((t, id) => (vocab[t] = id));
  bpe.tokens.forEach((t, i) => (vocab[t] = SPECIAL_TOKENS.length + i));
  const vocabSize = SPECIAL_TOKENS.length + bpe.tokens.length;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };

  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const tokenizerConfigJson = {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(
      tokenizerJson.added_tokens.map(({ id, ...rest }) => [String(id), rest]),
    ),
    bos_token: SPECIAL_TOKENS[0],
    eos_token: SPECIAL_TOKENS[0],
    unk_token: null,
    pad_token: null,
    additional_special_tokens: [SPECIAL_TOKENS[1], SPECIAL_TOKENS[2]],
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: opts.modelMaxLengthTokens,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { tokenizerJson, tokenizerConfigJson, vocabSize, bosTokenId: 0, eosTokenId: 0 };
}
