/**
 * Multi-tenant adapter serving: a registry (id, tenant, version, source) over three tiers,
 *   device slots (numSlots - 1 usable; slot 0 = base)  <-  host LRU of adapter bytes (byte budget)  <-  source.
 *
 * Lifecycle per adapter: registered -> fetching -> cached -> decoding -> resident -> evicted, or failed.
 *   - One fetch and one slot write per adapter however many requests wait (the engine polls acquire each step).
 *   - A slot with running sequences (refs > 0) is never evicted; a pinned adapter's slot is never evicted; a slot that
 *     was just written is kept for `newSlotGraceMs` or until its first acquire, so waiters are not starved by churn.
 *   - When no slot can be taken, acquire answers 'pending': the request stays queued while others run.
 *   - A failed load fails the requests that wait for it, and every acquire during the backoff; the first acquire
 *     after the backoff retries (exponential: initialBackoffMs * 2^(failures-1), at most maxBackoffMs).
 *   - Reload (load of a registered id) bumps the version. Slots are versioned: a slot holding an old version keeps
 *     serving the sequences admitted before the reload and is freed when they end; requests acquired after the
 *     reload only ever get a slot written with the new version.
 *   - Unload drains: the id disappears at once (new and queued requests: ADAPTER_NOT_FOUND); running sequences keep
 *     their slot until they end, then it is freed.
 *
 * Tenants: an adapter belongs to a tenant or is shared (tenantId null). A tenant sees its own adapters and shared
 * ones (its own shadow a shared one of the same id); it manages (load/unload) only its own. Another tenant's adapter
 * is ADAPTER_NOT_FOUND, exactly like an unknown id. With auth off every caller is tenant null: all adapters shared.
 *
 * Host tier holds: for `.cpeft` sources the compressed file bytes (decoded into the slot by the worker); for PEFT
 * directories the float32 factors at the adapter's own rank (no padding).
 */
import fs from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { TesseraError, isTesseraError } from '../errors.ts';
import type { ModelConfig } from '../model/model-config.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import type { AdapterMetrics } from './adapter-metrics.ts';
import { fetchWithLimit, readLocalFile, readPeftSource, resolveAdapterSource, type ResolvedSource, type SourcePolicy } from './adapter-source.ts';
import { checkCompeftCompatible } from './compeft/compeft-compat.ts';
import { decodeToPeftLike } from './compeft/compeft-decode.ts';
import { parseCompeft } from './compeft/compeft-reader.ts';

import type { AdapterState, AdapterStatus, AdapterTier } from './adapter-status.ts';

export type { AdapterState, AdapterStatus, AdapterTier };

/** What writes device slots: the model worker (ThreadExecutor has all three). */
export interface DeviceSlotWriter {
  loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void>;
  clearAdapterSlot(slot: number): Promise<void>;
  /** Optional: decode a `.cpeft` file straight into the slot (else it is decoded here to dense factors). */
  loadCompressedSlot?(slot: number, bytes: Uint8Array): Promise<void>;
}

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
  slotTable(): Array<{ slot: number; adapterId: string | null; version: number; refs: number; state: SlotState }>;
  /** Idempotent: waits for in-flight loads, drops the host tier; later acquires fail. */
  shutdown(): Promise<void>;
}

type SlotState = 'free' | 'loading' | 'resident';

interface HostItem {
  kind: 'weights' | 'cpeft';
  weights: LoraWeights | null;
  bytes: Uint8Array | null;
  rank: number;
  sizeBytes: number;
  compressedSizeBytes: number;
  decompressedSizeBytes: number;
}

interface Entry {
  key: string;
  adapterId: string;
  tenantId: string | null;
  version: number;
  source: string;
  resolved: ResolvedSource;
  pinned: boolean;
  state: AdapterState;
  rank: number;
  compressedSizeBytes: number;
  decompressedSizeBytes: number;
  lastUsedMs: number | null;
  fetching: boolean;
  loading: boolean;
  /** A fetched item waiting for a slot (kept even when the host tier cannot hold it). */
  staged: HostItem | null;
  failure: { error: TesseraError; failures: number; retryAtMs: number } | null;
  removed: boolean;
}

