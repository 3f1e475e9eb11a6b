/**
 * Where an adapter's bytes come from, checked before anything is read:
 *   - a local PEFT directory or `.cpeft` file, whose real path (symlinks resolved) lies inside one of the allowed
 *     roots; relative paths are taken relative to the first root;
 *   - an http(s) URL of a `.cpeft` file that starts with one of the allowed URL prefixes, fetched with a byte limit.
 *
 * Local sources are resolved once (realpath, checked against the roots) and then read through descriptors opened
 * beneath the root, one path component at a time, never following a symlink (see openBeneath): what is read is what
 * was checked, even while someone swaps a directory of the path for a symlink to elsewhere. A source that vanishes
 * or changes shape between resolution and reading is refused with the same code as a missing one.
 *
 * Error codes, by case:
 *   INVALID_ARGUMENT           the source names something the client may not or cannot use: outside the roots (also
 *                              through a symlink), missing, vanished or changed while it was read, not a regular
 *                              file/directory, not PEFT/.cpeft, bad URL scheme or prefix. Paths outside the roots get
 *                              the same message whether they exist or not.
 *   ADAPTER_LOAD_FAILED        the source exists but its content is unacceptable: larger than the byte limit.
 *   ADAPTER_SOURCE_UNAVAILABLE the remote source cannot be reached or answers an HTTP error (retryable).
 * Messages name local files by their path inside the root, never by an absolute server path; the roots themselves
 * and absolute paths go to the log (`logger`), not to the client.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../errors.ts';
import { openSafetensorsFd } from '../model/checkpoint/safetensors-reader.ts';
import type { ModelConfig } from '../model/model-config.ts';
import { parsePeftAdapterConfig, readPeftAdapterFrom, type PeftAdapter } from './peft/peft-adapter.ts';

export type ResolvedSource =
  | { kind: 'peft-dir'; path: string; local: LocalLocation }
  | { kind: 'cpeft-file'; path: string; local: LocalLocation }
  | { kind: 'url'; url: string };

/** A checked local path: the real root it lies in and the components below it (no symlinks, no '..'). */
export interface LocalLocation {
  root: string;
  parts: readonly string[];
  /** The path below the root, for messages (`adapters/a0`). */
  shown: string;
}

export interface SourcePolicy {
  /** Directories local sources must resolve inside (realpath). */
  allowedRoots: readonly string[];
  /** URL prefixes remote sources must start with; empty = no remote sources. */
  allowedUrlPrefixes: readonly string[];
  /** Largest file accepted, bytes. */
  maxFileBytes: number;
  /** Receives the server-side details (absolute paths, the roots) of refused local sources. */
  logger?: { warn(obj: object, msg: string): void } | null;
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

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

const given = (source: string) => `Given: ${JSON.stringify(source)}`;
const missing = (source: string) => invalid(`\`source\` ${JSON.stringify(source)} does not exist inside the adapter roots`);

/** Checks `source` against the policy and says what it is. Throws INVALID_ARGUMENT / ADAPTER_LOAD_FAILED. */
export function resolveAdapterSource(source: string, policy: SourcePolicy): ResolvedSource {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) return resolveUrl(source, policy);
  if (policy.allowedRoots.length === 0) throw invalid(`\`source\` must be a URL: no local adapter roots are configured. ${given(source)}`);
  const roots = policy.allowedRoots.map((r) => path.resolve(r));
  const outside = (resolved: string) => {
    policy.logger?.warn({ source, resolved, allowedRoots: roots }, 'adapter source refused: outside the adapter roots');
    return invalid(`\`source\` must resolve inside the server's adapter roots. ${given(source)}`);
  };
  const lexical = path.resolve(roots[0], source);
  if (!roots.some((r) => isInside(lexical, r))) throw outside(lexical);
  const realRoots = roots.map((r) => realpathOrNull(r) ?? r);
  const real = realpathOrNull(lexical);
  if (real === null) throw missing(source);
  const rootOf = (p: string) => realRoots.find((r) => isInside(p, r)) ?? null;
  const root = rootOf(real);
  if (root === null) throw outside(real);
  const local: LocalLocation = { root, parts: path.relative(root, real).split(path.sep).filter((p) => p !== ''), shown: path.relative(root, real) || '.' };
  const stat = statOrNull(real);
  if (stat === null) throw missing(source);
  if (stat.isDirectory()) {
    for (const name of [PEFT_CONFIG, PEFT_WEIGHTS]) {
      const file = realpathOrNull(path.join(real, name));
      if (file === null) throw invalid(`\`source\` ${JSON.stringify(source)} is a directory without ${name}: not a PEFT adapter`);
      if (rootOf(file) === null) throw outside(file);
      if (file !== path.join(real, name)) {
        throw invalid(`\`source\` ${JSON.stringify(`${local.shown}/${name}`)} is a symlink: the files of a PEFT directory must be regular files`);
      }
      checkRegularFile(statOrNull(file), `${local.shown}/${name}`, policy.maxFileBytes);
    }
    return { kind: 'peft-dir', path: real, local };
  }
  checkRegularFile(stat, local.shown, policy.maxFileBytes);
  if (!real.endsWith('.cpeft')) throw invalid(`\`source\` must be a PEFT directory or a .cpeft file. ${given(source)}`);
  return { kind: 'cpeft-file', path: real, local };
}

