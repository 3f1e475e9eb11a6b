import { describe, expect, it } from 'vitest';
import { ShardLease } from './shard-lease.ts';

/** A lease on a clock the test moves by hand; streams are plain tokens. */
function lease(leaseMs: number) {
  let now = 0;
  const l = new ShardLease<string>({ leaseMs, nowMs: () => now });
  return { l, advance: (ms: number) => (now += ms) };
}

describe('ShardLease: one controller at a time', () => {
  it('refuses a second controller while the first is connected, however long that lasts', () => {
    const { l, advance } = lease(1000);
    expect(l.acquire('a', 'sa')).toEqual({ granted: true, replaces: null });
    advance(60_000);
    const refused = l.acquire('b', 'sb');
    expect(refused.granted).toBe(false);
    expect(refused).toEqual({ granted: false, reason: 'held by controller "a" (connected for 60.0 s)', freeInMs: null });
    expect(l.current).toEqual({ controllerId: 'a', connected: true });
  });

  it('keeps a dropped controller\'s worker for leaseMs (only it may come back), then frees it', () => {
    const { l, advance } = lease(1000);
    l.acquire('a', 'sa');
    l.release('sa', false);
    advance(400);
    const refused = l.acquire('b', 'sb');
    expect(refused).toEqual({ granted: false, reason: 'held by controller "a" (disconnected 0.4 s ago; free in 0.6 s unless it reconnects)', freeInMs: 600 });
    expect(l.current).toEqual({ controllerId: 'a', connected: false });
    // The same controller reconnecting within the lease gets it back.
    expect(l.acquire('a', 'sa2')).toEqual({ granted: true, replaces: null });
    l.release('sa2', false);
    advance(999);
    expect(l.acquire('b', 'sb').granted).toBe(false);
    advance(1);
    expect(l.current).toBeNull();
    expect(l.acquire('b', 'sb')).toEqual({ granted: true, replaces: null });
  });

  it('a controller that said goodbye frees the worker at once; leaseMs 0 frees it on any drop', () => {
    const { l } = lease(60_000);
    l.acquire('a', 'sa');
    l.release('sa', true);
    expect(l.acquire('b', 'sb').granted).toBe(true);
    const zero = lease(0);
    zero.l.acquire('a', 'sa');
    zero.l.release('sa', false);
    expect(zero.l.acquire('b', 'sb').granted).toBe(true);
  });

  it('the same controller reconnecting replaces its old stream; the old stream ending later changes nothing', () => {
    const { l } = lease(1000);
    l.acquire('a', 'old');
    expect(l.acquire('a', 'new')).toEqual({ granted: true, replaces: 'old' });
    l.release('old', true);
    expect(l.current).toEqual({ controllerId: 'a', connected: true });
    expect(l.acquire('b', 'sb').granted).toBe(false);
  });
});
