/**
 * Where an adapter's bytes come from, checked before anything is read:
 *   - a local PEFT directory or `.cpeft` file, whose real path (symlinks resolved) lies inside one of the allowed
 *     roots; relative paths are taken relative to the first root;
 *   - an http(s) URL of a `.cpeft` file that starts with one of the allowed URL prefixes, fetched with a byte limit.
 *
 * Error codes, by case:
 *   INVALID_ARGUMENT           the source names something the client may not or cannot use: outside the roots (also
 *                              through a symlink), missing, not a regular file/directory, not PEFT/.cpeft, bad URL
 *                              scheme or prefix. Paths outside the roots get the same message whether they exist or not.
 *   ADAPTER_LOAD_FAILED        the source exists but its content is unacceptable: larger than the byte limit.
 *   ADAPTER_SOURCE_UNAVAILABLE the remote source cannot be reached or answers an HTTP error (retryable).
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../errors.ts';
import { concatArrays } from '../util/concat-arrays.ts';

export type ResolvedSource =
  | { kind: 'peft-dir'; path: string; configPath: string; weightsPath: string }
  | { kind: 'cpeft-file'; path: string }
  | { kind: 'url'; url: string };

export interface SourcePolicy {
  /** Directories local sources must resolve inside (realpath). */
  allowedRoots: readonly string[];
  /** URL prefixes remote sources must start with; empty = no remote sources. */
  allowedUrlPrefixes: readonly string[];
  /** Largest file accepted, bytes. */
  maxFileBytes: number;
}

const PEFT_CONFIG = 'adapter_config.json';
const PEFT_WEIGHTS = 'adapter_model.safetensors';

function invalid(message: string): TesseraError {
  return new TesseraError('INVALID_ARGUMENT', message);
}

function isInside(child: string, root: string): boolean {
  const rel = path.relative(root, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function realpathOrNull(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

/** Checks `source` against the policy and says what it is. Throws INVALID_ARGUMENT / ADAPTER_LOAD_FAILED. */
export function resolveAdapterSource(source: string, policy: SourcePolicy): ResolvedSource {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) return resolveUrl(source, policy);
  if (policy.allowedRoots.length === 0) throw invalid(`\`source\` must be a URL: no local adapter roots are configured. Given: ${JSON.stringify(source)}`);
  const outside = () =>
    invalid(`\`source\` must resolve inside the adapter roots ${JSON.stringify(policy.allowedRoots)}. Given: ${JSON.stringify(source)}`);
  const roots = policy.allowedRoots.map((r) => path.resolve(r));
  const lexical = path.resolve(roots[0], source);
  if (!roots.some((r) => isInside(lexical, r))) throw outside();
  const realRoots = roots.map((r) => realpathOrNull(r) ?? r);
  const real = realpathOrNull(lexical);
  if (real === null) throw invalid(`\`source\` ${JSON.stringify(source)} does not exist inside the adapter roots`);
  const inRoots = (p: string) => realRoots.some((r) => isInside(p, r));
  if (!inRoots(real)) throw outside();
  const stat = fs.statSync(real);
  if (stat.isDirectory()) {
    const files = [PEFT_CONFIG, PEFT_WEIGHTS].map((name) => {
      const file = realpathOrNull(path.join(real, name));
      if (file === null) throw invalid(`\`source\` ${JSON.stringify(source)} is a directory without ${name}: not a PEFT adapter`);
      if (!inRoots(file)) throw outside();
      checkRegularFile(file, `${source}/${name}`, policy.maxFileBytes);
      return file;
    });
    return { kind: 'peft-dir', path: real, configPath: files[0], weightsPath: files[1] };
  }
  checkRegularFile(real, source, policy.maxFileBytes);
  if (!real.endsWith('.cpeft')) throw invalid(`\`source\` must be a PEFT directory or a .cpeft file. Given: ${JSON.stringify(source)}`);
  return { kind: 'cpeft-file', path: real };
}

function checkRegularFile(file: string, shown: string, maxFileBytes: number): void {
  const stat = fs.statSync(file);
  if (!stat.isFile()) throw invalid(`\`source\` ${JSON.stringify(shown)} is not a regular file or directory`);
  if (stat.size > maxFileBytes) {
    throw new TesseraError('ADAPTER_LOAD_FAILED', `adapter file ${JSON.stringify(shown)} must be <= ${maxFileBytes} bytes. Given: ${stat.size} bytes`);
  }
}

function resolveUrl(source: string, policy: SourcePolicy): ResolvedSource {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw invalid(`\`source\` is not a valid URL. Given: ${JSON.stringify(source)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`\`source\` URL scheme must be http or https. Given: ${JSON.stringify(url.protocol)}`);
  if (url.username !== '' || url.password !== '') throw invalid('`source` URL must not carry credentials');
  if (!policy.allowedUrlPrefixes.some((prefix) => url.href.startsWith(prefix))) {
    throw invalid(`\`source\` URL must start with one of the allowed prefixes ${JSON.stringify(policy.allowedUrlPrefixes)}. Given: ${JSON.stringify(url.href)}`);
  }
  return { kind: 'url', url: url.href };
}

/** Reads a local file whose size was checked; re-checks the size actually read (the file may have grown). */
export async function readLocalFile(file: string, maxFileBytes: number): Promise<Uint8Array> {
  const handle = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw invalid(`\`source\` ${JSON.stringify(file)} is not a regular file`);
    if (stat.size > maxFileBytes) {
      throw new TesseraError('ADAPTER_LOAD_FAILED', `adapter file ${JSON.stringify(file)} must be <= ${maxFileBytes} bytes. Given: ${stat.size} bytes`);
    }
    const bytes = new Uint8Array(stat.size);
    let filled = 0;
    while (filled < bytes.length) {
      const { bytesRead } = await handle.read(bytes, filled, bytes.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return bytes.subarray(0, filled);
  } finally {
    await handle.close();
  }
}

/** GETs `url`, refusing bodies over `maxBytes` (by Content-Length and while streaming). */
export async function fetchWithLimit(url: string, opts: { maxBytes: number; timeoutMs: number }): Promise<Uint8Array> {
  const unavailable = (why: string, cause?: unknown) => new TesseraError('ADAPTER_SOURCE_UNAVAILABLE', `adapter source ${url}: ${why}`, { cause });
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs), redirect: 'error' });
  } catch (err) {
    throw unavailable(`request failed (${(err as Error).message})`, err);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw unavailable(`HTTP ${response.status}`);
  }
  const tooLarge = (given: string) =>
    new TesseraError('ADAPTER_LOAD_FAILED', `adapter at ${url} must be <= ${opts.maxBytes} bytes. Given: ${given} bytes`);
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > opts.maxBytes) {
    await response.body?.cancel();
    throw tooLarge(String(declared));
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of response.body ?? []) {
      total += chunk.byteLength;
      if (total > opts.maxBytes) throw tooLarge(`more than ${opts.maxBytes}`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw unavailable(`reading the body failed (${(err as Error).message})`, err);
  }
  return concatArrays(Uint8Array, chunks);
}
