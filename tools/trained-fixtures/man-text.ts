/**
 * Man page source (troff with the man macros) -> plain text, for training text. Not a renderer: no filling, no
 * justification, no tables laid out. It keeps what a reader reads: section headings, paragraphs (one source line per
 * line, as man page sources are written: a sentence per line), font macros' words, tagged paragraph tags and table
 * cells; it drops comments, layout requests, macro and string definitions, and escape sequences that only move or
 * restyle text. Deterministic and independent of the installed groff version.
 */

/** Named glyphs (`\(xx`, `\[name]`) that stand for a character a reader sees; unknown names give ''. */
const GLYPHS: Record<string, string> = {
  em: '—', en: '–', hy: '-', mi: '-', bu: '•', aq: "'", dq: '"', lq: '“', rq: '”', oq: '‘', cq: '’', Fo: '«', Fc: '»',
  fo: '‹', fc: '›', co: '©', rg: '®', tm: '™', de: '°', mu: '×', di: '÷', pl: '+', eq: '=', '+-': '±', ti: '~', ha: '^',
  ga: '`', aa: '´', rs: '\\', sl: '/', ba: '|', br: '|', lh: '☜', rh: '☞', '->': '→', '<-': '←', '>=': '≥', '<=': '≤',
  '!=': '≠', '==': '≡', '**': '*', sc: '§', ps: '¶', ct: '¢', Eu: '€', eu: '€', Po: '£', Ye: '¥', ss: 'ß', at: '@',
  sh: '#', Do: '$', lB: '[', rB: ']', lC: '{', rC: '}', la: '⟨', ra: '⟩', dg: '†', dd: '‡', OK: '✓', 'r!': '¡', 'r?': '¿',
  ':a': 'ä', ':o': 'ö', ':u': 'ü', ':A': 'Ä', ':O': 'Ö', ':U': 'Ü', ':e': 'ë', ':i': 'ï', "'a": 'á', "'e": 'é', "'i": 'í',
  "'o": 'ó', "'u": 'ú', "'E": 'É', '`a': 'à', '`e': 'è', '`u': 'ù', '^a': 'â', '^e': 'ê', '^i': 'î', '^o': 'ô', '^u': 'û',
  ',c': 'ç', ',C': 'Ç', '~n': 'ñ', '~N': 'Ñ', '~a': 'ã', '~o': 'õ', oe: 'œ', ae: 'æ', 'Sd': 'ð', 'o/': 'ø', 'ao': 'å',
};

/** Predefined strings (`\*x`, `\*(xx`, `\*[name]`) of the man macros. */
const STRINGS: Record<string, string> = { R: '®', Tm: '™', lq: '“', rq: '”', S: '', HF: '' };

/** Macros whose arguments are one run of words (joined with spaces). */
const JOINED = new Set(['B', 'I', 'SM', 'SB', 'SH', 'SS', 'UR', 'MT', 'OP', 'SY', 'Nm', 'Ar', 'Fl', 'Pa']);
/** Alternating-font macros: arguments are written without spaces between them. */
const ALTERNATING = new Set(['BR', 'BI', 'IB', 'IR', 'RB', 'RI']);
/** Requests and macros that end a paragraph (an empty line in the text). */
const BREAKS = new Set(['PP', 'LP', 'P', 'sp', 'TP', 'TQ', 'HP', 'RS', 'RE', 'EX', 'EE', 'nf', 'fi', 'Sh', 'Pp']);

/** The escape at `s[i]` (just after a backslash): its replacement and the index after it. */
function escapeAt(s: string, i: number): [string, number] {
  const c = s[i];
  const bracketed = (from: number): [string, number] => {
    const end = s.indexOf(']', from);
    return end < 0 ? [s.slice(from), s.length] : [s.slice(from, end), end + 1];
  };
  const named = (from: number): [string, number] => {
    if (s[from] === '(') return [s.slice(from + 1, from + 3), from + 3];
    if (s[from] === '[') return bracketed(from + 1);
    return [s[from] ?? '', from + 1];
  };
  const delimited = (from: number): number => {
    const d = s[from];
    const end = d === undefined ? -1 : s.indexOf(d, from + 1);
    return end < 0 ? s.length : end + 1;
  };
  switch (c) {
    case undefined:
      return ['', i];
    case 'e':
    case '\\':
      return ['\\', i + 1];
    case '-':
      return ['-', i + 1];
    case '.':
      return ['.', i + 1];
    case "'":
      return ["'", i + 1];
    case '`':
      return ['`', i + 1];
    case ' ':
    case '~':
    case '0':
      return [' ', i + 1];
    case 't':
      return ['\t', i + 1];
    case '&':
    case '|':
    case '^':
    case ',':
    case '/':
    case '%':
    case ':':
    case 'c':
    case 'u':
    case 'd':
    case 'z':
    case 'p':
    case 'r':
    case 'a':
      return ['', i + 1];
    case '(':
    case '[': {
      const [name, next] = named(i);
      if (/^u[0-9A-Fa-f]{4,6}$/.test(name)) return [String.fromCodePoint(parseInt(name.slice(1), 16)), next];
      return [GLYPHS[name] ?? '', next];
    }
    case '*': {
      const [name, next] = named(i + 1);
      return [STRINGS[name] ?? '', next];
    }
    case 'f':
    case 'F':
    case 'n':
    case 'g':
    case 'k':
    case 'm':
    case 'M':
    case 'V':
    case 'Y':
      return ['', named(i + 1)[1]];
    case 's': {
      const m = /^s(\[[^\]]*\]|\([+-]?\d\d|[+-]?\d)/.exec(s.slice(i));
      return ['', m ? i + m[0].length : i + 1];
    }
    case 'h':
    case 'v':
    case 'w':
    case 'o':
    case 'l':
    case 'L':
    case 'D':
    case 'X':
    case 'x':
    case 'b':
    case 'S':
    case 'A':
    case 'B':
    case 'C':
    case 'N':
    case 'R':
    case 'Z':
      return ['', delimited(i + 1)];
    case '"':
    case '#':
      return ['', s.length]; // comment to the end of the line
    default:
      return [c, i + 1];
  }
}

