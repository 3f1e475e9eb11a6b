/**
 * The closed-loop generator for llama.cpp: one context with a sequence per stream (node-llama-cpp batches the
 * sequences' pending tokens into shared llama_decode calls, llama.cpp's continuous batching), greedy decoding, the
 * end-of-generation token not treated as a stop (as Tessera's ignore_eos), exactly `outputTokens` tokens per request.
 */
import type { Generate } from '../closed-loop.ts';
import type { LlamaModel } from './node-llama-cpp.ts';

export interface LlamaStreams {
  generate: Generate;
  close(): Promise<void>;
}

export async function openLlamaStreams(model: LlamaModel, opts: { numStreams: number; tokensPerStream: number; threads: number; outputTokens: number }): Promise<LlamaStreams> {
  const context = await model.createContext({ contextSize: opts.tokensPerStream, sequences: opts.numStreams, threads: opts.threads });
  const sequences = Array.from({ length: opts.numStreams }, () => context.getSequence());
  const generate: Generate = async (prompt, stream) => {
    const sequence = sequences[stream];
    await sequence.clearHistory();
    const startMs = performance.now();
    let firstTokenMs = 0;
    let outputTokens = 0;
    for await (const _token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      if (outputTokens === 0) firstTokenMs = performance.now();
      if (++outputTokens >= opts.outputTokens) break;
    }
    if (outputTokens !== opts.outputTokens) throw new Error(`llama.cpp stopped after ${outputTokens} of ${opts.outputTokens} tokens`);
    return { startMs, firstTokenMs, endMs: performance.now(), outputTokens };
  };
  return {
    generate,
    async close() {
      for (const s of sequences) s.dispose();
      await context.dispose();
    },
  };
}
