/**
 * Generated sections inside hand-written Markdown: the text between
 *   <!-- bench:NAME:start -->  and  <!-- bench:NAME:end -->
 * is replaced; everything else is kept byte for byte. A missing pair is appended at the end.
 */
import { TesseraError } from '../../src/errors.ts';

export function markers(name: string): { start: string; end: string } {
  return { start: `<!-- bench:${name}:start -->`, end: `<!-- bench:${name}:end -->` };
}

export function replaceBetweenMarkers(text: string, name: string, content: string): string {
  const { start, end } = markers(name);
  const body = `${start}\n${content.replace(/\n*$/, '\n')}${end}`;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from === -1 && to === -1) return `${text.replace(/\n*$/, '\n\n')}${body}\n`;
  if (from === -1 || to === -1 || to < from || text.indexOf(start, from + 1) !== -1 || text.indexOf(end, to + 1) !== -1) {
    throw new TesseraError('INVALID_ARGUMENT', `markers for section \`${name}\` must appear once each, start before end. Given: start at ${from}, end at ${to}`);
  }
  return text.slice(0, from) + body + text.slice(to + end.length);
}
