import { describe, expect, test } from 'vitest';
import { isManLink, manToText, requestArgs, unescapeTroff } from './man-text.ts';
import { evenWindows } from './windows.ts';

describe('man page source -> text', () => {
  test('headings, paragraphs, font macros, tagged paragraphs; comments and layout requests dropped', () => {
    const source = [
      '.\\" Copyright line',
      ".TH SIGNAL 7 2023-02-05 \"Linux man-pages 6.03\"",
      '.SH NAME',
      'signal \\- overview of signals',
      '.SH DESCRIPTION',
      'Each signal has a current',
      '.IR disposition ,',
      'see',
      '.BR sigaction (2)',
      'and \\fBkill\\fP(1).',
      '.PP',
      '.TP',
      '.B Term',
      'Default action is to terminate.',
      '.IP \\(bu 3',
      'A bullet \\(em with a dash.',
      '.de XX',
      'hidden macro body',
      '..',
      '.in +4n',
      '.nf',
      'int x = 1; \\" trailing comment',
    ].join('\n');
    expect(manToText(source)).toBe(
      [
        'NAME',
        'signal - overview of signals',
        '',
        'DESCRIPTION',
        'Each signal has a current',
        'disposition,',
        'see',
        'sigaction(2)',
        'and kill(1).',
        '',
        'Term',
        'Default action is to terminate.',
        '',
        '•',
        'A bullet — with a dash.',
        '',
        'int x = 1;',
      ].join('\n'),
    );
  });

  test('tables keep their cells and drop their format lines', () => {
    const source = ['.TS', 'allbox;', 'lb lb', 'l l.', 'Name\tValue', '_', 'SIGHUP\t1', '.TE', 'after'].join('\n');
    expect(manToText(source)).toBe(['Name Value', 'SIGHUP 1', '', 'after'].join('\n'));
  });

  test('escapes: glyphs, unicode, strings, sizes, motions, literal backslash', () => {
    expect(unescapeTroff('a\\[u00E4]b \\(:o \\*(lqq\\*(rq \\s-1SMALL\\s0 \\h\'2n\'x \\e n \\-\\&')).toBe('aäb ö “q” SMALL x \\ n -');
    expect(unescapeTroff('\\f(CWcode\\f[R] \\fIit\\fR')).toBe('code it');
  });

  test('request arguments: quotes group, "" is a quote', () => {
    expect(requestArgs(' "signal handler" , x')).toEqual(['signal handler', ',', 'x']);
    expect(requestArgs('"say ""hi""" b\\ c')).toEqual(['say "hi"', 'b\\ c']);
  });

  test('a page that only sources another is a link', () => {
    expect(isManLink('.so man3/printf.3\n')).toBe(true);
    expect(isManLink('.TH X 1\n.SH NAME\nx \\- y\n.so other\n')).toBe(false);
  });
});

describe('held-out windows', () => {
  test('evenly spread over the stream, first at its start and last at its end, never overlapping when it is long enough', () => {
    const stream = Array.from({ length: 100 }, (_, i) => i);
    const w = evenWindows(stream, 4, 10);
    expect(w.map((x) => x[0])).toEqual([0, 30, 60, 90]);
    expect(w.every((x) => x.length === 10)).toBe(true);
    expect(() => evenWindows(stream.slice(0, 5), 1, 10)).toThrow(/shorter than one window/);
  });
});
