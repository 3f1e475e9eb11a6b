/**
 * Registry of adapters: ids, tenants, versions, sources and pins. Holds no bytes (adapter-cache.ts does).
 *
 * Tenants: an adapter belongs to a tenant or is shared (tenantId null). A tenant sees its own adapters and shared
 * ones (its own shadow a shared one of the same id); it manages (load/unload) only its own. Another tenant's adapter
 * is ADAPTER_NOT_FOUND, exactly like an unknown id. With auth off every caller is tenant null: all adapters shared.
 *
 * Versions: registering an id that exists (a reload) bumps its version and restarts its lifecycle at 'registered';
 * slots and host copies are keyed by version, so nothing written for an old version is served after a reload.
 *
 * Pins: a pinned adapter's slot is never evicted. Pins must leave at least one device slot unpinned, and each tenant
 * pins at most `maxPinnedPerTenant` adapters, so one tenant cannot take every pinnable slot (shared adapters, loaded
 * by the operator, count only against the first rule).
 */
import { TesseraError } from '../errors.ts';
import type { AdapterId } from './adapter-id.ts';
import { transition, type AdapterPhase } from './adapter-lifecycle.ts';
import type { ResolvedSource } from './adapter-source.ts';

export interface AdapterEntry {
  /** Registry key: tenant and id. */
  readonly key: string;
  readonly adapterId: AdapterId;
  readonly tenantId: string | null;
  version: number;
  source: string;
  resolved: ResolvedSource;
  pinned: boolean;
  /** Where the current version is: change it only through transition() (adapter-lifecycle.ts). */
  phase: AdapterPhase;
  /** Failed loads in a row (backoff exponent); 0 after a version becomes resident or is reloaded. */
  consecutiveFailures: number;
  /** Sizes of the current version, known once it has been read. */
  rank: number;
  compressedSizeBytes: number;
  decompressedSizeBytes: number;
  /** Clock time of the last acquire, or null. */
  lastUsedMs: number | null;
}

export interface AdapterRegistryOptions {
  /** Device slots that can hold adapters (slot 0, the base model, excluded). */
  usableSlots: number;
  /** Adapters one tenant may pin. */
  maxPinnedPerTenant: number;
}

export class AdapterRegistry {
  private readonly entries = new Map<string, AdapterEntry>();

  constructor(private readonly opts: AdapterRegistryOptions) {}

  /** The adapter `tenantId` sees under `adapterId`: its own, else a shared one. */
  lookup(adapterId: string, tenantId: string | null): AdapterEntry | null {
    return this.own(adapterId, tenantId) ?? (tenantId !== null ? this.own(adapterId, null) : null);
  }

  /** The adapter registered under exactly this tenant (null = shared). */
  own(adapterId: string, tenantId: string | null): AdapterEntry | null {
    return this.entries.get(keyOf(tenantId, adapterId)) ?? null;
  }

  /** What `tenantId` sees: its own adapters and the shared ones it does not shadow. */
  visibleTo(tenantId: string | null): AdapterEntry[] {
    const out: AdapterEntry[] = [];
    for (const e of this.entries.values()) {
      if (e.tenantId === tenantId || (e.tenantId === null && !this.entries.has(keyOf(tenantId, e.adapterId)))) out.push(e);
    }
    return out;
  }

  /** A new entry, or a reload of an existing one (version + 1, lifecycle back to 'registered'). */
  register(adapterId: AdapterId, tenantId: string | null, source: string, resolved: ResolvedSource, pinned: boolean): AdapterEntry {
    const key = keyOf(tenantId, adapterId);
    const old = this.entries.get(key);
    if (old) {
      old.version++;
      old.source = source;
      old.resolved = resolved;
      old.pinned = pinned;
      old.consecutiveFailures = 0;
      transition(old, { kind: 'registered' });
      return old;
    }
    const e: AdapterEntry = {
      key,
      adapterId,
      tenantId,
      version: 1,
      source,
      resolved,
      pinned,
      phase: { kind: 'registered' },
      consecutiveFailures: 0,
      rank: 0,
      compressedSizeBytes: 0,
      decompressedSizeBytes: 0,
      lastUsedMs: null,
    };
    this.entries.set(key, e);
    return e;
  }

  /** Unregisters `e`: its id is unknown from now on; its phase becomes 'removed'. */
  remove(e: AdapterEntry): void {
    this.entries.delete(e.key);
    e.pinned = false;
    transition(e, { kind: 'removed' });
  }

  /**
   * Throws INVALID_ARGUMENT when pinning one more adapter for `tenantId` would pin every usable slot or exceed the
   * tenant's share. `replacing` is the tenant's entry being reloaded, if it is pinned already (it does not count twice).
   */
  checkPinBudget(tenantId: string | null, replacing: AdapterEntry | null): void {
    let pinned = 0;
    let pinnedByTenant = 0;
    for (const e of this.entries.values()) {
      if (!e.pinned || e === replacing) continue;
      pinned++;
      if (e.tenantId === tenantId) pinnedByTenant++;
    }
    const usable = this.opts.usableSlots;
    if (pinned + 1 >= usable) {
      throw new TesseraError('INVALID_ARGUMENT', `\`pin\` must leave at least one device slot unpinned: ${pinned} of ${usable} usable slots are already pinned`);
    }
    const share = this.opts.maxPinnedPerTenant;
    if (tenantId !== null && pinnedByTenant + 1 > share) {
      throw new TesseraError(
        'INVALID_ARGUMENT',
        `\`pin\` must keep a tenant at <= ${share} pinned adapters (max-pinned-adapters-per-tenant). Given: pin number ${pinnedByTenant + 1} for tenant ${JSON.stringify(tenantId)}`,
      );
    }
  }
}

function keyOf(tenantId: string | null, adapterId: string): string {
  return `${tenantId ?? ''}\u0000${adapterId}`;
}
