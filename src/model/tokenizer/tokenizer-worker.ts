/**
 * Worker-thread entry of TokenizerThread: loads the model directory's tokenizer once, then encodes prompt text and
 * renders + encodes chat conversations, one request at a time, so a long prompt costs this thread's time and never the
 * event loop of the server. Replies carry the ids in a transferred Uint32Array.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isTesseraError, TesseraError } from '../../errors.ts';
import { encodeChat } from './chat-template.ts';
import { loadTokenizer } from './tokenizer.ts';
import type { TokenizerReply, TokenizerRequest } from './tokenizer-thread.ts';

const port = parentPort!;
const { modelDir, vocabSize } = workerData as { modelDir: string; vocabSize: number };

function errorReply(id: number, err: unknown): TokenizerReply {
  if (isTesseraError(err)) return { id, error: { code: err.code, message: err.message } };
  return { id, error: { code: 'INTERNAL', message: `tokenizer thread: ${err instanceof Error ? err.message : String(err)}` } };
}

try {
  const tokenizer = loadTokenizer(modelDir, { vocabSize });
  if (tokenizer === null) throw new Error(`${modelDir} has no tokenizer.json`);
  port.on('message', (msg: TokenizerRequest) => {
    let reply: TokenizerReply;
    try {
      const ids =
        msg.op === 'text'
          ? tokenizer.encode(msg.text, { addSpecialTokens: msg.addSpecialTokens, specialTokens: msg.parseSpecialTokens ? 'parse' : 'as-text' })
          : encodeChat(tokenizer, msg.messages, { parseSpecialTokens: msg.parseSpecialTokens });
      // A tokenizer without byte fallback or unk token has no id for some characters: refuse instead of sending 0.
      const unknown = ids.findIndex((id) => !Number.isSafeInteger(id) || id < 0 || id >= vocabSize);
      if (unknown >= 0) throw new TesseraError('INVALID_ARGUMENT', `the prompt has characters this model's tokenizer cannot encode (token ${unknown} has no id)`);
      reply = { id: msg.id, ids: Uint32Array.from(ids) };
    } catch (err) {
      reply = errorReply(msg.id, err);
    }
    port.postMessage(reply, "ids" in reply ? [reply.ids.buffer as ArrayBuffer] : []);
  });
  port.postMessage({ id: -1, ready: true } satisfies TokenizerReply);
} catch (err) {
  port.postMessage(errorReply(-1, err));
}