/** Replaces the escapes of one line of text. */
export function unescapeTroff(line: string): string {
  let out = '';
  let i = 0;
  while (i < line.length) {
    const bs = line.indexOf('\\', i);
    if (bs < 0) {
      out += line.slice(i);
      break;
    }
    out += line.slice(i, bs);
    const [text, next] = escapeAt(line, bs + 1);
    out += text;
    i = next;
  }
  return out;
}

/** Splits a request line's arguments: blanks separate, "double quotes" group, "" inside quotes is one quote. */
export function requestArgs(rest: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < rest.length) {
    while (rest[i] === ' ' || rest[i] === '\t') i++;
    if (i >= rest.length) break;
    let arg = '';
    if (rest[i] === '"') {
      i++;
      while (i < rest.length) {
        if (rest[i] === '"') {
          if (rest[i + 1] === '"') {
            arg += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (rest[i] === '\\' && i + 1 < rest.length) {
          arg += rest.slice(i, i + 2);
          i += 2;
          continue;
        }
        arg += rest[i++];
      }
    } else {
      while (i < rest.length && rest[i] !== ' ' && rest[i] !== '\t') {
        if (rest[i] === '\\' && i + 1 < rest.length) {
          arg += rest.slice(i, i + 2);
          i += 2;
          continue;
        }
        arg += rest[i++];
      }
    }
    args.push(arg);
  }
  return args;
}

/** True when the page is only a link to another page (`.so man3/other.3`). */
export function isManLink(source: string): boolean {
  return source.split('\n').some((l) => /^\.so\s/.test(l)) && source.split('\n').filter((l) => l.trim() !== '' && !/^['.]\\"/.test(l)).length <= 2;
}

/** Man page source -> text. */
export function manToText(source: string): string {
  const out: string[] = [];
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  let inTable = false;
  let tableFormat = false;
  let skipUntilDotDot = false;
  const paragraph = (): void => {
    if (out.length > 0 && out[out.length - 1] !== '') out.push('');
  };
  const text = (t: string): void => {
    const cleaned = t.replace(/[ \t]+/g, ' ').trim();
    if (cleaned !== '') out.push(cleaned);
  };
  for (let k = 0; k < lines.length; k++) {
    let line = lines[k];
    // continuation: a line ending in an unescaped backslash joins the next one
    while (/(^|[^\\])(\\\\)*\\$/.test(line) && k + 1 < lines.length) line = line.slice(0, -1) + lines[++k];
    if (skipUntilDotDot) {
      if (/^\.\.\s*$/.test(line)) skipUntilDotDot = false;
      continue;
    }
    if (inTable) {
      if (/^\.TE\b/.test(line)) {
        inTable = false;
        paragraph();
        continue;
      }
      if (tableFormat) {
        if (/\.\s*$/.test(line)) tableFormat = false;
        continue;
      }
      if (/^[.'][a-zA-Z]/.test(line) || /^[_=]\s*$/.test(line)) continue;
      text(unescapeTroff(line.replace(/T\{|T\}/g, '')).replace(/\t/g, '  '));
      continue;
    }
    if (line.startsWith('.') || line.startsWith("'")) {
      const m = /^[.']\s*([^\s\\]+)?(.*)$/.exec(line);
      const name = m?.[1] ?? '';
      const rest = m?.[2] ?? '';
      if (name === '' || name.startsWith('\\"')) continue; // comment or empty request
      if (name === 'de' || name === 'de1' || name === 'am' || name === 'ig') {
        skipUntilDotDot = true;
        continue;
      }
      if (name === 'TS') {
        inTable = true;
        tableFormat = true;
        paragraph();
        continue;
      }
      const args = requestArgs(rest);
      if (name === 'SH' || name === 'SS' || name === 'Sh' || name === 'Ss') {
        paragraph();
        text(unescapeTroff(args.join(' ')));
        continue;
      }
      if (JOINED.has(name)) {
        text(unescapeTroff(args.join(' ')));
        continue;
      }
      if (ALTERNATING.has(name)) {
        text(unescapeTroff(args.join('')));
        continue;
      }
      if (name === 'IP') {
        paragraph();
        const tag = unescapeTroff(args[0] ?? '');
        if (tag.trim() !== '') text(tag);
        continue;
      }
      if (BREAKS.has(name)) paragraph();
      continue; // TH, layout requests, conditionals, registers, strings, anything else
    }
    text(unescapeTroff(line));
  }
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  return out.join('\n');
}
