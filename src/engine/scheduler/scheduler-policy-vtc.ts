/**
 * Fair share across tenants: S-LoRA's virtual token counter (VTC), plus an optional per-tenant token-bucket quota.
 *
 *   counter[t] = inputWeight * (prompt tokens admitted for t) + outputWeight * (tokens generated for t)
 *   order: repeatedly take the next request (FCFS within its tenant) of the backlogged tenant with the smallest
 *          counter, adding that request's prompt to a scratch copy of the counter, so one step's order already
 *          interleaves tenants instead of giving a heavy tenant the whole step.
 *   lift:  a tenant that becomes backlogged (had nothing queued at the last call) starts at
 *          max(own counter, min counter of the tenants that were already backlogged): idle time earns no credit.
 *   quota: a tenant whose bucket (refilled at tokensPerSecond, at most burstTokens) is empty is not offered for
 *          admission (its requests stay queued) until the bucket refills; admitted/generated tokens are debited.
 *
 * The policy sees only the waiting queue, so it detects admissions itself: a first-time (never preempted) request
 * that was offered at the previous call and is gone now was admitted (or cancelled, which is charged the same: a
 * small over-charge). Preempted requests keep their place at the front and are not charged again. Generated tokens
 * are charged through chargeOutput (meterOutput wraps an engine event stream to do it).
 */
import type { GenerationEvent } from '../request.ts';
import { TesseraError } from '../../errors.ts';
import type { AdmissionCandidate, AdmissionPolicy } from './admission-policy.ts';

export interface TokenBucketQuota {
  /** Sustained tokens (weighted as the counters) per second. */
  tokensPerSecond: number;
  /** Bucket size; default tokensPerSecond (one second of burst). */
  burstTokens?: number;
}

export interface VtcPolicyOptions {
  /** Default 1. */
  inputWeight?: number;
  /** Default 2 (S-LoRA's choice: decode tokens cost more). */
  outputWeight?: number;
  /** Per-tenant quota ('' = requests without tenant); tenants not listed get `defaultQuota`. */
  quotas?: ReadonlyMap<string, TokenBucketQuota>;
  /** null (default): no quota for unlisted tenants. */
  defaultQuota?: TokenBucketQuota | null;
}

export interface VtcPolicy extends AdmissionPolicy {
  /** Charges generated tokens to a tenant's counter (and quota bucket). */
  chargeOutput(tenantId: string | null, numTokens: number, nowMs: number): void;
  /** Current counters by tenant ('' = no tenant). */
  counters(): ReadonlyMap<string, number>;
}

interface Bucket {
  level: number;
  atMs: number;
  quota: Required<TokenBucketQuota>;
}

const tenantKey = (tenantId: string | null): string => tenantId ?? '';

