import { describe, expect, it } from 'vitest';
import { closest, didYouMean, editDistance } from './did-you-mean.ts';

describe('did you mean', () => {
  it('measures edits, counting a swap of neighbours as one', () => {
    expect(editDistance('port', 'port')).toBe(0);
    expect(editDistance('prot', 'port')).toBe(1);
    expect(editDistance('adapter-dir', 'adapters-dir')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('suggests the closest name only when it is close enough', () => {
    const flags = ['port', 'metrics-port', 'http-port', 'adapters-dir', 'adapter-root'];
    expect(closest('adapter-dir', flags)).toBe('adapters-dir');
    expect(closest('metric-port', flags)).toBe('metrics-port');
    expect(closest('prot', flags)).toBe('port');
    expect(closest('temperature', flags)).toBeNull();
    expect(didYouMean('htp-port', flags, (f) => `--${f}`)).toBe(' (did you mean --http-port?)');
    expect(didYouMean('zzz', flags)).toBe('');
  });
});