function checkRegularFile(stat: fs.Stats | null, shown: string, maxFileBytes: number): void {
  if (stat === null) throw invalid(`\`source\` ${JSON.stringify(shown)} does not exist inside the adapter roots`);
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
    throw invalid(`\`source\` is not a valid URL. ${given(source)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`\`source\` URL scheme must be http or https. Given: ${JSON.stringify(url.protocol)}`);
  if (url.username !== '' || url.password !== '') throw invalid('`source` URL must not carry credentials');
  if (!policy.allowedUrlPrefixes.some((prefix) => url.href.startsWith(prefix))) {
    throw invalid(`\`source\` URL must start with one of the allowed prefixes ${JSON.stringify(policy.allowedUrlPrefixes)}. Given: ${JSON.stringify(url.href)}`);
  }
  return { kind: 'url', url: url.href };
}

const { O_RDONLY, O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK } = fs.constants;

/** Errno codes of a path that vanished, moved, or had a component replaced by a symlink or a file. */
const CHANGED_CODES = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EMLINK', 'ENXIO']);

function changed(local: LocalLocation, err: unknown): TesseraError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && CHANGED_CODES.has(code)) {
    return invalid(`\`source\` ${JSON.stringify(local.shown)} changed while it was read (a part of its path vanished, moved or became a symlink); load it again`);
  }
  return new TesseraError('ADAPTER_LOAD_FAILED', `adapter ${JSON.stringify(local.shown)} could not be read (${code ?? 'I/O error'})`, { cause: err });
}

/** Whether /proc/self/fd resolves paths relative to an open descriptor (Linux with /proc mounted). */
let procFdWorks: boolean | null = null;

