/** Reads a Prometheus text-format (0.0.4) /metrics page: enough to pick gauges and counters by name and labels. */
import { TesseraError } from '../errors.ts';

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$/;

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    while (text[i] === ' ' || text[i] === ',') i++;
    if (i >= text.length) break;
    const eq = text.indexOf('=', i);
    if (eq < 0 || text[eq + 1] !== '"') throw new TesseraError('INVALID_ARGUMENT', `bad label set in metrics line: ${line}`);
    const name = text.slice(i, eq).trim();
    let value = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\' && j + 1 < text.length) {
        const c = text[++j];
        value += c === 'n' ? '\n' : c;
      } else value += text[j];
    }
    if (j >= text.length) throw new TesseraError('INVALID_ARGUMENT', `unterminated label value in metrics line: ${line}`);
    labels[name] = value;
    i = j + 1;
  }
  return labels;
}

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  return Number(s);
}

/** Every sample line (comments and blank lines skipped); throws INVALID_ARGUMENT naming a malformed line. */
export function parsePrometheusText(body: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const raw of body.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new TesseraError('INVALID_ARGUMENT', `not a Prometheus sample line: ${line}`);
    const value = parseValue(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new TesseraError('INVALID_ARGUMENT', `bad sample value in metrics line: ${line}`);
    out.push({ name: m[1], labels: m[3] ? parseLabels(m[3], line) : {}, value });
  }
  return out;
}

/**
 * Sum of the samples named `name` whose labels match `where` (a label value or a predicate); null when no series
 * matches (the metric is absent, as opposed to 0).
 */
export function sumSamples(samples: readonly MetricSample[], name: string, where: Record<string, string | ((v: string | undefined) => boolean)> = {}): number | null {
  let total: number | null = null;
  for (const s of samples) {
    if (s.name !== name) continue;
    const ok = Object.entries(where).every(([k, want]) => (typeof want === 'function' ? want(s.labels[k]) : s.labels[k] === want));
    if (ok) total = (total ?? 0) + s.value;
  }
  return total;
}

/** GETs a /metrics page and parses it. */
export async function scrapeMetrics(url: string, timeoutMs = 5000): Promise<MetricSample[]> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new TesseraError('WORKER_UNAVAILABLE', `cannot scrape ${url}: ${(err as Error).message}`, { cause: err });
  }
  if (!res.ok) throw new TesseraError('WORKER_UNAVAILABLE', `scraping ${url} answered HTTP ${res.status}`);
  return parsePrometheusText(await res.text());
}
