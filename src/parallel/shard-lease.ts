/**
 * Which controller a shard worker belongs to. One controller at a time: a second one is refused while the first is
 * connected, and while its connection has been down for less than `leaseMs` (so a controller that lost its connection
 * for a moment gets its worker back, not a stranger). A controller that says goodbye (a shutdown frame before it
 * closes) frees the worker at once; one that vanished frees it `leaseMs` after its stream ended. The same controller
 * (same id) reconnecting always gets it back and replaces its old stream, which may not have noticed it is dead yet.
 * A refusal says when the worker will be free (`freeInMs`) if its holder is gone, so a controller started to replace a
 * dead one can wait for it instead of failing.
 */
export type LeaseDecision<T> = { granted: true; replaces: T | null } | { granted: false; reason: string; freeInMs: number | null };

interface Holder<T> {
  controllerId: string;
  stream: T | null;
  sinceMs: number;
  droppedAtMs: number | null;
}

export interface ShardLeaseOptions {
  /** How long a dropped controller keeps the worker. */
  leaseMs: number;
  nowMs?: () => number;
}

export class ShardLease<T> {
  private holder: Holder<T> | null = null;
  private readonly nowMs: () => number;

  constructor(private readonly options: ShardLeaseOptions) {
    this.nowMs = options.nowMs ?? (() => performance.now());
  }

  /** Who holds the worker now (expired leases are dropped first). */
  get current(): { controllerId: string; connected: boolean } | null {
    this.expire();
    return this.holder ? { controllerId: this.holder.controllerId, connected: this.holder.stream !== null } : null;
  }

  acquire(controllerId: string, stream: T): LeaseDecision<T> {
    this.expire();
    const now = this.nowMs();
    const h = this.holder;
    if (h && h.controllerId !== controllerId) {
      if (h.stream !== null) return { granted: false, reason: `held by controller "${h.controllerId}" (connected for ${seconds(now - h.sinceMs)})`, freeInMs: null };
      const freeInMs = h.droppedAtMs! + this.options.leaseMs - now;
      return { granted: false, reason: `held by controller "${h.controllerId}" (disconnected ${seconds(now - h.droppedAtMs!)} ago; free in ${seconds(freeInMs)} unless it reconnects)`, freeInMs };
    }
    this.holder = { controllerId, stream, sinceMs: now, droppedAtMs: null };
    return { granted: true, replaces: h?.stream ?? null };
  }

  /** `stream` ended: `goodbye` (the controller shut the worker down) frees the worker now, otherwise after leaseMs. */
  release(stream: T, goodbye: boolean): void {
    const h = this.holder;
    if (!h || h.stream !== stream) return;
    if (goodbye || this.options.leaseMs === 0) this.holder = null;
    else {
      h.stream = null;
      h.droppedAtMs = this.nowMs();
    }
  }

  private expire(): void {
    const h = this.holder;
    if (h && h.stream === null && this.nowMs() - h.droppedAtMs! >= this.options.leaseMs) this.holder = null;
  }
}

function seconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
}
