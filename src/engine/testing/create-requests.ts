import type { SamplingParams, StoppingParams, ValidGenerateRequest } from '../request.ts';

export const GREEDY: SamplingParams = {
  temperature: 0,
  topK: 0,
  topP: 1,
  minP: 0,
  seed: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

export interface CreateRequestsOptions {
  /** Prompt length, fixed or per request index. Default 8. */
  promptTokens?: number | ((i: number) => number);
  /** Prompt ids are drawn from [firstPromptTokenId, vocabSize). Defaults 64 and 2 (0 and 1 stay free for EOS/stop). */
  vocabSize?: number;
  firstPromptTokenId?: number;
  maxNewTokens?: number;
  sampling?: Partial<SamplingParams>;
  stopping?: Partial<StoppingParams>;
  adapterId?: string | null | ((i: number) => string | null);
  tenantId?: string | null;
  topNLogprobs?: number;
  deadlineMs?: number | null;
  requestIdPrefix?: string;
}

/** n distinct, valid requests (greedy by default) with deterministic prompts. */
export function createRequests(n: number, opts: CreateRequestsOptions = {}): ValidGenerateRequest[] {
  const vocab = opts.vocabSize ?? 64;
  const first = opts.firstPromptTokenId ?? 2;
  const span = vocab - first;
  const out: ValidGenerateRequest[] = [];
  for (let i = 0; i < n; i++) {
    const len = typeof opts.promptTokens === 'function' ? opts.promptTokens(i) : (opts.promptTokens ?? 8);
    const promptTokenIds = Array.from({ length: len }, (_, j) => first + ((i * 31 + j * 7 + ((i * j) % 5)) % span));
    out.push({
      requestId: `${opts.requestIdPrefix ?? 'req'}-${i}`,
      promptTokenIds,
      adapterId: typeof opts.adapterId === 'function' ? opts.adapterId(i) : (opts.adapterId ?? null),
      tenantId: opts.tenantId ?? null,
      sampling: { ...GREEDY, seed: i, ...opts.sampling },
      stopping: { maxNewTokens: opts.maxNewTokens ?? 8, stopSequences: [], stopTokenIds: [], ignoreEos: false, ...opts.stopping },
      topNLogprobs: opts.topNLogprobs ?? 0,
      deadlineMs: opts.deadlineMs ?? null,
    });
  }
  return out;
}
