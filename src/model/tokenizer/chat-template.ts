/** Renders chat messages to prompt text with the tokenizer's Jinja chat template (transformers' conventions). */
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
