import { describe, expect, it } from 'vitest';
import { createStopSequenceMatcher } from './stop-sequence-matcher.ts';

function feed(stops: string[], chunks: string[]): { out: string[]; stoppedAt: number } {
  const m = createStopSequenceMatcher(stops);
  const out: string[] = [];
  for (let i = 0; i < chunks.length; i++) {
    const r = m.push(chunks[i]);
    out.push(r.text);
    if (r.stopped) return { out, stoppedAt: i };
  }
  out.push(m.flush());
  return { out, stoppedAt: -1 };
}

describe('stop sequence matcher', () => {
  it('matches across chunk edges and emits nothing of the stop sequence', () => {
    const r = feed(['END'], ['hello E', 'N', 'D and more']);
    expect(r.stoppedAt).toBe(2);
    expect(r.out.join('')).toBe('hello ');
    expect(r.out[0]).toBe('hello '); // 'E' held back
    expect(r.out[1]).toBe('');
  });

  it('releases held text when the prefix turns out not to be a stop sequence', () => {
    const r = feed(['END'], ['say E', 'NX', 'EN']);
    expect(r.stoppedAt).toBe(-1);
    expect(r.out).toEqual(['say ', 'ENX', '', 'EN']);
  });

  it('stops at the earliest of several stop sequences', () => {
    const r = feed(['world', 'lo w'], ['hel', 'lo wor', 'ld']);
    expect(r.out.join('')).toBe('hel');
  });

  it('finds a stop sequence inside one chunk and overlapping prefixes', () => {
    expect(feed(['aab'], ['aaa', 'ab!']).out.join('')).toBe('aa');
    expect(feed(['\n\n'], ['line\n', '\nnext']).out.join('')).toBe('line');
  });
});
