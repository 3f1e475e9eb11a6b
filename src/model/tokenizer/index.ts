/** Public surface of tokenizers and chat templates. */
export { loadTokenizer, renderChat, type ChatMessage, type DecodeOptions, type EncodeOptions, type Tokenizer } from './tokenizer.ts';
