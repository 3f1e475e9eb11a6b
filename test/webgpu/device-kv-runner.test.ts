import protobuf from 'protobufjs';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { SequenceWork, StepResult } from '../../src/engine/executor.ts';
import { logSumExp } from '../../src/engine/sampler/sampler.ts';
import { readManifest, type QuantKind } from '../../src/model/converted-model.ts';
import { DeviceKvRunner } from '../../src/model/runner/device-kv-runner.ts';
import { ModelRunner, type Device } from '../../src/model/runner/model-runner.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

/**
 * DeviceKvRunner (KV cache and LoRA stacks kept as device state, kernels/paged-kv-device.ts) against ModelRunner on the
 * CPU execution provider (host paged cache): same plans, same logits within a tolerance, same greedy tokens.
 * The 'cpu' variant checks the rewritten graphs everywhere (default suite); the 'webgpu' variant needs a WebGPU adapter
 * (Mesa lavapipe here: `npm run test:webgpu` installs it) and runs when TESSERA_TEST_DEVICE names webgpu.
 */
const deviceList = (process.env.TESSERA_TEST_DEVICE ?? '').split(',').filter((d) => d !== '');

/** Max |logit difference| allowed, by device and quantization (measured margins in docs/gpu.md). */
const TOLERANCE: Record<string, number> = {
  'cpu/fp32': 1e-5,
  'cpu/int4': 1e-5,
  'webgpu/fp32': 1e-3,
  // With MatMulNBits at accuracy_level 0 on both sides (float activations). At the converted graphs' level 4 both
  // providers quantize activations to int8, each in its own way, and their logits differ by up to ~0.3 on this model.
  'webgpu/int4': 1e-3,
};

/**
 * A copy of a converted model whose MatMulNBits nodes use accuracy_level 0 (float activations over the same int4
 * weights, on CPU and WebGPU alike), so the int4 device path can be held to a float tolerance.
 */
function withAccuracyLevel0(convertedDir: string): string {
  const dir = tempDir('acc0');
  cpSync(convertedDir, dir, { recursive: true });
  const manifest = readManifest(dir);
  const type = protobuf.loadSync(fileURLToPath(new URL('../../src/model/graph/onnx-subset.proto', import.meta.url))).lookupType('tessera.onnx.ModelProto');
  for (const file of [manifest.graphs.base, manifest.graphs.lora]) {
    const model = type.toObject(type.decode(readFileSync(join(dir, file))), { longs: Number }) as { graph: { node: Array<{ opType: string; attribute?: Array<{ name: string; i?: number }> }> } };
    let changed = 0;
    for (const node of model.graph.node) {
      if (node.opType !== 'MatMulNBits') continue;
      for (const attr of node.attribute ?? []) if (attr.name === 'accuracy_level') {
        attr.i = 0;
        changed++;
      }
    }
    expect(changed).toBeGreaterThan(0);
    writeFileSync(join(dir, file), type.encode(type.fromObject(model)).finish());
  }
  return dir;
}

const BLOCK = 8;

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function topTwoMargin(row: Float32Array): number {
  const best = argmax(row);
  let second = -Infinity;
  for (let i = 0; i < row.length; i++) if (i !== best && row[i] > second) second = row[i];
  return row[best] - second;
}

function rowOf(result: StepResult, seqId: number): Float32Array {
  const outcome = result.outcomes.find((o) => o.seqId === seqId)!;
  expect(outcome.error).toBeUndefined();
  return result.logits.subarray(outcome.logitsRow * result.vocabSize, (outcome.logitsRow + 1) * result.vocabSize);
}

const cases: Array<{ device: Device; quant: QuantKind }> = [
  { device: 'cpu', quant: 'fp32' },
  { device: 'webgpu', quant: 'fp32' },
  { device: 'webgpu', quant: 'int4' },
];

