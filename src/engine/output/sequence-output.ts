/**
 * What a request's caller sees: stop conditions on each new token, text deltas, and the one final event.
 *
 * Order of checks on a token: stop token id -> EOS (unless ignoreEos) -> stop sequence on the text -> maxNewTokens.
 * A stop/EOS token is reported in `tokens` (it was generated and counts in usage) but its text is not output.
 * The concatenation of all 'tokens' texts equals the 'finish' text.
 */
import type { FinishReason, GeneratedToken, GenerationEvent, ValidGenerateRequest } from '../request.ts';
import { createIncrementalDetokenizer, type Detokenizer, type IncrementalDetokenizer } from './incremental-detokenizer.ts';
import { createStopSequenceMatcher, type StopSequenceMatcher } from './stop-sequence-matcher.ts';

export interface SequenceOutputOptions {
  request: ValidGenerateRequest;
  /** null: token-id-only mode, every text is ''. */
  detokenizer: Detokenizer | null;
  eosTokenIds: ReadonlySet<number>;
  emit(event: GenerationEvent): void;
}

export interface SequenceOutput {
  /** Handles one generated token and emits its 'tokens' event; returns the finish reason if generation ends here. */
  accept(token: GeneratedToken): FinishReason | null;
  /** Emits the final event (flushing pending text first, unless a stop sequence ended the text). Idempotent. */
  finish(reason: FinishReason, error?: Error): void;
  readonly numGenerated: number;
  readonly finished: boolean;
  readonly text: string;
}

export function createSequenceOutput(opts: SequenceOutputOptions): SequenceOutput {
  const { request, eosTokenIds, emit } = opts;
  const stopTokenIds = new Set(request.stopping.stopTokenIds);
  const detok: IncrementalDetokenizer | null =
    opts.detokenizer === null ? null : createIncrementalDetokenizer(opts.detokenizer, request.promptTokenIds);
  const matcher: StopSequenceMatcher = createStopSequenceMatcher(request.stopping.stopSequences);
  let text = '';
  let numGenerated = 0;
  let textClosed = false; // nothing more may be added to the text
  let finished = false;

  /** Pending detokenizer bytes and held stop-sequence prefix, at the end of generation. */
  function flushText(): { text: string; stopped: boolean } {
    if (detok === null || textClosed) return { text: '', stopped: false };
    textClosed = true;
    const m = matcher.push(detok.flush());
    return m.stopped ? m : { text: m.text + matcher.flush(), stopped: false };
  }

  return {
    get numGenerated() {
      return numGenerated;
    },
    get finished() {
      return finished;
    },
    get text() {
      return text;
    },
    accept(token: GeneratedToken): FinishReason | null {
      numGenerated++;
      let delta = '';
      let reason: FinishReason | null = null;
      if (stopTokenIds.has(token.tokenId)) reason = 'stop';
      else if (!request.stopping.ignoreEos && eosTokenIds.has(token.tokenId)) reason = 'eos';
      else if (detok !== null) {
        const m = matcher.push(detok.push(token.tokenId));
        delta = m.text;
        if (m.stopped) {
          reason = 'stop';
          textClosed = true;
        }
      }
      if (reason === null && numGenerated >= request.stopping.maxNewTokens) reason = 'length';
      if (reason !== null) {
        const tail = flushText();
        delta += tail.text;
        if (tail.stopped) reason = 'stop';
      }
      text += delta;
      emit({ type: 'tokens', tokens: [token], text: delta });
      return reason;
    },
    finish(reason: FinishReason, error?: Error): void {
      if (finished) return;
      finished = true;
      const tail = flushText();
      if (tail.text !== '') {
        text += tail.text;
        emit({ type: 'tokens', tokens: [], text: tail.text });
      }
      const usage = { promptTokens: request.promptTokenIds.length, generatedTokens: numGenerated };
      emit(error === undefined ? { type: 'finish', reason, text, usage } : { type: 'finish', reason, text, usage, error });
    },
  };
}
