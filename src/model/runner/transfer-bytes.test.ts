import { describe, expect, test } from 'vitest';
import { loraFeatureSum, transferBytesPerToken, type TransferShape } from './transfer-bytes.ts';

const small: TransferShape = { numLayers: 30, numKvHeads: 3, headDim: 64, hiddenSize: 576, intermediateSize: 1536, numHeads: 9, vocabSize: 49152 };
const base = { streams: 16, contextTokens: 1024, stepsPerRun: 8 };

describe('transferBytesPerToken', () => {
  test('the host-cache design moves each row\'s whole past every token; k steps per run divide that by k', () => {
    const perStep = transferBytesPerToken(small, base, 'host-kv-per-step');
    const pastBytes = 2 * 30 * 3 * 1024 * 64 * 4;
    expect(perStep.upBytes).toBeGreaterThan(pastBytes);
    expect(perStep.upBytes).toBeLessThan(pastBytes * 1.01);
    const k1 = transferBytesPerToken(small, { ...base, stepsPerRun: 1 }, 'loop-k-steps');
    const k8 = transferBytesPerToken(small, base, 'loop-k-steps');
    expect(k1.upBytes / k8.upBytes).toBeCloseTo(8, 6);
    expect(k8.downBytes).toBe(k1.downBytes); // every token's new K/V and sampled id still come back
    expect(k8.downBytes).toBeLessThan(perStep.downBytes); // no logits
  });

  test('the device-resident cache sends only indices and ids: independent of layers, linear in context via the bias', () => {
    const short = transferBytesPerToken(small, { ...base, contextTokens: 128 }, 'device-kv');
    const long = transferBytesPerToken(small, base, 'device-kv');
    const deeper = transferBytesPerToken({ ...small, numLayers: 60 }, base, 'device-kv');
    expect(deeper.upBytes).toBe(long.upBytes);
    expect(long.upBytes - short.upBytes).toBe((1024 - 128) * 4 + (64 - 8) * 8);
    expect(long.downBytes).toBe(49152 * 4 + 4);
    expect(transferBytesPerToken(small, base, 'device-kv-sampled').downBytes).toBe(12);
  });

  test('adapter stacks: every A/B of every layer and target, uploaded per run in the host designs only', () => {
    expect(loraFeatureSum(small)).toBe(30 * (576 + 576 + 576 + 192 + 576 + 192 + 576 + 576 + 3 * (576 + 1536)));
    const withAdapters = { ...base, adapterSlots: 8, maxAdapterRank: 16 };
    const stacks = 8 * loraFeatureSum(small) * 16 * 4;
    const hostDelta = transferBytesPerToken(small, withAdapters, 'host-kv-per-step').upBytes - transferBytesPerToken(small, base, 'host-kv-per-step').upBytes;
    expect(hostDelta).toBeCloseTo(stacks / 16 + 12, 6);
    const deviceDelta = transferBytesPerToken(small, withAdapters, 'device-kv').upBytes - transferBytesPerToken(small, base, 'device-kv').upBytes;
    expect(deviceDelta).toBe(12);
  });
});
