/**
 * Several tenants' trained adapters served at once: each tenant's held-out windows (its own language) scored with
 * `streams` windows in flight per step, tenants interleaved so every step mixes adapters, then every window again
 * alone (one row per step). Batch invariance on trained weights means both give the same losses.
 */
import type { ScoringSession } from '../../src/cli/scoring-session.ts';
import { meanNll, type ScoredWindow, type WindowNll } from '../../src/engine/scoring/teacher-forced-loss.ts';
import type { TrainedFixture } from './trained-fixture.ts';

export interface TenantRun {
  tenant: string;
  adapter: string;
  windows: number;
  baseLoss: number;
  /** Loss with `streams` windows of all tenants in flight per step. */
  batchedLoss: number;
  aloneLoss: number;
  /** Largest |batched - alone| over every prediction of the tenant's windows, nats. */
  maxAbsNllDiff: number;
}

export interface TenantsResult {
  streams: number;
  tenants: TenantRun[];
  /** Wall time and predictions per second of the batched pass and of the one-at-a-time pass. */
  batchedMs: number;
  aloneMs: number;
  predictions: number;
}

/** Loads each adapter for its tenant (tenant = the adapter's domain) and scores `windowsPerTenant` windows each. */
export async function measureTenants(session: ScoringSession, fixture: TrainedFixture, adapters: string[], opts: { streams: number; windowsPerTenant: number }): Promise<TenantsResult> {
  const entries = adapters.map((name) => {
    const e = fixture.manifest.adapters.find((a) => a.name === name);
    if (!e) throw new Error(`trained fixture has no adapter ${name}`);
    return e;
  });
  const slots: number[] = [];
  for (const e of entries) slots.push(await session.loadAdapter(e.name, fixture.adapterDir(e.name), e.domain));
  const perTenant = entries.map((e) => fixture.heldout(e.domain).windows.slice(0, opts.windowsPerTenant));
  // interleaved: de, fr, es, de, fr, es, ... so every step of `streams` rows mixes the tenants
  const order: Array<{ tenant: number; window: number }> = [];
  for (let w = 0; w < opts.windowsPerTenant; w++) entries.forEach((_, t) => order.push({ tenant: t, window: w }));
  const scored: ScoredWindow[] = order.map((o) => ({ tokenIds: perTenant[o.tenant][o.window], adapterSlot: slots[o.tenant] }));

  let t0 = performance.now();
  const batched = await session.score(scored, { maxWindowsPerStep: opts.streams });
  const batchedMs = performance.now() - t0;
  t0 = performance.now();
  const alone: WindowNll[] = [];
  for (const s of scored) alone.push(...(await session.score([s], { maxWindowsPerStep: 1 })));
  const aloneMs = performance.now() - t0;
  const base = await session.score(scored.map((s) => ({ ...s, adapterSlot: 0 })), { maxWindowsPerStep: opts.streams });

  const tenants: TenantRun[] = entries.map((e, t) => {
    const idx = order.flatMap((o, i) => (o.tenant === t ? [i] : []));
    let maxAbsNllDiff = 0;
    for (const i of idx) batched[i].nll.forEach((v, k) => (maxAbsNllDiff = Math.max(maxAbsNllDiff, Math.abs(v - alone[i].nll[k]))));
    return {
      tenant: e.domain,
      adapter: e.name,
      windows: idx.length,
      baseLoss: meanNll(idx.map((i) => base[i])),
      batchedLoss: meanNll(idx.map((i) => batched[i])),
      aloneLoss: meanNll(idx.map((i) => alone[i])),
      maxAbsNllDiff,
    };
  });
  for (const e of entries) await session.unloadAdapter(e.name, e.domain);
  return { streams: opts.streams, tenants, batchedMs, aloneMs, predictions: batched.reduce((n, w) => n + w.nll.length, 0) };
}
