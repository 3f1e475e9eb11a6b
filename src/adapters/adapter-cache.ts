/**
 * The two tiers below the source: a host LRU of adapter bytes with a byte budget, and the table of device slots
 * (numSlots - 1 usable; slot 0 = base model). Both are keyed by (entry, version), so a reload never finds the old
 * version's bytes or slot. What moves an adapter between tiers is the manager's lifecycle; this module only keeps the
 * books and picks what to evict:
 *   - a slot with running sequences (refs > 0) is never evicted; neither is one the caller marks as kept (pinned);
 *   - a slot that was just written is kept for `newSlotGraceMs` or until its first acquire, so waiters are not
 *     starved by churn;
 *   - otherwise the least recently used resident slot goes first.
 */
import { LRUCache } from 'lru-cache';
import type { AdapterMetrics } from './adapter-metrics.ts';
import type { HostItem } from './adapter-loader.ts';
import type { AdapterEntry } from './adapter-registry.ts';

export type SlotState =
  | { kind: 'free' }
  | { kind: 'loading'; entry: AdapterEntry; version: number }
  | { kind: 'resident'; entry: AdapterEntry; version: number; refs: number; lastUsedMs: number; freshUntilMs: number };

export interface DeviceSlot {
  readonly index: number;
  state: SlotState;
}

export interface SlotTableRow {
  slot: number;
  adapterId: string | null;
  version: number;
  refs: number;
  state: SlotState['kind'];
}

export interface AdapterCacheOptions {
  /** Device slots including slot 0 (base). */
  numSlots: number;
  hostCacheBytes: number;
  newSlotGraceMs: number;
  metrics: AdapterMetrics | null;
  /** The host LRU dropped `entry`'s bytes for `version` to stay within its budget. */
  onHostEvict(entry: AdapterEntry, version: number): void;
}

interface HostRecord {
  entry: AdapterEntry;
  version: number;
  item: HostItem;
}

export class AdapterCache {
  private readonly slots: DeviceSlot[];
  private readonly host: LRUCache<string, HostRecord>;
  private readonly metrics: AdapterMetrics | null;

  constructor(private readonly opts: AdapterCacheOptions) {
    this.metrics = opts.metrics;
    this.slots = Array.from({ length: opts.numSlots }, (_, index) => ({ index, state: { kind: 'free' } }));
    this.host = new LRUCache<string, HostRecord>({
      maxSize: Math.max(1, opts.hostCacheBytes),
      sizeCalculation: (record) => Math.max(1, record.item.sizeBytes),
      dispose: (record, _key, reason) => {
        if (reason !== 'evict') return;
        opts.metrics?.adapterCacheEvictions.add(1, { tier: 'host' });
        opts.onHostEvict(record.entry, record.version);
      },
    });
  }

  // ---- host tier ----

  /** The current version's bytes, marking them recently used. */
  hostGet(e: AdapterEntry): HostItem | null {
    return this.host.get(hostKey(e))?.item ?? null;
  }

  /** The current version's bytes, without touching recency. */
  hostPeek(e: AdapterEntry): HostItem | null {
    return this.host.peek(hostKey(e))?.item ?? null;
  }

  /** Stores the current version's bytes; false when they do not fit the budget at all (nothing stored). */
  hostSet(e: AdapterEntry, item: HostItem): boolean {
    const key = hostKey(e);
    this.host.set(key, { entry: e, version: e.version, item });
    return this.host.has(key);
  }

  /** Drops the bytes of `e` at `version` (default: its current version). */
  hostDelete(e: AdapterEntry, version = e.version): void {
    this.host.delete(hostKey(e, version));
  }

  hostClear(): void {
    this.host.clear();
  }

  // ---- device slots ----

  slot(index: number): DeviceSlot | null {
    return index >= 1 && index < this.slots.length ? this.slots[index] : null;
  }

  hasFreeSlot(): boolean {
    return this.slots.some((s) => s.index > 0 && s.state.kind === 'free');
  }

