/**
 * The one state machine of an adapter's current version. The phase is the only truth about where the adapter is;
 * everything it needs (the slot it occupies, the bytes it holds while waiting for a slot, the error and retry time
 * of a failure) lives in the phase itself, and transition() refuses moves the table below does not allow.
 *
 *   registered --acquire--> fetching --read ok--> awaiting-slot --slot free--> decoding --written--> resident
 *   registered --LoadAdapter (read before registering)--> cached | awaiting-slot (prefetch: pinned or a slot free)
 *   cached --acquire--> decoding | awaiting-slot (every slot busy)
 *   resident --slot evicted--> cached (host copy kept) | evicted (no copy in any tier)
 *   cached --host LRU drops it--> evicted --acquire--> fetching
 *   fetching | decoding --error--> failed --acquire after the backoff--> fetching | awaiting-slot | decoding
 *   any --reload (a new version)--> registered;  any --unload--> removed (terminal)
 *
 * Async work (a read, a slot write) keeps the phase object it started from: when it settles, `entry.phase` is still
 * that object only if no reload, unload or failure happened meanwhile, so stale completions are recognised without
 * flags or version arithmetic.
 */
import { TesseraError } from '../errors.ts';
import type { AdapterState } from './adapter-status.ts';
import type { HostItem } from './adapter-loader.ts';

export type AdapterPhase =
  /** Known by id and source; nothing read for this version yet. */
  | { readonly kind: 'registered' }
  /** Reading and validating the source. */
  | { readonly kind: 'fetching' }
  /** Bytes in the host tier. */
  | { readonly kind: 'cached' }
  /** Read and wanted by a request, but every device slot is busy: the bytes are held here (outside the host budget). */
  | { readonly kind: 'awaiting-slot'; readonly item: HostItem }
  /** Being written into device slot `slot`. */
  | { readonly kind: 'decoding'; readonly slot: number }
  /** In device slot `slot`. */
  | { readonly kind: 'resident'; readonly slot: number }
  /** Read before, now in no tier (device slot and host copy both dropped). */
  | { readonly kind: 'evicted' }
  /** The last read or slot write failed; acquires fail fast with `error` until `retryAtMs`. */
  | { readonly kind: 'failed'; readonly error: TesseraError; readonly retryAtMs: number }
  /** Unloaded: gone from the registry; only running sequences still hold its slots. */
  | { readonly kind: 'removed' };

export type AdapterPhaseKind = AdapterPhase['kind'];

/** Allowed moves, from -> to (reload to 'registered' and unload to 'removed' are allowed from every live phase). */
const NEXT: Readonly<Record<AdapterPhaseKind, readonly AdapterPhaseKind[]>> = {
  registered: ['fetching', 'cached', 'awaiting-slot', 'evicted'],
  fetching: ['awaiting-slot', 'failed'],
  cached: ['awaiting-slot', 'decoding', 'evicted', 'fetching'],
  'awaiting-slot': ['decoding'],
  decoding: ['resident', 'failed'],
  resident: ['cached', 'evicted'],
  evicted: ['fetching', 'awaiting-slot', 'decoding'],
  failed: ['fetching', 'awaiting-slot', 'decoding'],
  removed: [],
};

export function canTransition(from: AdapterPhaseKind, to: AdapterPhaseKind): boolean {
  if (from === 'removed') return false;
  if (to === 'registered' || to === 'removed') return true;
  return NEXT[from].includes(to);
}

/** Something that has a phase (the registry's entries). */
export interface HasPhase {
  readonly adapterId: string;
  phase: AdapterPhase;
}

/** Moves `subject` to `next` and returns `next`; INTERNAL on a move the table does not allow (a bug, never input). */
export function transition<P extends AdapterPhase>(subject: HasPhase, next: P): P {
  if (!canTransition(subject.phase.kind, next.kind)) {
    throw new TesseraError('INTERNAL', `adapter ${JSON.stringify(subject.adapterId)}: no transition from ${subject.phase.kind} to ${next.kind}`);
  }
  subject.phase = next;
  return next;
}

/** The state clients see (GetAdapter): a phase, with bytes held for a busy slot reported as cached. */
export function stateOf(phase: AdapterPhase): AdapterState {
  switch (phase.kind) {
    case 'awaiting-slot':
      return 'cached';
    case 'removed':
      return 'evicted';
    default:
      return phase.kind;
  }
}
