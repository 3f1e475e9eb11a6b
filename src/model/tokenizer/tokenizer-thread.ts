/**
 * Prompt tokenization off the event loop: one worker thread that owns a copy of the model's tokenizer
 * (tokenizer-worker.ts) and answers encode requests in order. Tokenizing is linear in the text but not cheap
 * (@huggingface/tokenizers in JS: ~1 µs per byte here), so a 4 MB prompt on the main thread froze every stream for
 * seconds; in the thread it costs that thread's time only. Requests beyond `maxPending` are refused with QUEUE_FULL
 * rather than queued without bound. A thread that dies fails the requests it held (INTERNAL) and is restarted on the
 * next request.
 */
import type { Worker } from 'node:worker_threads';
import { type ErrorCode, TesseraError } from '../../errors.ts';
import { startTsWorker } from '../../util/ts-worker.ts';
import type { ChatMessage } from './chat-template.ts';

export type TokenizerRequest =
  | { id: number; op: 'text'; text: string; addSpecialTokens: boolean; parseSpecialTokens: boolean }
  | { id: number; op: 'chat'; messages: ChatMessage[]; parseSpecialTokens: boolean };

export type TokenizerReply =
  | { id: number; ids: Uint32Array }
  | { id: number; error: { code: ErrorCode; message: string } }
  | { id: -1; ready: true };

export interface TokenizerThreadOptions {
  /** Directory holding tokenizer.json (the converted model directory). */
  modelDir: string;
  /** The model's vocabulary size: every id is checked against it. */
  vocabSize: number;
  /** Requests waiting or running at once; more are QUEUE_FULL. Default 256. */
  maxPending?: number;
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export class TokenizerThread {
  private worker: Worker | null = null;
  private starting: Promise<Worker> | null = null;
  private readonly pending = new Map<number, { resolve: (ids: number[]) => void; reject: (err: unknown) => void }>();
  private nextId = 0;
  private closed = false;

  private constructor(private readonly opts: TokenizerThreadOptions) {}

  /** Starts the thread and waits until its tokenizer is loaded (CHECKPOINT_INVALID if it cannot be). */
  static async start(opts: TokenizerThreadOptions): Promise<TokenizerThread> {
    const thread = new TokenizerThread(opts);
    await thread.ensureWorker();
    return thread;
  }

  /** Prompt text -> ids (the model's usual special tokens added); special-token strings parsed only if asked. */
  encodeText(text: string, opts: { addSpecialTokens?: boolean; parseSpecialTokens: boolean }): Promise<number[]> {
    return this.call({ op: 'text', text, addSpecialTokens: opts.addSpecialTokens ?? true, parseSpecialTokens: opts.parseSpecialTokens });
  }

  /** Chat messages -> rendered with the chat template -> ids; contents are text unless `parseSpecialTokens`. */
  encodeChat(messages: ChatMessage[], opts: { parseSpecialTokens: boolean }): Promise<number[]> {
    return this.call({ op: 'chat', messages, parseSpecialTokens: opts.parseSpecialTokens });
  }

  get numPending(): number {
    return this.pending.size;
  }

  /** Idempotent. Pending requests fail with DRAINING. */
  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = null;
    this.failAll(new TesseraError('DRAINING', 'the tokenizer thread is shut down'));
    if (worker) await worker.terminate();
  }

  private call(request: WithoutId<TokenizerRequest>): Promise<number[]> {
    if (this.closed) return Promise.reject(new TesseraError('DRAINING', 'the tokenizer thread is shut down'));
    const maxPending = this.opts.maxPending ?? 256;
    if (this.pending.size >= maxPending) {
      return Promise.reject(new TesseraError('QUEUE_FULL', `prompts waiting to be tokenized must be at most ${maxPending}. Given: ${this.pending.size + 1}; retry with backoff`));
    }
    const id = this.nextId++;
    // Counted as pending at once (before the thread is known to be up), so the bound holds for calls made together.
    return new Promise<number[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ensureWorker().then(
        (worker) => {
          if (this.pending.has(id)) worker.postMessage({ ...request, id } as TokenizerRequest);
        },
        (err: unknown) => {
          if (this.pending.delete(id)) reject(err);
        },
      );
    });
  }

  private ensureWorker(): Promise<Worker> {
    if (this.worker) return Promise.resolve(this.worker);
    this.starting ??= new Promise<Worker>((resolve, reject) => {
      const worker = startTsWorker(new URL('./tokenizer-worker.ts', import.meta.url), { modelDir: this.opts.modelDir, vocabSize: this.opts.vocabSize });
      worker.unref();
      let ready = false;
      worker.on('message', (reply: TokenizerReply) => {
        if (reply.id === -1) {
          if ('ready' in reply) {
            ready = true;
            this.worker = worker;
            this.starting = null;
            resolve(worker);
          } else if ('error' in reply) {
            this.starting = null;
            void worker.terminate();
            reject(new TesseraError(reply.error.code, reply.error.message));
          }
          return;
        }
        const waiter = this.pending.get(reply.id);
        if (!waiter) return;
        this.pending.delete(reply.id);
        if ('ids' in reply) waiter.resolve(Array.from(reply.ids));
        else if ('error' in reply) waiter.reject(new TesseraError(reply.error.code, reply.error.message));
      });
      worker.on('error', (err) => {
        if (!ready) {
          this.starting = null;
          reject(new TesseraError('INTERNAL', `tokenizer thread failed to start: ${err.message}`, { cause: err }));
        }
      });
      worker.on('exit', () => {
        if (this.worker === worker) this.worker = null;
        if (ready) this.failAll(new TesseraError('INTERNAL', 'the tokenizer thread stopped while tokenizing; retry'));
      });
    });
    return this.starting;
  }

  private failAll(err: TesseraError): void {
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const w of waiters) w.reject(err);
  }
}
