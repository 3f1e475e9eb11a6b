import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.ts';
import { canTransition, stateOf, transition, type AdapterPhase, type AdapterPhaseKind } from './adapter-lifecycle.ts';

const KINDS: AdapterPhaseKind[] = ['registered', 'fetching', 'cached', 'awaiting-slot', 'decoding', 'resident', 'evicted', 'failed', 'removed'];

/** Lives an adapter goes through (adapter-manager.ts); each must be allowed move by move. */
const WALKS: AdapterPhaseKind[][] = [
  ['registered', 'fetching', 'awaiting-slot', 'decoding', 'resident', 'cached', 'decoding', 'resident', 'evicted', 'fetching'],
  ['registered', 'cached', 'evicted', 'fetching', 'failed', 'fetching', 'awaiting-slot', 'decoding', 'failed', 'decoding'],
  ['registered', 'awaiting-slot', 'decoding', 'resident', 'registered', 'cached', 'awaiting-slot', 'decoding', 'removed'],
  ['registered', 'evicted', 'awaiting-slot', 'decoding', 'resident', 'removed'],
  ['registered', 'fetching', 'failed', 'awaiting-slot', 'registered', 'fetching', 'registered', 'removed'],
  ['registered', 'cached', 'fetching', 'awaiting-slot', 'removed'],
];

/** Moves that would make the phase lie (bytes or a slot it does not have) or skip the work that earns it. */
const REFUSED: Array<[AdapterPhaseKind, AdapterPhaseKind]> = [
  ['registered', 'resident'],
  ['registered', 'decoding'],
  ['registered', 'failed'],
  ['fetching', 'resident'],
  ['fetching', 'cached'],
  ['fetching', 'decoding'],
  ['awaiting-slot', 'cached'],
  ['awaiting-slot', 'fetching'],
  ['decoding', 'cached'],
  ['decoding', 'awaiting-slot'],
  ['resident', 'fetching'],
  ['resident', 'decoding'],
  ['resident', 'failed'],
  ['evicted', 'resident'],
  ['failed', 'resident'],
  ['cached', 'resident'],
  ...KINDS.map((to): [AdapterPhaseKind, AdapterPhaseKind] => ['removed', to]),
];

function phase(kind: AdapterPhaseKind): AdapterPhase {
  switch (kind) {
    case 'awaiting-slot':
      return { kind, item: { kind: 'cpeft', bytes: new Uint8Array(1), rank: 1, sizeBytes: 1, compressedSizeBytes: 1, decompressedSizeBytes: 4 } };
    case 'decoding':
    case 'resident':
      return { kind, slot: 1 };
    case 'failed':
      return { kind, error: new TesseraError('ADAPTER_LOAD_FAILED', 'x'), retryAtMs: 0 };
    default:
      return { kind } as AdapterPhase;
  }
}

describe('adapter lifecycle', () => {
  it.each(WALKS.map((walk) => [walk.join(' -> '), walk]))('allows %s', (_name, walk) => {
    const subject = { adapterId: 'a', phase: phase(walk[0]) };
    for (const kind of walk.slice(1)) {
      const next = phase(kind);
      expect(transition(subject, next)).toBe(next);
      expect(subject.phase).toBe(next);
    }
  });

  it('allows reload (-> registered) and unload (-> removed) from every live phase', () => {
    for (const from of KINDS.filter((k) => k !== 'removed')) {
      expect([from, canTransition(from, 'registered'), canTransition(from, 'removed')]).toEqual([from, true, true]);
    }
  });

  it.each(REFUSED)('refuses %s -> %s with INTERNAL naming both, and changes nothing', (from, to) => {
    const subject = { adapterId: 'a', phase: phase(from) };
    expect(canTransition(from, to)).toBe(false);
    expect(() => transition(subject, phase(to))).toThrow(`adapter "a": no transition from ${from} to ${to}`);
    expect(subject.phase.kind).toBe(from);
  });

  it('reports bytes held for a busy slot as cached and every other phase by its name', () => {
    for (const kind of KINDS.filter((k) => k !== 'awaiting-slot' && k !== 'removed')) expect(stateOf(phase(kind))).toBe(kind);
    expect(stateOf(phase('awaiting-slot'))).toBe('cached');
  });
});