function procFdAvailable(): boolean {
  procFdWorks ??= (() => {
    try {
      const fd = fs.openSync('/', O_RDONLY | O_DIRECTORY);
      try {
        return fs.statSync(`/proc/self/fd/${fd}/.`).ino === fs.statSync('/').ino;
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return false;
    }
  })();
  return procFdWorks;
}

/**
 * Opens `parts` beneath `root`, component by component, each with O_NOFOLLOW: a component that is (or became) a
 * symlink fails with ELOOP instead of being followed. Node has no openat(2), so the next component is opened as
 * `/proc/self/fd/<dir fd>/<name>`: the kernel resolves that magic link to the open directory itself (not by its
 * path), which makes it openat(dirfd, name, O_NOFOLLOW). The last component opens with O_NONBLOCK (a FIFO must not
 * block) or O_DIRECTORY. Without /proc (macOS, a container without it) the whole path is opened at once with
 * O_NOFOLLOW, which guards only its last component: a swap of an earlier component is then not detected.
 */
async function openBeneath(local: LocalLocation, leaf: 'file' | 'dir', extra: readonly string[] = []): Promise<fs.promises.FileHandle> {
  const parts = [...local.parts, ...extra];
  const leafFlags = O_RDONLY | O_NOFOLLOW | (leaf === 'dir' ? O_DIRECTORY : O_NONBLOCK);
  try {
    if (parts.length === 0) return await fs.promises.open(local.root, O_RDONLY | O_DIRECTORY);
    if (!procFdAvailable()) return await fs.promises.open(path.join(local.root, ...parts), leafFlags);
    let handle = await fs.promises.open(local.root, O_RDONLY | O_DIRECTORY);
    try {
      for (let i = 0; i < parts.length; i++) {
        const last = i === parts.length - 1;
        const next = await fs.promises.open(`/proc/self/fd/${handle.fd}/${parts[i]}`, last ? leafFlags : O_RDONLY | O_NOFOLLOW | O_DIRECTORY);
        await handle.close();
        handle = next;
      }
      return handle;
    } catch (err) {
      await handle.close();
      throw err;
    }
  } catch (err) {
    throw changed(local, err);
  }
}

/** Checks an opened file on its descriptor: regular, at most `maxFileBytes` (the file may have grown since resolved). */
async function checkOpenedFile(handle: fs.promises.FileHandle, shown: string, maxFileBytes: number): Promise<number> {
  const stat = await handle.stat();
  if (!stat.isFile()) throw invalid(`\`source\` ${JSON.stringify(shown)} is not a regular file`);
  if (stat.size > maxFileBytes) {
    throw new TesseraError('ADAPTER_LOAD_FAILED', `adapter file ${JSON.stringify(shown)} must be <= ${maxFileBytes} bytes. Given: ${stat.size} bytes`);
  }
  return stat.size;
}

/** Reads a whole opened regular file of at most `maxFileBytes`. */
async function readWhole(handle: fs.promises.FileHandle, shown: string, maxFileBytes: number): Promise<Uint8Array> {
  const size = await checkOpenedFile(handle, shown, maxFileBytes);
  const bytes = new Uint8Array(size);
  let filled = 0;
  while (filled < bytes.length) {
    const { bytesRead } = await handle.read(bytes, filled, bytes.length - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return bytes.subarray(0, filled);
}

/** The bytes of a resolved `.cpeft` file, read through a descriptor opened beneath its root. */
export async function readLocalFile(source: Extract<ResolvedSource, { kind: 'cpeft-file' }>, maxFileBytes: number): Promise<Uint8Array> {
  const { local } = source;
  const handle = await openBeneath(local, 'file');
  try {
    return await readWhole(handle, local.shown, maxFileBytes);
  } finally {
    await handle.close();
  }
}

/**
 * Reads a resolved PEFT directory as a LoRA adapter for `config`: adapter_config.json and adapter_model.safetensors
 * opened through one directory descriptor beneath the root, the weights read by positioned reads on their
 * descriptor. Returns the adapter and the size of its weights file.
 */
export async function readPeftSource(
  source: Extract<ResolvedSource, { kind: 'peft-dir' }>,
  maxFileBytes: number,
  config: ModelConfig,
): Promise<{ adapter: PeftAdapter; weightsFileBytes: number }> {
  const { local } = source;
  const shown = (name: string) => (local.shown === '.' ? name : `${local.shown}/${name}`);
  const dir = await openBeneath(local, 'dir');
  try {
    const openInDir = async (name: string) => {
      if (!procFdAvailable()) return openBeneath(local, 'file', [name]);
      try {
        return await fs.promises.open(`/proc/self/fd/${dir.fd}/${name}`, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
      } catch (err) {
        throw changed(local, err);
      }
    };
    const configHandle = await openInDir(PEFT_CONFIG);
    let configJson: unknown;
    try {
      const bytes = await readWhole(configHandle, shown(PEFT_CONFIG), maxFileBytes);
      try {
        configJson = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
      } catch (err) {
        throw new TesseraError('CHECKPOINT_INVALID', `${shown(PEFT_CONFIG)}: cannot read JSON (${(err as Error).message})`, { cause: err });
      }
    } finally {
      await configHandle.close();
    }
    const adapterConfig = parsePeftAdapterConfig(configJson, shown(PEFT_CONFIG));
    const weights = await openInDir(PEFT_WEIGHTS);
    try {
      const weightsFileBytes = await checkOpenedFile(weights, shown(PEFT_WEIGHTS), maxFileBytes);
      const tensors = openSafetensorsFd(weights.fd, shown(PEFT_WEIGHTS), { closesFd: false });
      const adapter = readPeftAdapterFrom({ adapterConfig, weights: tensors, weightsName: shown(PEFT_WEIGHTS), dirName: local.shown }, config);
      return { adapter, weightsFileBytes };
    } finally {
      await weights.close();
    }
  } finally {
    await dir.close();
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
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}
