import { describe, expect, test } from 'vitest';
import { markers, replaceBetweenMarkers } from './doc-markers.ts';

describe('replaceBetweenMarkers', () => {
  const { start, end } = markers('summary');

  test('replaces only the text between the markers and keeps the rest byte for byte', () => {
    const before = `# Title\n\nhand text\n${start}\nold table\n${end}\n\nmore hand text\n`;
    const after = replaceBetweenMarkers(before, 'summary', 'new table');
    expect(after).toBe(`# Title\n\nhand text\n${start}\nnew table\n${end}\n\nmore hand text\n`);
    expect(replaceBetweenMarkers(after, 'summary', 'new table')).toBe(after);
  });

  test('appends a section when the markers are missing', () => {
    const after = replaceBetweenMarkers('# Title\n\ntext', 'summary', 'table\n');
    expect(after).toBe(`# Title\n\ntext\n\n${start}\ntable\n${end}\n`);
  });

  test('leaves other sections alone', () => {
    const other = markers('other');
    const text = `${other.start}\nkeep\n${other.end}\n${start}\nx\n${end}\n`;
    expect(replaceBetweenMarkers(text, 'summary', 'y')).toBe(`${other.start}\nkeep\n${other.end}\n${start}\ny\n${end}\n`);
  });

  test('rejects a lone, reversed or repeated marker', () => {
    expect(() => replaceBetweenMarkers(`${start}\nno end\n`, 'summary', 'x')).toThrow(/must appear once each/);
    expect(() => replaceBetweenMarkers(`${end}\n${start}\n`, 'summary', 'x')).toThrow(/start before end/);
    expect(() => replaceBetweenMarkers(`${start}\n${end}\n${start}\n${end}\n`, 'summary', 'x')).toThrow(/once each/);
  });
});
