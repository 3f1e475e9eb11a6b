/**
 * Multi-tenant adapter serving: the registry (adapter-registry.ts: ids, tenants, versions, pins) over two tiers
 * (adapter-cache.ts: host LRU of bytes, device slot table) fed by the loader (adapter-loader.ts: read + validate,
 * write a slot), driven by one state machine per adapter (adapter-lifecycle.ts). This module is that driver and the
 * two seams: AdapterSlots for the engine (acquire/release) and AdapterAdmin for the server (load/unload/list/get).
 *
 *   - One read and one slot write per adapter however many requests wait (the engine polls acquire each step).
 *   - When no slot can be taken, acquire answers 'pending': the request stays queued while others run.
 *   - A failed load fails the requests that wait for it, and every acquire during the backoff; the first acquire
 *     after the backoff retries (exponential: initialBackoffMs * 2^(failures-1), at most maxBackoffMs).
 *   - Reload (load of a registered id) bumps the version. A slot holding an old version keeps serving the sequences
 *     admitted before the reload and is freed when they end; requests acquired after the reload only ever get a slot
 *     written with the new version.
 *   - Unload drains: the id disappears at once (new and queued requests: ADAPTER_NOT_FOUND); running sequences keep
 *     their slot until they end, then it is freed.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { TesseraError } from '../errors.ts';
import type { ModelConfig } from '../model/model-config.ts';
import { parseAdapterId, type AdapterId } from './adapter-id.ts';
import { AdapterCache, type DeviceSlot, type SlotTableRow } from './adapter-cache.ts';
import { stateOf, transition } from './adapter-lifecycle.ts';
import { asLoadError, createAdapterLoader, type DeviceSlotWriter, type HostItem } from './adapter-loader.ts';
import type { AdapterMetrics } from './adapter-metrics.ts';
import { AdapterRegistry, type AdapterEntry } from './adapter-registry.ts';
import type { ResolvedSource } from './adapter-source.ts';
import type { AdapterState, AdapterStatus, AdapterTier } from './adapter-status.ts';

export type { AdapterState, AdapterStatus, AdapterTier, DeviceSlotWriter };

export interface AdapterManagerOptions {
  slots: DeviceSlotWriter;
  config: ModelConfig;
  /** Served model id (`name@hash`); an adapter that declares a base model must match its name. */
  modelId: string;
  /** Device slots including slot 0 (base). */
  numSlots: number;
  maxRank: number;
  hostCacheBytes: number;
  /** Local sources must resolve inside one of these. */
  allowedRoots: string[];
  /** Remote (.cpeft) sources must start with one of these; default none. */
  allowedUrlPrefixes?: string[];
  /** Default 1 GiB. */
  maxAdapterFileBytes?: number;
  /** Default 30 s. */
  fetchTimeoutMs?: number;
  /** Default 2000 ms. */
  newSlotGraceMs?: number;
  /** Adapters one tenant may pin; default half of the pinnable slots (numSlots - 2), at least 1. */
  maxPinnedPerTenant?: number;
  metrics?: AdapterMetrics;
  logger?: Logger;
  clock?: { nowMs(): number };
  retry?: { initialBackoffMs?: number; maxBackoffMs?: number };
}

export interface AdapterManager {
  // AdapterSlots (engine seam)
  acquire(adapterId: string, tenantId: string | null): number | 'pending' | TesseraError;
  release(adapterId: string, slot: number): void;
  // AdapterAdmin (server seam)
  load(req: { adapterId: string; source: string; pin: boolean; tenantId: string | null }): Promise<AdapterStatus>;
  unload(req: { adapterId: string; tenantId: string | null }): Promise<void>;
  list(req: { tenantId: string | null }): Promise<AdapterStatus[]>;
  get(req: { adapterId: string; tenantId: string | null }): Promise<AdapterStatus>;
  /**
   * Registers (without reading the weights) each PEFT subdirectory and `.cpeft` file of `dir`, named after it; entries
   * whose path is rejected (outside the roots, not regular, too large, bad name) are skipped with a warning. Returns
   * the ids registered. The same id twice is CONFIG_INVALID.
   */
  registerDirectory(dir: string, opts: { tenantId: string | null }): string[];
  /** Device slot -> adapter id and version now in it (null = free), for tests and debugging. */
  slotTable(): SlotTableRow[];
  /** Idempotent: waits for in-flight loads, drops the host tier; later acquires fail. */
  shutdown(): Promise<void>;
}