  /**
   * A free slot, else the least recently used evictable resident slot, freed and returned with what it held; null
   * when every slot is busy, fresh or kept.
   */
  reserve(nowMs: number, kept: (entry: AdapterEntry, version: number) => boolean): { slot: DeviceSlot; evicted: { entry: AdapterEntry; version: number } | null } | null {
    let best: DeviceSlot | null = null;
    let bestLastUsedMs = Infinity;
    for (const s of this.slots) {
      if (s.index === 0) continue;
      const st = s.state;
      if (st.kind === 'free') return { slot: s, evicted: null };
      if (st.kind !== 'resident' || st.refs > 0 || st.freshUntilMs > nowMs || kept(st.entry, st.version)) continue;
      if (st.lastUsedMs < bestLastUsedMs) {
        best = s;
        bestLastUsedMs = st.lastUsedMs;
      }
    }
    if (best === null) return null;
    const st = best.state as Extract<SlotState, { kind: 'resident' }>;
    this.metrics?.adapterCacheEvictions.add(1, { tier: 'device' });
    this.free(best);
    return { slot: best, evicted: { entry: st.entry, version: st.version } };
  }

  /** `slot` is being written with the current version of `e`. */
  startLoading(slot: DeviceSlot, e: AdapterEntry): void {
    slot.state = { kind: 'loading', entry: e, version: e.version };
  }

  /** The write into `slot` finished: resident, protected from eviction for the grace period. */
  finishLoading(slot: DeviceSlot, nowMs: number): void {
    const st = slot.state;
    if (st.kind !== 'loading') return;
    slot.state = { kind: 'resident', entry: st.entry, version: st.version, refs: 0, lastUsedMs: nowMs, freshUntilMs: nowMs + this.opts.newSlotGraceMs };
  }

  /** Takes a reference on a resident slot (a running sequence). */
  take(slot: DeviceSlot, nowMs: number): void {
    const st = slot.state;
    if (st.kind !== 'resident') return;
    st.refs++;
    st.lastUsedMs = nowMs;
    st.freshUntilMs = 0;
  }

  /**
   * Drops a reference taken on slot `index` for `adapterId`; frees the slot when it was the last one and the slot
   * holds a version that is no longer served (reloaded or unloaded). False when no such reference exists.
   */
  release(index: number, adapterId: string, nowMs: number): boolean {
    const s = this.slot(index);
    const st = s?.state;
    if (!s || st?.kind !== 'resident' || st.entry.adapterId !== adapterId || st.refs <= 0) return false;
    st.refs--;
    st.lastUsedMs = nowMs;
    if (st.refs === 0 && (st.entry.phase.kind === 'removed' || st.version !== st.entry.version)) this.free(s);
    return true;
  }

  free(slot: DeviceSlot): void {
    slot.state = { kind: 'free' };
  }

  /** Frees the resident slots of `e` (any version) that no running sequence holds. */
  freeIdle(e: AdapterEntry): void {
    for (const s of this.slots) if (s.state.kind === 'resident' && s.state.entry === e && s.state.refs === 0) this.free(s);
  }

  recordBytes(): void {
    if (!this.metrics) return;
    this.metrics.adapterCacheBytes.record(this.host.calculatedSize, { tier: 'host' });
    let device = 0;
    for (const s of this.slots) if (s.state.kind !== 'free') device += s.state.entry.decompressedSizeBytes;
    this.metrics.adapterCacheBytes.record(device, { tier: 'device' });
  }

  /** Slots 1.. with what they hold, for tests and debugging. */
  table(): SlotTableRow[] {
    return this.slots.slice(1).map((s) => {
      const st = s.state;
      if (st.kind === 'free') return { slot: s.index, adapterId: null, version: 0, refs: 0, state: 'free' };
      return { slot: s.index, adapterId: st.entry.adapterId, version: st.version, refs: st.kind === 'resident' ? st.refs : 0, state: st.kind };
    });
  }
}

function hostKey(e: AdapterEntry, version = e.version): string {
  return `${e.key}\u0000v${version}`;
}