interface Slot {
  index: number;
  entry: Entry | null;
  version: number;
  state: SlotState;
  refs: number;
  lastUsedMs: number;
  /** Written but not yet acquired: protected from eviction until this time. */
  freshUntilMs: number;
}

const ADAPTER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function createAdapterManager(opts: AdapterManagerOptions): AdapterManager {
  const { config, maxRank } = opts;
  const clock = opts.clock ?? { nowMs: () => Date.now() };
  const metrics = opts.metrics ?? null;
  const log = opts.logger ?? null;
  const initialBackoffMs = opts.retry?.initialBackoffMs ?? 500;
  const maxBackoffMs = opts.retry?.maxBackoffMs ?? 60_000;
  const newSlotGraceMs = opts.newSlotGraceMs ?? 2000;
  const policy: SourcePolicy = {
    allowedRoots: opts.allowedRoots,
    allowedUrlPrefixes: opts.allowedUrlPrefixes ?? [],
    maxFileBytes: opts.maxAdapterFileBytes ?? 1 << 30,
    logger: log,
  };
  const fetchTimeoutMs = opts.fetchTimeoutMs ?? 30_000;
  if (!Number.isInteger(opts.numSlots) || opts.numSlots < 2) {
    throw new TesseraError('CONFIG_INVALID', `\`numSlots\` must be an integer >= 2 (slot 0 is the base model). Given: ${opts.numSlots}`);
  }
  if (!(opts.hostCacheBytes >= 0)) throw new TesseraError('CONFIG_INVALID', `\`hostCacheBytes\` must be >= 0. Given: ${opts.hostCacheBytes}`);
  const modelName = baseName(opts.modelId.split('@')[0]);

  const registry = new Map<string, Entry>();
  const slots: Slot[] = Array.from({ length: opts.numSlots }, (_, index) => ({ index, entry: null, version: 0, state: 'free', refs: 0, lastUsedMs: 0, freshUntilMs: 0 }));
  const inFlight = new Set<Promise<unknown>>();
  let closed = false;
  let shutdownPromise: Promise<void> | null = null;

  const host = new LRUCache<string, HostItem>({
    maxSize: Math.max(1, opts.hostCacheBytes),
    sizeCalculation: (item) => Math.max(1, item.sizeBytes),
    dispose: (_item, _key, reason) => {
      if (reason === 'evict') metrics?.adapterCacheEvictions.add(1, { tier: 'host' });
    },
  });

  const keyOf = (tenantId: string | null, adapterId: string) => `${tenantId ?? ''}\u0000${adapterId}`;
  const hostKey = (e: Entry) => `${e.key}\u0000v${e.version}`;
  const notFound = (adapterId: string) => new TesseraError('ADAPTER_NOT_FOUND', `adapter ${JSON.stringify(adapterId)} not found`);

  /** The adapter `tenantId` sees under `adapterId`: its own, else a shared one. */
  function lookup(adapterId: string, tenantId: string | null): Entry | null {
    return registry.get(keyOf(tenantId, adapterId)) ?? (tenantId !== null ? registry.get(keyOf(null, adapterId)) ?? null : null);
  }

  function track<T>(p: Promise<T>): Promise<T> {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p)).catch(() => {});
    return p;
  }

  function recordBytes(): void {
    if (!metrics) return;
    metrics.adapterCacheBytes.record(host.calculatedSize, { tier: 'host' });
    let device = 0;
    for (const s of slots) if (s.state !== 'free' && s.entry) device += s.entry.decompressedSizeBytes;
    metrics.adapterCacheBytes.record(device, { tier: 'device' });
  }

  function residentSlot(e: Entry): Slot | null {
    for (const s of slots) if (s.state === 'resident' && s.entry === e && s.version === e.version) return s;
    return null;
  }

  function freeSlot(s: Slot): void {
    s.entry = null;
    s.version = 0;
    s.state = 'free';
    s.refs = 0;
    s.freshUntilMs = 0;
  }

  /** A free slot, else the least recently used evictable one (evicting it), else null. */
  function reserveSlot(nowMs: number): Slot | null {
    let best: Slot | null = null;
    for (let i = 1; i < slots.length; i++) {
      const s = slots[i];
      if (s.state === 'free') return s;
      if (s.state !== 'resident' || s.refs > 0 || s.freshUntilMs > nowMs) continue;
      const e = s.entry!;
      if (e.pinned && s.version === e.version && !e.removed) continue;
      if (best === null || s.lastUsedMs < best.lastUsedMs) best = s;
    }
    if (best) {
      const e = best.entry!;
      if (best.version === e.version && !e.removed) e.state = host.has(hostKey(e)) ? 'cached' : 'evicted';
      metrics?.adapterCacheEvictions.add(1, { tier: 'device' });
      log?.debug({ adapterId: e.adapterId, slot: best.index }, 'adapter evicted from device slot');
      freeSlot(best);
    }
    return best;
  }

  function fail(e: Entry, err: unknown): void {
    const error = asLoadError(err);
    const failures = (e.failure?.failures ?? 0) + 1;
    const backoffMs = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (failures - 1));
    e.failure = { error, failures, retryAtMs: clock.nowMs() + backoffMs };
    e.state = 'failed';
    log?.warn({ adapterId: e.adapterId, code: error.code, failures, backoffMs }, `adapter load failed: ${error.message}`);
  }

  /** Moves `e` one tier closer to a device slot if nothing is in flight for it. */
  function advance(e: Entry): void {
    if (e.fetching || e.loading || e.removed || closed) return;
    const nowMs = clock.nowMs();
    const item = e.staged ?? host.get(hostKey(e)) ?? null;
    if (item === null) {
      metrics?.adapterCacheMisses.add(1, { tier: 'host' });
      startFetch(e);
      return;
    }
    if (e.staged === null) metrics?.adapterCacheHits.add(1, { tier: 'host' });
    const slot = reserveSlot(nowMs);
    if (slot === null) {
      e.staged = item; // hold it: the host tier may drop it before a slot frees up
      return;
    }
    e.staged = null;
    startDeviceLoad(e, slot, item);
  }

  function startFetch(e: Entry): void {
    e.fetching = true;
    e.state = 'fetching';
    const version = e.version;
    const t0 = clock.nowMs();
    track(
      fetchItem(e.resolved, e.adapterId).then(
        (item) => {
          e.fetching = false;
          if (e.removed || e.version !== version) {
            if (!e.removed) advance(e); // reloaded meanwhile: fetch the new version for whoever waits
            return;
          }
          metrics?.adapterCacheLoads.add(1, { tier: 'host' });
          metrics?.adapterLoadDuration.record((clock.nowMs() - t0) / 1000, { tier: 'host' });
          describe(e, item);
          host.set(hostKey(e), item);
          e.staged = item;
          e.state = 'cached';
          recordBytes();
          advance(e);
        },
        (err) => {
          e.fetching = false;
          if (e.removed || e.version !== version) return;
          fail(e, err);
        },
      ),
    );
  }

  function startDeviceLoad(e: Entry, slot: Slot, item: HostItem): void {
    e.loading = true;
    e.state = 'decoding';
    const version = e.version;
    slot.entry = e;
    slot.version = version;
    slot.state = 'loading';
    slot.refs = 0;
    metrics?.adapterCacheMisses.add(1, { tier: 'device' });
    const t0 = clock.nowMs();
    const write = async () => {
      if (item.kind === 'weights') return opts.slots.loadAdapterSlot(slot.index, item.weights!);
      if (opts.slots.loadCompressedSlot) return opts.slots.loadCompressedSlot(slot.index, item.bytes!);
      const dense = decodeToPeftLike(parseCompeft(item.bytes!, { source: e.adapterId, verifyPayloads: false }));
      return opts.slots.loadAdapterSlot(slot.index, dense);
    };
    track(
      write().then(
        () => {
          e.loading = false;
          const nowMs = clock.nowMs();
          if (e.removed || e.version !== version || closed) {
            freeSlot(slot);
            if (!e.removed && !closed) advance(e);
            return;
          }
          slot.state = 'resident';
          slot.lastUsedMs = nowMs;
          slot.freshUntilMs = nowMs + newSlotGraceMs;
          e.state = 'resident';
          e.failure = null;
          metrics?.adapterCacheLoads.add(1, { tier: 'device' });
          metrics?.adapterLoadDuration.record((nowMs - t0) / 1000, { tier: 'device' });
          log?.debug({ adapterId: e.adapterId, version, slot: slot.index }, 'adapter resident');
          recordBytes();
        },
        (err) => {
          e.loading = false;
          freeSlot(slot);
          track(opts.slots.clearAdapterSlot(slot.index).catch(() => {}));
          if (e.removed || e.version !== version) return;
          fail(e, err);
        },
      ),
    );
  }

  function describe(e: Entry, item: HostItem): void {
    e.rank = item.rank;
    e.compressedSizeBytes = item.compressedSizeBytes;
    e.decompressedSizeBytes = item.decompressedSizeBytes;
  }

  /** Reads and validates a source into a host-tier item. */
  async function fetchItem(resolved: ResolvedSource, adapterId: string): Promise<HostItem> {
    try {
      if (resolved.kind === 'peft-dir') {
        const { adapter, weightsFileBytes: compressedSizeBytes } = await readPeftSource(resolved, policy.maxFileBytes, config);
        checkRank(adapter.rank, adapterId);
        checkBaseModel(adapter.baseModel, adapterId);
        const weights: LoraWeights = { rank: adapter.rank, scale: adapter.scale, layers: adapter.layers };
        return { kind: 'weights', weights, bytes: null, rank: adapter.rank, sizeBytes: adapter.sizeBytes, compressedSizeBytes, decompressedSizeBytes: adapter.sizeBytes };
      }
      const bytes =
        resolved.kind === 'cpeft-file'
          ? await readLocalFile(resolved, policy.maxFileBytes)
          : await fetchWithLimit(resolved.url, { maxBytes: policy.maxFileBytes, timeoutMs: fetchTimeoutMs });
      const file = parseCompeft(bytes, { source: adapterId });
      checkRank(file.header.rank, adapterId);
      checkCompeftCompatible(file, config, { maxRank });
      checkBaseModel(file.header.baseModel, adapterId);
      let dense = 0;
      for (const t of file.header.tensors) dense += t.rows * t.cols * 4;
      return { kind: 'cpeft', weights: null, bytes, rank: file.header.rank, sizeBytes: bytes.byteLength, compressedSizeBytes: bytes.byteLength, decompressedSizeBytes: dense };
    } catch (err) {
      throw asLoadError(err);
    }
  }

  function checkRank(rank: number, adapterId: string): void {
    if (rank > maxRank) {
      throw new TesseraError('ADAPTER_INCOMPATIBLE', `adapter ${JSON.stringify(adapterId)}: rank must be <= the server's max adapter rank ${maxRank}. Given: ${rank}`);
    }
  }

  function checkBaseModel(declared: string | null, adapterId: string): void {
    if (declared === null || declared === '') return;
    if (baseName(declared) !== modelName) {
      throw new TesseraError(
        'ADAPTER_INCOMPATIBLE',
        `adapter ${JSON.stringify(adapterId)} was trained for base model ${JSON.stringify(declared)}; this server serves ${JSON.stringify(opts.modelId)}`,
      );
    }
  }

  function status(e: Entry): AdapterStatus {
    const onDevice = residentSlot(e) !== null;
    const item = host.peek(hostKey(e)) ?? e.staged;
    const tier: AdapterTier = onDevice ? 'device' : item ? 'host' : 'source';
    const sizeBytes = tier === 'device' ? e.decompressedSizeBytes : tier === 'host' ? item!.sizeBytes : e.compressedSizeBytes;
    return {
      adapterId: e.adapterId,
      state: e.state,
      tier,
      rank: e.rank,
      sizeBytes,
      version: e.version,
      tenantId: e.tenantId,
      source: e.source,
      compressedSizeBytes: e.compressedSizeBytes,
      decompressedSizeBytes: e.decompressedSizeBytes,
      pinned: e.pinned,
      error: e.failure ? e.failure.error.message : null,
      lastUsedMs: e.lastUsedMs,
    };
  }

  function checkAdapterId(adapterId: string): void {
    if (!ADAPTER_ID_PATTERN.test(adapterId)) {
      throw new TesseraError('INVALID_ARGUMENT', `\`adapterId\` must match ${ADAPTER_ID_PATTERN.source}. Given: ${JSON.stringify(adapterId)}`);
    }
  }

  function register(adapterId: string, tenantId: string | null, source: string, resolved: ResolvedSource, pinned: boolean): Entry {
    const key = keyOf(tenantId, adapterId);
    const old = registry.get(key);
    if (old) {
      // Reload: a new version. Old-version slots keep their running sequences and are freed when those end.
      host.delete(hostKey(old));
      old.version++;
      old.source = source;
      old.resolved = resolved;
      old.pinned = pinned;
      old.state = 'registered';
      old.staged = null;
      old.failure = null;
      for (const s of slots) if (s.entry === old && s.state === 'resident' && s.refs === 0) freeSlot(s);
      return old;
    }
    const e: Entry = {
      key,
      adapterId,
      tenantId,
      version: 1,
      source,
      resolved,
      pinned,
      state: 'registered',
      rank: 0,
      compressedSizeBytes: 0,
      decompressedSizeBytes: 0,
      lastUsedMs: null,
      fetching: false,
      loading: false,
      staged: null,
      failure: null,
      removed: false,
    };
    registry.set(key, e);
    return e;
  }

  function checkPinBudget(exclude: Entry | null): void {
    let pinned = 0;
    for (const e of registry.values()) if (e.pinned && e !== exclude) pinned++;
    const usable = opts.numSlots - 1;
    if (pinned + 1 >= usable) {
      throw new TesseraError(
        'INVALID_ARGUMENT',
        `\`pin\` must leave at least one device slot unpinned: ${pinned} of ${usable} usable slots are already pinned`,
      );
    }
  }

  return {
    acquire(adapterId, tenantId) {
      if (closed) return new TesseraError('DRAINING', 'the adapter manager is shut down');
      const e = lookup(adapterId, tenantId);
      if (e === null) return notFound(adapterId);
      const nowMs = clock.nowMs();
      if (e.failure !== null && nowMs < e.failure.retryAtMs) return e.failure.error;
      const slot = residentSlot(e);
      if (slot !== null) {
        slot.refs++;
        slot.lastUsedMs = nowMs;
        slot.freshUntilMs = 0;
        e.lastUsedMs = nowMs;
        metrics?.adapterCacheHits.add(1, { tier: 'device' });
        return slot.index;
      }
      advance(e);
      return 'pending';
    },

    release(adapterId, slotIndex) {
      const s = slots[slotIndex];
      if (s === undefined || s.entry === null || s.entry.adapterId !== adapterId || s.refs <= 0) {
        log?.error({ adapterId, slot: slotIndex }, 'adapter release without a matching acquire (ignored)');
        return;
      }
      s.refs--;
      s.lastUsedMs = clock.nowMs();
      const e = s.entry;
      if (s.refs === 0 && (e.removed || s.version !== e.version)) freeSlot(s);
    },

    async load(req) {
      if (closed) throw new TesseraError('DRAINING', 'the adapter manager is shut down');
      checkAdapterId(req.adapterId);
      const key = keyOf(req.tenantId, req.adapterId);
      const existing = registry.get(key) ?? null;
      if (req.pin && !(existing?.pinned ?? false)) checkPinBudget(existing);
      const resolved = resolveAdapterSource(req.source, policy);
      const t0 = clock.nowMs();
      const item = await fetchItem(resolved, req.adapterId); // validation errors reach the caller; nothing registered
      const e = register(req.adapterId, req.tenantId, req.source, resolved, req.pin);
      describe(e, item);
      host.set(hostKey(e), item);
      e.staged = null;
      e.state = 'cached';
      metrics?.adapterCacheLoads.add(1, { tier: 'host' });
      metrics?.adapterLoadDuration.record((clock.nowMs() - t0) / 1000, { tier: 'host' });
      recordBytes();
      // Prefetch to the device when it costs nobody anything (a free slot), or when pinned.
      if (req.pin || slots.some((s) => s.index > 0 && s.state === 'free')) {
        if (!host.has(hostKey(e))) e.staged = item;
        advance(e);
      }
      log?.info({ adapterId: e.adapterId, tenantId: e.tenantId, version: e.version, rank: e.rank }, 'adapter loaded');
      return status(e);
    },

    async unload(req) {
      const own = registry.get(keyOf(req.tenantId, req.adapterId));
      if (!own) {
        if (req.tenantId !== null && registry.has(keyOf(null, req.adapterId))) {
          throw new TesseraError('PERMISSION_DENIED', `adapter ${JSON.stringify(req.adapterId)} is shared: only the operator can unload it`);
        }
        throw notFound(req.adapterId);
      }
      registry.delete(own.key);
      own.removed = true;
      own.pinned = false;
      host.delete(hostKey(own));
      own.staged = null;
      for (const s of slots) if (s.entry === own && s.state === 'resident' && s.refs === 0) freeSlot(s);
      recordBytes();
      log?.info({ adapterId: own.adapterId, tenantId: own.tenantId }, 'adapter unloaded');
    },

    async list(req) {
      const out: AdapterStatus[] = [];
      for (const e of registry.values()) {
        if (e.tenantId === req.tenantId) out.push(status(e));
        else if (e.tenantId === null && !registry.has(keyOf(req.tenantId, e.adapterId))) out.push(status(e));
      }
      return out;
    },

    async get(req) {
      const e = lookup(req.adapterId, req.tenantId);
      if (e === null) throw notFound(req.adapterId);
      return status(e);
    },

    registerDirectory(dir, { tenantId }) {
      const ids: string[] = [];
      for (const name of fs.readdirSync(dir).sort()) {
        const full = path.join(dir, name);
        let adapterId: string;
        if (name.endsWith('.cpeft')) adapterId = name.slice(0, -'.cpeft'.length);
        else if (fs.existsSync(path.join(full, 'adapter_config.json'))) adapterId = name;
        else continue;
        if (registry.has(keyOf(tenantId, adapterId))) {
          throw new TesseraError('CONFIG_INVALID', `adapter id ${JSON.stringify(adapterId)} appears twice (in ${dir} or registered before)`);
        }
        let resolved: ResolvedSource;
        try {
          checkAdapterId(adapterId);
          resolved = resolveAdapterSource(full, policy);
        } catch (err) {
          log?.warn({ dir, entry: name }, `adapter skipped: ${(err as Error).message}`);
          continue;
        }
        register(adapterId, tenantId, full, resolved, false);
        ids.push(adapterId);
      }
      log?.info({ dir, count: ids.length }, 'adapters registered from directory');
      return ids;
    },

    slotTable() {
      return slots.slice(1).map((s) => ({ slot: s.index, adapterId: s.entry?.adapterId ?? null, version: s.version, refs: s.refs, state: s.state }));
    },

    shutdown() {
      shutdownPromise ??= (async () => {
        closed = true;
        await Promise.allSettled([...inFlight]);
        host.clear();
      })();
      return shutdownPromise;
    },
  };
}

/** Load failures as the client sees them: adapter codes kept; anything else from reading becomes ADAPTER_LOAD_FAILED. */
function asLoadError(err: unknown): TesseraError {
  if (isTesseraError(err)) {
    if (err.code.startsWith('ADAPTER_') || err.code === 'INVALID_ARGUMENT' || err.code === 'WORKER_UNAVAILABLE') return err;
    return new TesseraError('ADAPTER_LOAD_FAILED', err.message, { cause: err });
  }
  return new TesseraError('ADAPTER_LOAD_FAILED', `adapter load failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Last path segment, lower-cased: `org/Model-7B` and `model-7b` name the same model. */
function baseName(name: string): string {
  const parts = name.split('/').filter((p) => p !== '');
  return (parts[parts.length - 1] ?? '').toLowerCase();
}