/** Default share of pins per tenant: half of the slots that may be pinned (one always stays unpinned), at least 1. */
export function defaultMaxPinnedPerTenant(numSlots: number): number {
  return Math.max(1, Math.floor((numSlots - 2) / 2));
}

export function createAdapterManager(opts: AdapterManagerOptions): AdapterManager {
  const clock = opts.clock ?? { nowMs: () => Date.now() };
  const metrics = opts.metrics ?? null;
  const log = opts.logger ?? null;
  const initialBackoffMs = opts.retry?.initialBackoffMs ?? 500;
  const maxBackoffMs = opts.retry?.maxBackoffMs ?? 60_000;
  if (!Number.isInteger(opts.numSlots) || opts.numSlots < 2) {
    throw new TesseraError('CONFIG_INVALID', `\`numSlots\` must be an integer >= 2 (slot 0 is the base model). Given: ${opts.numSlots}`);
  }
  if (!(opts.hostCacheBytes >= 0)) throw new TesseraError('CONFIG_INVALID', `\`hostCacheBytes\` must be >= 0. Given: ${opts.hostCacheBytes}`);
  const maxPinnedPerTenant = opts.maxPinnedPerTenant ?? defaultMaxPinnedPerTenant(opts.numSlots);
  if (!Number.isInteger(maxPinnedPerTenant) || maxPinnedPerTenant < 0) {
    throw new TesseraError('CONFIG_INVALID', `\`maxPinnedPerTenant\` must be an integer >= 0. Given: ${maxPinnedPerTenant}`);
  }

  const registry = new AdapterRegistry({ usableSlots: opts.numSlots - 1, maxPinnedPerTenant });
  const loader = createAdapterLoader({
    config: opts.config,
    modelId: opts.modelId,
    maxRank: opts.maxRank,
    policy: { allowedRoots: opts.allowedRoots, allowedUrlPrefixes: opts.allowedUrlPrefixes ?? [], maxFileBytes: opts.maxAdapterFileBytes ?? 1 << 30, logger: log },
    fetchTimeoutMs: opts.fetchTimeoutMs ?? 30_000,
  });
  const cache = new AdapterCache({
    numSlots: opts.numSlots,
    hostCacheBytes: opts.hostCacheBytes,
    newSlotGraceMs: opts.newSlotGraceMs ?? 2000,
    metrics,
    onHostEvict: (e, version) => {
      if (e.version === version && e.phase.kind === 'cached') transition(e, { kind: 'evicted' });
    },
  });
  const inFlight = new Set<Promise<unknown>>();
  let closed = false;
  let shutdownPromise: Promise<void> | null = null;

  const notFound = (adapterId: string) => new TesseraError('ADAPTER_NOT_FOUND', `adapter ${JSON.stringify(adapterId)} not found`);

  function track<T>(p: Promise<T>): Promise<T> {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p)).catch(() => {});
    return p;
  }

  /** Moves `e` one tier closer to a device slot, unless something is in flight for it or it is already there. */
  function advance(e: AdapterEntry): void {
    const phase = e.phase;
    if (closed || phase.kind === 'fetching' || phase.kind === 'decoding' || phase.kind === 'resident' || phase.kind === 'removed') return;
    const held = phase.kind === 'awaiting-slot' ? phase.item : null;
    const item = held ?? cache.hostGet(e);
    if (item === null) {
      metrics?.adapterCacheMisses.add(1, { tier: 'host' });
      startFetch(e);
      return;
    }
    if (held === null) metrics?.adapterCacheHits.add(1, { tier: 'host' });
    const slot = reserveSlot();
    if (slot === null) {
      // Hold the bytes: the host tier may drop them before a slot frees up.
      if (held === null) transition(e, { kind: 'awaiting-slot', item });
      return;
    }
    startDeviceLoad(e, slot, item);
  }

  /** A free slot, else the least recently used evictable one (its adapter leaves the device tier), else null. */
  function reserveSlot(): DeviceSlot | null {
    const reserved = cache.reserve(clock.nowMs(), (owner, version) => owner.pinned && version === owner.version);
    if (reserved === null) return null;
    const evicted = reserved.evicted;
    if (evicted !== null && evicted.version === evicted.entry.version && evicted.entry.phase.kind === 'resident') {
      transition(evicted.entry, cache.hostPeek(evicted.entry) ? { kind: 'cached' } : { kind: 'evicted' });
      log?.debug({ adapterId: evicted.entry.adapterId, slot: reserved.slot.index }, 'adapter evicted from device slot');
    }
    return reserved.slot;
  }

  function startFetch(e: AdapterEntry): void {
    const fetching = transition(e, { kind: 'fetching' });
    const t0 = clock.nowMs();
    track(
      loader.fetch(e.resolved, e.adapterId).then(
        (item) => {
          if (e.phase !== fetching) return; // reloaded or unloaded meanwhile
          metrics?.adapterCacheLoads.add(1, { tier: 'host' });
          metrics?.adapterLoadDuration.record((clock.nowMs() - t0) / 1000, { tier: 'host' });
          describe(e, item);
          cache.hostSet(e, item);
          cache.recordBytes();
          transition(e, { kind: 'awaiting-slot', item }); // a request waits for it (fetches start from acquire)
          advance(e);
        },
        (err) => {
          if (e.phase === fetching) fail(e, err);
        },
      ),
    );
  }

  function startDeviceLoad(e: AdapterEntry, slot: DeviceSlot, item: HostItem): void {
    const decoding = transition(e, { kind: 'decoding', slot: slot.index });
    cache.startLoading(slot, e);
    metrics?.adapterCacheMisses.add(1, { tier: 'device' });
    const t0 = clock.nowMs();
    track(
      loader.writeSlot(opts.slots, slot.index, item, e.adapterId).then(
        () => {
          if (e.phase !== decoding || closed) {
            cache.free(slot); // written for a version no longer served
            return;
          }
          const nowMs = clock.nowMs();
          cache.finishLoading(slot, nowMs);
          transition(e, { kind: 'resident', slot: slot.index });
          e.consecutiveFailures = 0;
          metrics?.adapterCacheLoads.add(1, { tier: 'device' });
          metrics?.adapterLoadDuration.record((nowMs - t0) / 1000, { tier: 'device' });
          log?.debug({ adapterId: e.adapterId, version: e.version, slot: slot.index }, 'adapter resident');
          cache.recordBytes();
        },
        (err) => {
          cache.free(slot);
          track(opts.slots.clearAdapterSlot(slot.index).catch(() => {}));
          if (e.phase === decoding) fail(e, err);
        },
      ),
    );
  }

  function fail(e: AdapterEntry, err: unknown): void {
    const error = asLoadError(err);
    const failures = ++e.consecutiveFailures;
    const backoffMs = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (failures - 1));
    transition(e, { kind: 'failed', error, retryAtMs: clock.nowMs() + backoffMs });
    log?.warn({ adapterId: e.adapterId, code: error.code, failures, backoffMs }, `adapter load failed: ${error.message}`);
  }

  function describe(e: AdapterEntry, item: HostItem): void {
    e.rank = item.rank;
    e.compressedSizeBytes = item.compressedSizeBytes;
    e.decompressedSizeBytes = item.decompressedSizeBytes;
  }

  function status(e: AdapterEntry): AdapterStatus {
    const phase = e.phase;
    const hostItem = cache.hostPeek(e) ?? (phase.kind === 'awaiting-slot' ? phase.item : null);
    const tier: AdapterTier = phase.kind === 'resident' ? 'device' : hostItem ? 'host' : 'source';
    const sizeBytes = tier === 'device' ? e.decompressedSizeBytes : hostItem ? hostItem.sizeBytes : e.compressedSizeBytes;
    return {
      adapterId: e.adapterId,
      state: stateOf(phase),
      tier,
      rank: e.rank,
      sizeBytes,
      version: e.version,
      tenantId: e.tenantId,
      source: e.source,
      compressedSizeBytes: e.compressedSizeBytes,
      decompressedSizeBytes: e.decompressedSizeBytes,
      pinned: e.pinned,
      error: phase.kind === 'failed' ? phase.error.message : null,
      lastUsedMs: e.lastUsedMs,
    };
  }

  /** Registers (or reloads) and drops what an older version left idle in the tiers. */
  function register(adapterId: AdapterId, tenantId: string | null, source: string, resolved: ResolvedSource, pinned: boolean): AdapterEntry {
    const previous = registry.own(adapterId, tenantId);
    if (previous) cache.hostDelete(previous);
    const e = registry.register(adapterId, tenantId, source, resolved, pinned);
    if (previous) cache.freeIdle(e);
    return e;
  }

  return {
    acquire(adapterId, tenantId) {
      if (closed) return new TesseraError('DRAINING', 'the adapter manager is shut down');
      const e = registry.lookup(adapterId, tenantId);
      if (e === null) return notFound(adapterId);
      const nowMs = clock.nowMs();
      const phase = e.phase;
      if (phase.kind === 'failed' && nowMs < phase.retryAtMs) return phase.error;
      if (phase.kind === 'resident') {
        cache.take(cache.slot(phase.slot)!, nowMs);
        e.lastUsedMs = nowMs;
        metrics?.adapterCacheHits.add(1, { tier: 'device' });
        return phase.slot;
      }
      advance(e);
      return 'pending';
    },

    release(adapterId, slotIndex) {
      if (!cache.release(slotIndex, adapterId, clock.nowMs())) {
        log?.error({ adapterId, slot: slotIndex }, 'adapter release without a matching acquire (ignored)');
      }
    },

    async load(req) {
      if (closed) throw new TesseraError('DRAINING', 'the adapter manager is shut down');
      const adapterId = parseAdapterId(req.adapterId, { field: 'adapterId' });
      const pinnedBefore = () => registry.own(adapterId, req.tenantId)?.pinned ?? false;
      if (req.pin && !pinnedBefore()) registry.checkPinBudget(req.tenantId, registry.own(adapterId, req.tenantId));
      const resolved = loader.resolve(req.source);
      const t0 = clock.nowMs();
      const item = await loader.fetch(resolved, adapterId); // validation errors reach the caller; nothing registered
      // Checked again: another pinned load may have registered while this one was reading.
      if (req.pin && !pinnedBefore()) registry.checkPinBudget(req.tenantId, registry.own(adapterId, req.tenantId));
      const e = register(adapterId, req.tenantId, req.source, resolved, req.pin);
      describe(e, item);
      const kept = cache.hostSet(e, item);
      metrics?.adapterCacheLoads.add(1, { tier: 'host' });
      metrics?.adapterLoadDuration.record((clock.nowMs() - t0) / 1000, { tier: 'host' });
      cache.recordBytes();
      // Prefetch to the device when it costs nobody anything (a free slot), or when pinned.
      if (req.pin || cache.hasFreeSlot()) {
        transition(e, { kind: 'awaiting-slot', item });
        advance(e);
      } else {
        transition(e, kept ? { kind: 'cached' } : { kind: 'evicted' });
      }
      log?.info({ adapterId: e.adapterId, tenantId: e.tenantId, version: e.version, rank: e.rank }, 'adapter loaded');
      return status(e);
    },

    async unload(req) {
      const own = registry.own(req.adapterId, req.tenantId);
      if (!own) {
        if (req.tenantId !== null && registry.own(req.adapterId, null)) {
          throw new TesseraError('PERMISSION_DENIED', `adapter ${JSON.stringify(req.adapterId)} is shared: only the operator can unload it`);
        }
        throw notFound(req.adapterId);
      }
      registry.remove(own);
      cache.hostDelete(own);
      cache.freeIdle(own);
      cache.recordBytes();
      log?.info({ adapterId: own.adapterId, tenantId: own.tenantId }, 'adapter unloaded');
    },

    async list(req) {
      return registry.visibleTo(req.tenantId).map(status);
    },

    async get(req) {
      const e = registry.lookup(req.adapterId, req.tenantId);
      if (e === null) throw notFound(req.adapterId);
      return status(e);
    },

    registerDirectory(dir, { tenantId }) {
      const ids: string[] = [];
      for (const name of fs.readdirSync(dir).sort()) {
        const full = path.join(dir, name);
        let candidate: string;
        if (name.endsWith('.cpeft')) candidate = name.slice(0, -'.cpeft'.length);
        else if (fs.existsSync(path.join(full, 'adapter_config.json'))) candidate = name;
        else continue;
        if (registry.own(candidate, tenantId)) {
          throw new TesseraError('CONFIG_INVALID', `adapter id ${JSON.stringify(candidate)} appears twice (in ${dir} or registered before)`);
        }
        let adapterId: AdapterId;
        let resolved: ResolvedSource;
        try {
          adapterId = parseAdapterId(candidate, { field: 'adapterId' });
          resolved = loader.resolve(full);
        } catch (err) {
          log?.warn({ dir, entry: name }, `adapter skipped: ${(err as Error).message}`);
          continue;
        }
        // Clients see the entry's path below its root, never where the server keeps it.
        register(adapterId, tenantId, resolved.kind === 'url' ? resolved.url : resolved.local.shown, resolved, false);
        ids.push(adapterId);
      }
      log?.info({ dir, count: ids.length }, 'adapters registered from directory');
      return ids;
    },

    slotTable: () => cache.table(),

    shutdown() {
      shutdownPromise ??= (async () => {
        closed = true;
        await Promise.allSettled([...inFlight]);
        cache.hostClear();
      })();
      return shutdownPromise;
    },
  };
}
