import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32 } from './crc32.ts';
import { SeededRandom } from './compeft-synthetic.ts';

describe('crc32', () => {
  it('gives the standard check value for "123456789"', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('matches zlib on random buffers and sub-ranges', () => {
    const rng = new SeededRandom(7);
    for (let trial = 0; trial < 50; trial++) {
      const len = rng.uint32() % 3000;
      const buf = new Uint8Array(len);
      for (let i = 0; i < len; i++) buf[i] = rng.uint32() & 0xff;
      expect(crc32(buf)).toBe(zlibCrc32(buf));
      const start = len > 0 ? rng.uint32() % len : 0;
      expect(crc32(buf, start, len)).toBe(zlibCrc32(buf.subarray(start)));
    }
  });
});
