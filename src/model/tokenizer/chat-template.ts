/** Renders chat messages to prompt text with the tokenizer's Jinja chat template (transformers' conventions). */
import { randomBytes } from 'node:crypto';
import { Template } from '@huggingface/jinja';
import { TesseraError } from '../../errors.ts';
import type { Tokenizer } from './tokenizer.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

function specialText(tokenizer: Tokenizer, id: number | null): string {
  return id === null ? '' : tokenizer.decode([id]);
}

/**
 * Renders `messages` with `tokenizer.chatTemplate`. The template sees `messages`, `add_generation_prompt`,
 * `bos_token` and `eos_token`, like transformers' apply_chat_template. Encode the result with
 * `addSpecialTokens: false`: templates already write any BOS they want.
 */
export function renderChat(tokenizer: Tokenizer, messages: ChatMessage[], addGenerationPrompt = true): string {
  if (tokenizer.chatTemplate === null) {
    throw new TesseraError('INVALID_ARGUMENT', '`messages` need a chat template, and this model\'s tokenizer has none');
  }
  let template: Template;
  try {
    template = new Template(tokenizer.chatTemplate);
  } catch (err) {
    throw new TesseraError('CHECKPOINT_INVALID', `chat template does not parse: ${(err as Error).message}`, { cause: err });
  }
  try {
    return template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: specialText(tokenizer, tokenizer.bosTokenId),
      eos_token: specialText(tokenizer, tokenizer.eosTokenIds[0] ?? null),
    });
  } catch (err) {
    // Templates reject bad conversations themselves (raise_exception), e.g. roles out of order.
    throw new TesseraError('INVALID_ARGUMENT', `\`messages\` rejected by the chat template: ${(err as Error).message}`, { cause: err });
  }
}

export interface EncodeChatOptions {
  /**
   * false (the server's default): message contents are tokenized as text, so a user who types `<|im_end|>` gets
   * those characters, not a control token that would end their turn; only what the template itself writes can be a
   * special token. true: the rendered text is tokenized as a whole, special tokens parsed everywhere (transformers'
   * apply_chat_template(tokenize=True)).
   */
  parseSpecialTokens: boolean;
  addGenerationPrompt?: boolean;
}

/** Renders `messages` and tokenizes the result (templates write their own BOS: no special tokens are added). */
export function encodeChat(tokenizer: Tokenizer, messages: ChatMessage[], opts: EncodeChatOptions): number[] {
  const addGenerationPrompt = opts.addGenerationPrompt ?? true;
  const rendered = renderChat(tokenizer, messages, addGenerationPrompt);
  if (opts.parseSpecialTokens) return tokenizer.encode(rendered, { addSpecialTokens: false });
  const spans = contentSpans(tokenizer, messages, rendered, addGenerationPrompt);
  return tokenizer.encode(rendered, { addSpecialTokens: false, specialTokens: (start, end) => !spans.some(([s, e]) => start < e && end > s) });
}

/**
 * Where the messages' contents lie in `rendered`. The conversation is rendered a second time with each non-empty
 * content wrapped in markers no content contains (noncharacters around a random nonce); when the marked rendering
 * minus its markers is `rendered`, the markers give the exact spans. A template that transforms content (trims it,
 * splits it, branches on it) can break that equality; then, conservatively, every occurrence in `rendered` of a
 * special token that some content spells is text, whoever wrote it.
 */
function contentSpans(tokenizer: Tokenizer, messages: ChatMessage[], rendered: string, addGenerationPrompt: boolean): Array<[number, number]> {
  let nonce: string;
  do nonce = randomBytes(8).toString('hex');
  while (messages.some((m) => m.content.includes(nonce)));
  const open = `\uFDD0${nonce}\uFDD1`;
  const close = `\uFDD1${nonce}\uFDD0`;
  let marked: string | null;
  try {
    marked = renderChat(tokenizer, messages.map((m) => (m.content === '' ? m : { ...m, content: `${open}${m.content}${close}` })), addGenerationPrompt);
  } catch {
    marked = null; // the template refused the marked contents: use the fallback
  }
  if (marked !== null) {
    const spans: Array<[number, number]> = [];
    let plain = '';
    let start: number | null = null;
    for (let i = 0; i < marked.length; ) {
      const o = marked.indexOf(open, i);
      const c = marked.indexOf(close, i);
      const next = o < 0 ? c : c < 0 ? o : Math.min(o, c);
      if (next < 0) {
        plain += marked.slice(i);
        break;
      }
      plain += marked.slice(i, next);
      if (next === o) {
        start ??= plain.length;
        i = o + open.length;
      } else {
        if (start !== null) spans.push([start, plain.length]);
        start = null;
        i = c + close.length;
      }
    }
    if (start !== null) spans.push([start, plain.length]);
    if (plain === rendered) return spans;
  }
  const spans: Array<[number, number]> = [];
  for (const id of tokenizer.specialTokenIds) {
    const text = tokenizer.decode([id]);
    if (text === '' || !messages.some((m) => m.content.includes(text))) continue;
    for (let at = rendered.indexOf(text); at >= 0; at = rendered.indexOf(text, at + 1)) spans.push([at, at + text.length]);
  }
  return spans;
}