export function createVtcPolicy(opts: VtcPolicyOptions = {}): VtcPolicy {
  const inputWeight = opts.inputWeight ?? 1;
  const outputWeight = opts.outputWeight ?? 2;
  for (const [field, value] of [['inputWeight', inputWeight], ['outputWeight', outputWeight]] as const) {
    if (!(value >= 0) || !Number.isFinite(value)) throw new TesseraError('CONFIG_INVALID', `\`${field}\` must be a finite number >= 0. Given: ${value}`);
  }
  const quotas = new Map<string, Required<TokenBucketQuota>>();
  const normalize = (q: TokenBucketQuota, who: string): Required<TokenBucketQuota> => {
    const burstTokens = q.burstTokens ?? q.tokensPerSecond;
    if (!(q.tokensPerSecond > 0) || !(burstTokens > 0)) {
      throw new TesseraError('CONFIG_INVALID', `quota of ${who}: \`tokensPerSecond\` and \`burstTokens\` must be > 0. Given: ${JSON.stringify(q)}`);
    }
    return { tokensPerSecond: q.tokensPerSecond, burstTokens };
  };
  for (const [tenant, q] of opts.quotas ?? []) quotas.set(tenant, normalize(q, JSON.stringify(tenant)));
  const defaultQuota = opts.defaultQuota ? normalize(opts.defaultQuota, 'default') : null;

  const counters = new Map<string, number>();
  const buckets = new Map<string, Bucket>();
  /** Requests offered at the last call that had never been preempted: id -> (tenant, prompt tokens). */
  let offered = new Map<string, { tenant: string; tokens: number }>();
  let backlogged = new Set<string>();

  function bucketOf(tenant: string, nowMs: number): Bucket | null {
    let b = buckets.get(tenant);
    if (!b) {
      const quota = quotas.get(tenant) ?? defaultQuota;
      if (!quota) return null;
      b = { level: quota.burstTokens, atMs: nowMs, quota };
      buckets.set(tenant, b);
    }
    const elapsedS = Math.max(0, nowMs - b.atMs) / 1000;
    b.level = Math.min(b.quota.burstTokens, b.level + elapsedS * b.quota.tokensPerSecond);
    b.atMs = nowMs;
    return b;
  }

  function charge(tenant: string, weighted: number, nowMs: number): void {
    counters.set(tenant, (counters.get(tenant) ?? 0) + weighted);
    const b = bucketOf(tenant, nowMs);
    if (b) b.level -= weighted;
  }

  return {
    name: 'vtc',

    chargeOutput(tenantId, numTokens, nowMs) {
      charge(tenantKey(tenantId), outputWeight * numTokens, nowMs);
    },

    counters: () => counters,

    order<T extends AdmissionCandidate>(waiting: readonly T[], nowMs: number): readonly T[] {
      // 1. Admissions since the last call.
      const present = new Set<string>();
      for (const c of waiting) present.add(c.request.requestId);
      for (const [id, o] of offered) if (!present.has(id)) charge(o.tenant, inputWeight * o.tokens, nowMs);

      // 2. Lift tenants that just became backlogged.
      const nowBacklogged = new Set<string>();
      for (const c of waiting) nowBacklogged.add(tenantKey(c.request.tenantId));
      let minActive = Infinity;
      for (const t of backlogged) if (nowBacklogged.has(t)) minActive = Math.min(minActive, counters.get(t) ?? 0);
      if (minActive < Infinity) {
        for (const t of nowBacklogged) if (!backlogged.has(t)) counters.set(t, Math.max(counters.get(t) ?? 0, minActive));
      }
      backlogged = nowBacklogged;

      // 3. Order: preempted first (as queued), then VTC interleaving over tenants with quota left.
      const out: T[] = [];
      const queues = new Map<string, T[]>();
      for (const c of waiting) {
        if (c.numPreemptions > 0) {
          out.push(c);
          continue;
        }
        const t = tenantKey(c.request.tenantId);
        const b = bucketOf(t, nowMs);
        if (b !== null && b.level <= 0) continue; // over quota: stays queued
        let q = queues.get(t);
        if (!q) queues.set(t, (q = []));
        q.push(c);
      }
      const scratch = new Map<string, number>();
      const heads = new Map<string, number>();
      for (const t of queues.keys()) {
        scratch.set(t, counters.get(t) ?? 0);
        heads.set(t, 0);
      }
      for (let remaining = waiting.length - out.length; remaining > 0 && queues.size > 0; remaining--) {
        let best: string | null = null;
        for (const [t, q] of queues) {
          const head = q[heads.get(t)!];
          if (best === null) {
            best = t;
            continue;
          }
          const bestHead = queues.get(best)![heads.get(best)!];
          const d = scratch.get(t)! - scratch.get(best)!;
          if (d < 0 || (d === 0 && head.arrivalMs < bestHead.arrivalMs)) best = t;
        }
        const q = queues.get(best!)!;
        const i = heads.get(best!)!;
        out.push(q[i]);
        scratch.set(best!, scratch.get(best!)! + inputWeight * q[i].tokenIds.length);
        if (i + 1 >= q.length) queues.delete(best!);
        else heads.set(best!, i + 1);
      }

      // 4. Remember what was offered, to charge it once it is admitted.
      offered = new Map();
      for (const c of out) {
        if (c.numPreemptions === 0) offered.set(c.request.requestId, { tenant: tenantKey(c.request.tenantId), tokens: c.tokenIds.length });
      }
      return out;
    },
  };
}

/** Passes an engine event stream through, charging each batch of generated tokens to the request's tenant. */
export async function* meterOutput(
  policy: Pick<VtcPolicy, 'chargeOutput'>,
  tenantId: string | null,
  events: AsyncIterable<GenerationEvent>,
  clock: { nowMs(): number },
): AsyncGenerator<GenerationEvent> {
  for await (const event of events) {
    if (event.type === 'tokens') policy.chargeOutput(tenantId, event.tokens.length, clock.nowMs());
    yield event;
  }
}
