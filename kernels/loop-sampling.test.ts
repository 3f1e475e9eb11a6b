import * as ort from 'onnxruntime-node';
import { expect, test } from 'vitest';
import { serializeModel } from '../src/model/graph/onnx-serialize.ts';
import { gumbelNoise, uniformRef } from './loop-sampling.ts';
import { OnnxGraph } from './onnx-graph.ts';

test('the graph random stream equals the host reference bit for bit (before the float log)', async () => {
  const g = new OnnxGraph('noise');
  g.input('seed', 'int64', ['batch', 1]);
  g.input('position', 'int64', ['batch', 1]);
  g.input('vocab', 'int64', [1, 'vocab']);
  g.node('Identity', [gumbelNoise(g, 'seed', 'position', 'vocab', 'n')], { outputs: ['noise'] });
  g.output('noise', 'float32', ['batch', 'vocab']);
  const session = await ort.InferenceSession.create(serializeModel(g, null));
  const seeds = [0, 1, 2 ** 53 - 1, 987654321];
  const positions = [0, 5, 70000, 3];
  const vocab = 300;
  const out = await session.run({
    seed: new ort.Tensor('int64', BigInt64Array.from(seeds, BigInt), [4, 1]),
    position: new ort.Tensor('int64', BigInt64Array.from(positions, BigInt), [4, 1]),
    vocab: new ort.Tensor('int64', BigInt64Array.from({ length: vocab }, (_, v) => BigInt(v)), [1, vocab]),
  });
  const noise = out.noise.data as Float32Array;
  for (let b = 0; b < 4; b++) {
    for (let v = 0; v < vocab; v++) {
      const expected = -Math.log(-Math.log(uniformRef(seeds[b], positions[b], v)));
      expect(Math.abs(noise[b * vocab + v] - expected)).toBeLessThan(1e-4 * Math.max(1, Math.abs(expected)));
    }
  }
  await session.release();
});

test('the stream is uniform and neighbouring draws are uncorrelated (seeds, positions, vocab entries)', () => {
  const buckets = new Array<number>(32).fill(0);
  let n = 0;
  let lagVocab = 0;
  for (const seed of [0, 7, 2 ** 40 + 3]) {
    for (let t = 0; t < 8; t++) {
      let prev = uniformRef(seed, t, 0);
      for (let v = 1; v < 2048; v++) {
        const u = uniformRef(seed, t, v);
        expect(u).toBeGreaterThan(0);
        expect(u).toBeLessThan(1);
        buckets[Math.floor(u * 32)]++;
        lagVocab += (u - 0.5) * (prev - 0.5);
        prev = u;
        n++;
      }
    }
  }
  const expected = n / 32;
  const chi2 = buckets.reduce((a, c) => a + (c - expected) ** 2 / expected, 0);
  // 31 degrees of freedom: p = 0.001 at 61.1; a lattice (too even) would sit far below 10.
  expect(chi2).toBeLessThan(61.1);
  expect(chi2).toBeGreaterThan(10);
  expect(Math.abs((lagVocab / n) * 12)).toBeLessThan(0.03);
  let lagSeed = 0;
  let lagPosition = 0;
  for (let i = 0; i < 4000; i++) {
    lagSeed += (uniformRef(i, 9, i % 7) - 0.5) * (uniformRef(i + 1, 9, i % 7) - 0.5);
    lagPosition += (uniformRef(42, i, i % 7) - 0.5) * (uniformRef(42, i + 1, i % 7) - 0.5);
  }
  expect(Math.abs((lagSeed / 4000) * 12)).toBeLessThan(0.06);
  expect(Math.abs((lagPosition / 4000) * 12)).toBeLessThan(0.06);
});

test('Gumbel-max over the stream draws tokens with softmax(logits / T) probabilities', () => {
  const logits = [2, 1, 0, -1];
  const temperature = 0.8;
  const weights = logits.map((l) => Math.exp(l / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  const counts = new Array<number>(4).fill(0);
  const draws = 20000;
  for (let t = 0; t < draws; t++) {
    let best = 0;
    let bestScore = -Infinity;
    logits.forEach((l, v) => {
      const score = l / temperature - Math.log(-Math.log(uniformRef(11, t, v)));
      if (score > bestScore) [best, bestScore] = [v, score];
    });
    counts[best]++;
  }
  counts.forEach((c, v) => {
    const p = weights[v] / total;
    const sd = Math.sqrt((draws * p * (1 - p)));
    expect(Math.abs(c - draws * p)).toBeLessThan(4 * sd);
  });
});
