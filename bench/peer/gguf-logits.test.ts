/**
 * The GGUF files the peer bench writes mean, to llama.cpp, the model Tessera serves: llama.cpp's next-token
 * distribution from the F32 file (F32 KV cache, no flash attention) matches kernels/reference on the same checkpoint and token ids at every
 * position, and Q8_0 (with llama.cpp's default F16 KV cache and flash attention) stays close. Needs node-llama-cpp in bench/peer (installed by `npm run bench -- --only peer`);
 * skipped without it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ReferenceModel } from '../../kernels/reference/llama-reference.ts';
import { openCheckpoint } from '../../src/model/checkpoint/checkpoint.ts';
import { makeModel } from '../../src/model/checkpoint/make-model.ts';
import { compareLogits } from '../../src/model/quantization/quality.ts';
import { writeLlamaGguf } from '../lib/gguf/llama-gguf.ts';
import { loadLlama, peerInstalled, type Llama } from '../lib/llama-peer/node-llama-cpp.ts';
import { nextTokenLogProbs } from '../lib/llama-peer/llama-quality.ts';
import { openLlamaStreams } from '../lib/llama-peer/llama-streams.ts';
import { runClosedLoop } from '../lib/closed-loop.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-gguf-peer-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!peerInstalled())('llama.cpp on the GGUF writer output (tiny model, node-llama-cpp)', async () => {
  const hfDir = path.join(dir, 'hf');
  await makeModel({ preset: 'tiny', outDir: hfDir, numAdapters: 0, seed: 3 });
  const checkpoint = openCheckpoint(hfDir);
  const config = checkpoint.config;
  const reference = new ReferenceModel(config, (name) => checkpoint.tensors.readFloat32(name));
  checkpoint.tensors.close();
  // Ids across the whole vocabulary, tokenizer padding rows included.
  const prompt = Array.from({ length: 40 }, (_, i) => (i * 97 + 11) % config.vocabSize);
  const vocab = config.vocabSize;
  const referenceLogProbs = toLogProbs(reference.prefill(prompt).subarray(0, (prompt.length - 1) * vocab), vocab); // [L - 1, vocab]
  let llama: Llama;
  afterAll(() => llama?.dispose());

  async function llamaLogProbs(type: 'F32' | 'Q8_0'): Promise<Float32Array> {
    const file = path.join(dir, `tiny-${type}.gguf`);
    writeLlamaGguf({ hfDir, outFile: file, type });
    llama ??= await loadLlama({ maxThreads: 1 }); // one thread: the suite runs other files beside it
    // Rows after tokens 0 .. L-2 (fromTokens 1), the reference's rows 0 .. L-2.
    return nextTokenLogProbs(llama, file, [prompt], 1, { vocabSize: vocab, threads: 1, exact: type === 'F32' });
  }

  test('F32: the same next-token log-probabilities as the reference forward pass at every position', async () => {
    const c = compareLogits(referenceLogProbs, await llamaLogProbs('F32'), vocab);
    expect(c.positions).toBe(prompt.length - 1);
    expect(c.top1Agreement).toBe(1);
    expect(c.maxAbsDiff).toBeLessThan(2e-4); // 1e-5 seen: float32 both sides
    expect(c.meanKl).toBeLessThan(1e-8);
  });

  test('Q8_0: close to the reference (int8 blocks of 32)', async () => {
    const c = compareLogits(referenceLogProbs, await llamaLogProbs('Q8_0'), vocab);
    expect(c.meanKl).toBeGreaterThan(0);
    expect(c.meanKl).toBeLessThan(0.02);
    expect(c.top1Agreement).toBeGreaterThanOrEqual(0.9);
  });

  test('the bench workload on llama.cpp: concurrent streams, exactly the asked tokens each, end of sequence ignored', async () => {
    const file = path.join(dir, 'tiny-Q8_0.gguf');
    if (!fs.existsSync(file)) writeLlamaGguf({ hfDir, outFile: file, type: 'Q8_0' });
    llama ??= await loadLlama({ maxThreads: 1 }); // one thread: the suite runs other files beside it
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    try {
      const streams = await openLlamaStreams(model, { numStreams: 2, tokensPerStream: 8 + 24, threads: 1, outputTokens: 24 });
      try {
        // Prompts of end-of-sequence tokens make it likely early; generation must go on regardless.
        const prompts = [Array(8).fill(config.eosTokenIds[0]), prompt.slice(0, 8), prompt.slice(8, 16)];
        const result = await runClosedLoop(prompts, 2, streams.generate);
        expect(result.requests.map((r) => r.outputTokens)).toEqual([24, 24, 24]);
        for (const r of result.requests) expect(r.startMs <= r.firstTokenMs && r.firstTokenMs <= r.endMs).toBe(true);
      } finally {
        await streams.close();
      }
    } finally {
      await model.dispose();
    }
  });
});

/** Rows of logits -> rows of log-softmax (so maxAbsDiff compares log-probabilities). */
function toLogProbs(logits: Float32Array, vocab: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length / vocab; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    const logZ = max + Math.log(sum);
    for (let v = 0; v < vocab; v++) out[r * vocab + v] = row[v] - logZ;
  }
  return out;
}
