import type { FinishReason, GeneratedToken, GenerationEvent } from '../request.ts';

export interface CollectedGeneration {
  events: GenerationEvent[];
  tokens: GeneratedToken[];
  tokenIds: number[];
  /** Concatenated 'tokens' texts. */
  streamedText: string;
  finish: Extract<GenerationEvent, { type: 'finish' }>;
  reason: FinishReason;
}

/** Reads a generation stream to its end; throws if it breaks the protocol ('tokens'..., then exactly one 'finish'). */
export async function collect(stream: AsyncIterable<GenerationEvent>): Promise<CollectedGeneration> {
  const events: GenerationEvent[] = [];
  for await (const e of stream) {
    if (events.at(-1)?.type === 'finish') throw new Error('event after finish');
    events.push(e);
  }
  const finish = events.at(-1);
  if (finish?.type !== 'finish') throw new Error('stream ended without a finish event');
  const tokens = events.flatMap((e) => (e.type === 'tokens' ? e.tokens : []));
  return {
    events,
    tokens,
    tokenIds: tokens.map((t) => t.tokenId),
    streamedText: events.map((e) => (e.type === 'tokens' ? e.text : '')).join(''),
    finish,
    reason: finish.reason,
  };
}
