import { describe, expect, it } from 'vitest';
import { createByteDetokenizer } from '../testing/byte-detokenizer.ts';
import { createIncrementalDetokenizer } from './incremental-detokenizer.ts';

describe('incremental detokenizer', () => {
  // 'é' = C3 A9, '€' = E2 82 AC, '😀' = F0 9F 98 80
  const det = createByteDetokenizer({ 40: [0xc3], 41: [0xa9], 42: [0xe2], 43: [0x82, 0xac], 44: [0xf0, 0x9f], 45: [0x98], 46: [0x80], 47: ' x' });

  it('never emits half a UTF-8 character and its deltas add up to the full decode', () => {
    const ids = [2, 40, 41, 3, 42, 43, 44, 45, 46, 47, 4];
    const inc = createIncrementalDetokenizer(det, [5, 6]);
    const deltas = ids.map((id) => inc.push(id));
    expect(deltas).toEqual(['a', '', 'é', 'b', '', '€', '', '', '😀', ' x', 'c']);
    expect(deltas.join('') + inc.flush()).toBe(det.decode(ids));
    for (const d of deltas) expect(d.includes('\uFFFD')).toBe(false);
  });

  it('flush emits a dangling partial character as U+FFFD at the end', () => {
    const inc = createIncrementalDetokenizer(det, []);
    expect(inc.push(2)).toBe('a');
    expect(inc.push(42)).toBe('');
    expect(inc.flush()).toBe('\uFFFD');
  });

  it('keeps working past window compaction', () => {
    const inc = createIncrementalDetokenizer(det, [2]);
    let text = '';
    const ids: number[] = [];
    for (let i = 0; i < 300; i++) {
      const id = i % 5 === 0 ? 40 : i % 5 === 1 ? 41 : 2 + (i % 26);
      ids.push(id);
      text += inc.push(id);
    }
    expect(text + inc.flush()).toBe(det.decode(ids));
  });
});
