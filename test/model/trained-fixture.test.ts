/**
 * The trained fixture (`npm run fixtures:trained`, cached under ~/.cache/tessera/trained) through Tessera: the
 * checkpoint loads through the normal --model path (config.json, model.safetensors, tokenizer.json converted to fp32),
 * the PEFT adapters load through the adapter manager, and Tessera's forward pass gives the trainer's float32 held-out
 * loss within 1e-3 nats/token on every domain, base and adapters; and three tenants' language adapters served at once
 * to 16 streams give each tenant the held-out loss its adapter gives alone (int4, the served precision). Skipped when
 * the fixture has not been built.
 */
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { findTrainedFixture } from '../../bench/lib/trained-fixture.ts';
import { measureTenants } from '../../bench/lib/trained-tenants.ts';
import { resolveModelDir } from '../../src/cli/model-resolver.ts';
import { openScoringSession } from '../../src/cli/scoring-session.ts';
import { meanNll, type ScoredWindow } from '../../src/engine/scoring/teacher-forced-loss.ts';
import { loadTokenizer } from '../../src/model/tokenizer/tokenizer.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const TOLERANCE_NATS = 1e-3;
const fixture = findTrainedFixture();

describe.skipIf(fixture === null)('trained fixture: Tessera fp32 == the trainer\'s held-out loss', () => {
  test('base on every domain and every adapter on its own language, all in the same batches, within 1e-3', async () => {
    const f = fixture!;
    const modelDir = await resolveModelDir({ model: f.baseDir, quant: 'fp32', cacheRoot: tempDir('trained-fixture') });
    expect(loadTokenizer(modelDir)?.vocabSize).toBe(f.manifest.tokenizer.vocabTokens);
    const session = await openScoringSession({ modelDir, numAdapterSlots: f.manifest.adapters.length + 1, maxAdapterRank: 16, adapterRoots: [path.join(f.dir, 'adapters')] });
    try {
      const runs: Array<{ label: string; expected: number; windows: ScoredWindow[] }> = [];
      for (const [domain, expected] of Object.entries(f.manifest.base.heldoutLoss)) {
        runs.push({ label: `base on ${domain}`, expected, windows: f.heldout(domain).windows.map((tokenIds) => ({ tokenIds, adapterSlot: 0 })) });
      }
      for (const a of f.manifest.adapters) {
        const slot = await session.loadAdapter(a.name, f.adapterDir(a.name), a.domain);
        runs.push({ label: `${a.name} on ${a.domain}`, expected: a.heldoutLoss, windows: f.heldout(a.domain).windows.map((tokenIds) => ({ tokenIds, adapterSlot: slot })) });
      }
      const nll = await session.score(runs.flatMap((r) => r.windows), { maxWindowsPerStep: 64 });
      let at = 0;
      const got = runs.map((r) => {
        const loss = meanNll(nll.slice(at, (at += r.windows.length)));
        return { label: r.label, loss, expected: r.expected, diff: Math.abs(loss - r.expected) };
      });
      for (const g of got) expect(g.diff, `${g.label}: Tessera ${g.loss}, trainer ${g.expected}`).toBeLessThanOrEqual(TOLERANCE_NATS);
      // the adapters learned their languages: each beats the base on its own held-out text
      for (const a of f.manifest.adapters) expect(a.heldoutLoss).toBeLessThan(a.baseHeldoutLoss);
    } finally {
      await session.shutdown();
    }
  });

  // Rows are bit-identical alone and batched on the CPU serving path (test/model/batch-invariance.test.ts): fp32 applies
  // adapters with the per-row gather kernel, quantized models with the packed-by-adapter kernel, whose shapes do not
  // depend on the batch (kernels/multi-lora-packed.ts). (Its column-packed predecessor moved an adapter row's nll by
  // 4.5e-3 on int4 between a one-row step and a shared one: this test caught it.)
  for (const { quant, perPrediction } of [
    { quant: 'fp32', perPrediction: 0 },
    { quant: 'int4', perPrediction: 0 },
    { quant: 'int8', perPrediction: 0 },
  ] as const) {
    test(`three tenants at once, 16 streams (${quant}): each tenant's held-out loss equals its adapter served alone`, async () => {
      const f = fixture!;
      const modelDir = await resolveModelDir({ model: f.baseDir, quant, cacheRoot: tempDir(`trained-fixture-${quant}`) });
      const session = await openScoringSession({ modelDir, numAdapterSlots: 4, maxAdapterRank: 16, adapterRoots: [path.join(f.dir, 'adapters')] });
      try {
        const r = await measureTenants(session, f, ['de-r16', 'fr-r8', 'es-r16'], { streams: 16, windowsPerTenant: 6 });
        for (const t of r.tenants) {
          expect(t.maxAbsNllDiff, `${t.adapter}: largest per-prediction difference`).toBeLessThanOrEqual(perPrediction);
          expect(Math.abs(t.batchedLoss - t.aloneLoss), `${t.adapter}: tenant loss, 16 streams vs alone`).toBeLessThanOrEqual(1e-4);
          expect(t.batchedLoss).toBeLessThan(t.baseLoss); // each row got its tenant's adapter, not the base model
        }
      } finally {
        await session.shutdown();
      }
    });
  }
});
