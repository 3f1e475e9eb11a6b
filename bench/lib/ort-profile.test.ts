import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { shardPositions } from '../../src/parallel/shard-layout.ts';
import type { RunPhasesMs } from '../../src/model/runner/host-kv-batch.ts';
import { WholeModelShardRunner } from '../../src/parallel/whole-model-shard-runner.ts';
import { BenchModels } from './bench-models.ts';
import { breakdown, nodeRole, parseOrtProfile, readOrtProfiles } from './ort-profile.ts';
import { INT4 } from './quant-variants.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-ort-profile-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('ORT profiles', () => {
  test('node events go to the run that holds them; breakdowns reduce each node over runs, less a floor per node, then sum', () => {
    const node = (name: string, op: string, ts: number, dur: number) => ({ cat: 'Node', name: `${name}_kernel_time`, ts, dur, args: { op_name: op } });
    const events = [
      { cat: 'Session', name: 'model_run', ts: 1000, dur: 100 },
      { cat: 'Session', name: 'model_run', ts: 100, dur: 100 }, // out of order in the file
      node('a', 'MatMul', 110, 40),
      node('b', 'Add', 160, 10),
      { cat: 'Node', name: 'a_fence_before', ts: 109, dur: 0 },
      node('a', 'MatMul', 1010, 60),
      node('b', 'Add', 1080, 12),
      node('stray', 'Add', 500, 5), // between runs: ignored
      { cat: 'Session', name: 'model_run', ts: 2000, dur: 400 },
      node('a', 'MatMul', 2010, 300), // a stalled run
      node('b', 'Add', 2350, 11),
    ];
    const runs = parseOrtProfile(events);
    expect(runs.map((r) => r.durationUs)).toEqual([100, 100, 400]);
    expect(runs[0].nodes).toEqual([{ name: 'a', opType: 'MatMul', startUs: 110, durationUs: 40 }, { name: 'b', opType: 'Add', startUs: 160, durationUs: 10 }]);
    const b = breakdown(runs, (n) => n.opType, 2);
    expect(b.runs).toBe(3);
    expect(b.runMs).toBe(0.1);
    expect(b.costs.map((c) => [c.key, c.msPerRun, c.nodesPerRun])).toEqual([['MatMul', 0.058, 1], ['Add', 0.009, 1]]); // medians of (38, 58, 298), (8, 10, 9)
    expect(b.nodesMs).toBeCloseTo(0.067, 9);
    // gaps (before a, before b, after b): run 1 (10, 10, 30), run 2 (10, 10, 8), run 3 (10, 40, 39); medians 10 + 10 + 30
    expect(b.betweenMs).toBeCloseTo(0.05, 9);
    const fastest = breakdown(runs, (n) => n.opType, 0, (xs) => Math.min(...xs));
    expect(fastest.costs.map((c) => [c.key, c.msPerRun])).toEqual([['MatMul', 0.04], ['Add', 0.01]]);
    expect(fastest.runMs).toBe(0.1);
    expect(fastest.betweenMs).toBeCloseTo(0.028, 9);
    const byName = breakdown(runs, (n) => n.name);
    expect(byName.costs.map((c) => c.key)).toEqual(['a', 'b']);
    expect(() => breakdown([])).toThrow(/no profiled runs/);
    expect(() => parseOrtProfile({ events: [] })).toThrow(/JSON array/);
  });

  test('layer indices fold in node names', () => {
    expect(nodeRole('node_l12_attn_scores')).toBe('node_l{N}_attn_scores');
    expect(nodeRole('node_model.layers.3.mlp.down_proj')).toBe('node_model.layers.{N}.mlp.down_proj');
    expect(nodeRole('node_lm_head')).toBe('node_lm_head');
  });

  test('a real profile of the tiny model: every run profiled, its op types, kernels inside the run', async () => {
    const models = new BenchModels({ cacheDir: path.join(dir, 'cache') });
    try {
      const model = await models.converted('tiny', INT4);
      const prefix = path.join(dir, 'tiny');
      const phases: RunPhasesMs[] = [];
      const spec = { modelDir: model.dir, position: shardPositions(model.manifest.config, 1, 1)[0], numKvBlocks: 8, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 1, runnerKind: 'host-kv' as const };
      const runner = await WholeModelShardRunner.create(spec, { sessionOptions: { enableProfiling: true, profileFilePrefix: prefix }, onRunPhases: (p) => phases.push(p) });
      try {
        for (let i = 0; i < 3; i++) {
          await runner.run({ stepId: i, segment: { kind: 'stage', layer: 0 }, rows: [{ seqId: i + 1, tokenIds: [3, 4, 5, 6], startPosition: 0, blockTable: [i], adapterSlot: 0, sampleNext: true }], hidden: null });
        }
      } finally {
        await runner.release();
      }
      expect(phases).toHaveLength(3);
      for (const p of phases) for (const v of [p.inputsMs, p.runMs, p.outputsMs]) expect(v).toBeGreaterThanOrEqual(0);
      const sessions = readOrtProfiles(prefix);
      expect(sessions).toHaveLength(1); // no adapter row: the base graph's session only
      const runs = sessions[0];
      expect(runs).toHaveLength(3);
      const b = breakdown(runs);
      expect(b.costs.map((c) => c.key)).toContain('MatMulNBits');
      expect(b.nodesPerRun).toBeGreaterThan(20);
      for (const r of runs) expect(r.nodes.reduce((a, n) => a + n.durationUs, 0)).toBeLessThanOrEqual(r.durationUs);
    } finally {
      models.cleanup();
    }
  });
});
