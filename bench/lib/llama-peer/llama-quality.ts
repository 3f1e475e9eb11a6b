/**
 * llama.cpp's next-token distributions over prompt tails, in the layout bench/lib/model-runs.ts `collectTailLogits`
 * uses for Tessera: for prompts of length L, rows after tokens fromTokens-1 .. L-2 of each prompt, prompt-major
 * ([numPrompts * (L - fromTokens), vocab]), as log-probabilities (a row of logits up to a constant, which is all
 * KL and top-1 comparisons need).
 */
import type { Llama, LlamaToken } from './node-llama-cpp.ts';

/** log of a probability llama.cpp reports as 0 (below float32's range): far below any real token. */
const LOG_ZERO = Math.log(1e-30);

export async function nextTokenLogProbs(
  llama: Llama,
  modelFile: string,
  prompts: number[][],
  fromTokens: number,
  /** exact: F32 KV cache and no flash attention (whose CPU path computes in F16); default: llama.cpp's defaults. */
  opts: { vocabSize: number; threads?: number; exact?: boolean },
): Promise<Float32Array> {
  const length = prompts[0]?.length ?? 0;
  if (prompts.some((p) => p.length !== length) || fromTokens < 1 || fromTokens >= length) throw new Error(`prompts must share one length > fromTokens (${fromTokens}) >= 1`);
  const vocab = opts.vocabSize;
  const rowsPerPrompt = length - fromTokens;
  const out = new Float32Array(prompts.length * rowsPerPrompt * vocab).fill(LOG_ZERO);
  const model = await llama.loadModel({ modelPath: modelFile, gpuLayers: 0 });
  try {
    const exact = opts.exact ? { experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false } : {};
    const context = await model.createContext({ contextSize: length, sequences: 1, threads: opts.threads ?? 2, ...exact });
    try {
      const sequence = context.getSequence();
      for (const [p, prompt] of prompts.entries()) {
        await sequence.clearHistory();
        const items = prompt.slice(0, length - 1).map((token, i): LlamaToken | [LlamaToken, { generateNext: { probabilities: true } }] => (i >= fromTokens - 1 ? [token, { generateNext: { probabilities: true } }] : token));
        const results = await sequence.controlledEvaluate(items);
        for (let r = 0; r < rowsPerPrompt; r++) {
          const probabilities = results[fromTokens - 1 + r]?.next.probabilities;
          if (!probabilities) throw new Error(`llama.cpp returned no distribution after token ${fromTokens - 1 + r} of prompt ${p}`);
          const row = out.subarray((p * rowsPerPrompt + r) * vocab, (p * rowsPerPrompt + r + 1) * vocab);
          for (const [token, prob] of probabilities) if (prob > 0) row[token] = Math.log(prob);
        }
      }
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
  return out;
}