for (const { device, quant } of cases) {
  describe.runIf(device === 'cpu' || deviceList.includes(device))(`DeviceKvRunner on ${device} == ModelRunner on cpu (${quant})`, async () => {
    const { hf, convertedDir } = await tinyModel({ quant, numAdapters: 2 });
    const vocab = hf.config.vocabSize;
    const adapters = hf.adapterDirs.map((dir) => readPeftAdapter(dir, hf.config));
    const tolerance = TOLERANCE[`${device}/${quant}`];
    const modelDir = device !== 'cpu' && quant === 'int4' ? withAccuracyLevel0(convertedDir) : convertedDir;
    const options = { modelDir, kvCacheBytes: 4 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 3, maxAdapterRank: 16 };

    test('several adapters in one batch: chunked prefill, mixed prefill + decode steps, 6 greedy steps: same tokens, logits within tolerance', async () => {
      // packedLora: false: the device runner applies adapters with the exact gather graph, so the reference does too.
      const reference = await ModelRunner.create({ ...options, device: 'cpu', packedLora: false });
      const runner = await DeviceKvRunner.create({ ...options, device });
      reference.loadAdapterSlot(1, adapters[0]);
      reference.loadAdapterSlot(2, adapters[1]);
      await runner.loadAdapterSlot(1, adapters[0]);
      await runner.loadAdapterSlot(2, adapters[1]);
      if (device === 'webgpu') expect([...runner.stateLocations()]).toEqual(['gpu-buffer']);

      // Row 0: base, 9-token prompt. Row 1: adapter 1, 20-token prompt in chunks of 12 and 8 (second chunk has past).
      // Row 2: adapter 2, 3-token prompt that joins one step later while row 0 decodes.
      const prompts = [[3, 17, 42, 5, 99, 7, 250, 11, 64], Array.from({ length: 20 }, (_, i) => (i * 37 + 11) % vocab), [200, 201, 202]];
      const slots = [0, 1, 2];
      const tables = [[0, 1, 2, 3], [4, 5, 6, 7, 8], [9, 10, 11]];
      const position = [0, 0, 0];
      const next: number[] = [-1, -1, -1];
      const work = (seqId: number, tokenIds: number[], sampleNext = true): SequenceWork => ({
        seqId,
        tokenIds,
        startPosition: position[seqId],
        blockTable: tables[seqId],
        adapterSlot: slots[seqId],
        sampleNext,
      });
      const plans: Array<() => SequenceWork[]> = [
        () => [work(0, prompts[0]), work(1, prompts[1].slice(0, 12), false)],
        () => [work(0, [next[0]]), work(1, prompts[1].slice(12)), work(2, prompts[2])],
      ];
      for (let step = 0; step < 6; step++) plans.push(() => [0, 1, 2].map((s) => work(s, [next[s]])));

      let worst = 0;
      let compared = 0;
      let nearTies = 0;
      for (let step = 0; step < plans.length; step++) {
        const sequences = plans[step]();
        const plan = { stepId: step, sequences };
        const expected = await reference.execute(plan);
        const actual = await runner.execute(plan);
        for (const seq of sequences) {
          position[seq.seqId] += seq.tokenIds.length;
          if (!seq.sampleNext) continue;
          const want = rowOf(expected, seq.seqId);
          const got = rowOf(actual, seq.seqId);
          worst = Math.max(worst, maxAbsDiff(got, want));
          compared++;
          // Both runners are fed the reference's greedy token, so they stay in lockstep. The device must pick the same
          // token unless the reference's top two are closer than the logit tolerance (a near-tie, counted).
          next[seq.seqId] = argmax(want);
          if (topTwoMargin(want) > 2 * tolerance) expect(argmax(got), `step ${step} seq ${seq.seqId}`).toBe(next[seq.seqId]);
          else nearTies++;
          // logprob of the chosen token, from the device's in-graph log-sum-exp when it has one
          const gotRow = actual.outcomes.find((o) => o.seqId === seq.seqId)!.logitsRow;
          const lse = actual.logSumExp?.[gotRow] ?? logSumExp(got, vocab);
          expect(Math.abs(got[next[seq.seqId]] - lse - (want[next[seq.seqId]] - logSumExp(want, vocab)))).toBeLessThanOrEqual(2 * tolerance);
        }
      }
      expect(compared).toBe(1 + 3 + 6 * 3);
      console.log(`[${device}/${quant}] max |logit diff| over ${compared} rows: ${worst.toExponential(2)} (tolerance ${tolerance}); near-ties not compared: ${nearTies}`);
      expect(nearTies).toBeLessThanOrEqual(2);
      expect(worst).toBeLessThanOrEqual(tolerance);
      if (device === 'webgpu') expect([...runner.stateLocations()]).toEqual(['gpu-buffer']);
      await runner.release();
      await reference.release();
    });

    test('adapter slots are written on the device: reload and clear change exactly that slot', async () => {
      const runner = await DeviceKvRunner.create({ ...options, device });
      const prompt = [9, 8, 7, 6, 5];
      const once = async (slot: number, seqId: number) => {
        const result = await runner.execute({ stepId: seqId, sequences: [{ seqId, tokenIds: prompt, startPosition: 0, blockTable: [seqId], adapterSlot: slot, sampleNext: true }] });
        return Float32Array.from(rowOf(result, seqId));
      };
      const base = await once(0, 0);
      await runner.loadAdapterSlot(1, adapters[0]);
      await runner.loadAdapterSlot(2, adapters[1]);
      const withFirst = await once(1, 1);
      const withSecond = await once(2, 2);
      expect(maxAbsDiff(withFirst, base)).toBeGreaterThan(10 * tolerance); // the adapters matter
      expect(maxAbsDiff(withSecond, withFirst)).toBeGreaterThan(10 * tolerance);
      await runner.loadAdapterSlot(1, adapters[1]); // reload slot 1 with the second adapter
      expect(maxAbsDiff(await once(1, 3), withSecond)).toBeLessThanOrEqual(tolerance);
      expect(maxAbsDiff(await once(2, 4), withSecond)).toBeLessThanOrEqual(tolerance); // slot 2 untouched
      await runner.clearAdapterSlot(1);
      expect(maxAbsDiff(await once(1, 5), base)).toBeLessThanOrEqual(tolerance);
      await expect(runner.loadAdapterSlot(3, adapters[0])).rejects.toThrow(/`slot` must be an integer in \[1, 2\]. Given: 3/);
      await runner.release();
    });
  });
}
