/**
 * What piles up in Tessera's cache directory ($TESSERA_CACHE_DIR or ~/.cache/tessera): the generated default model,
 * converted models (one per checkpoint and quantization), bench checkpoints, and leftovers of interrupted runs. Read
 * by `tessera cache list`, pruned by `tessera cache clean`.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isConvertedModelDir, MANIFEST_FILE } from '../model/converted-model.ts';

export type CacheEntryKind = 'default-model' | 'converted' | 'bench' | 'leftover' | 'other';

export interface CacheEntry {
  path: string;
  kind: CacheEntryKind;
  bytes: number;
  /** Newest modification time of anything inside, ms since the epoch. */
  modifiedMs: number;
  /** Converted models: the checkpoint they were converted from. */
  source: string | null;
  /** Why `clean` removes it without --all, or null when it is still of use. */
  stale: string | null;
}

/** Bytes and newest mtime of a tree (symlinks counted as themselves, never followed). */
function treeStats(path: string): { bytes: number; modifiedMs: number } {
  const st = lstatSync(path);
  if (!st.isDirectory()) return { bytes: st.size, modifiedMs: st.mtimeMs };
  let bytes = 0;
  let modifiedMs = st.mtimeMs;
  for (const name of readdirSync(path)) {
    const sub = treeStats(join(path, name));
    bytes += sub.bytes;
    modifiedMs = Math.max(modifiedMs, sub.modifiedMs);
  }
  return { bytes, modifiedMs };
}

function entry(path: string, kind: CacheEntryKind, source: string | null, stale: string | null): CacheEntry {
  return { path, kind, source, stale, ...treeStats(path) };
}

/** Temporary siblings of atomic writes (`NAME.tmp-PID-UUID`) left by a killed process. */
const LEFTOVER = /\.tmp-\d+-[0-9a-f-]+$/;

function convertedEntry(path: string): CacheEntry {
  if (LEFTOVER.test(path)) return entry(path, 'leftover', null, 'left by an interrupted conversion');
  if (!isConvertedModelDir(path)) return entry(path, 'converted', null, 'incomplete conversion (no manifest)');
  let source: string | null = null;
  try {
    // Only the source is needed: a manifest of an older format still names it.
    source = (JSON.parse(readFileSync(join(path, MANIFEST_FILE), 'utf8')) as { source?: { dir?: unknown } }).source?.dir as string;
  } catch {
    return entry(path, 'converted', null, 'unreadable manifest');
  }
  if (typeof source !== 'string') return entry(path, 'converted', null, 'manifest names no source');
  return entry(path, 'converted', source, existsSync(source) ? null : 'its source checkpoint is gone');
}

/** Every entry of the cache root (an absent root is an empty cache). */
export function listCache(root: string): CacheEntry[] {
  if (!existsSync(root)) return [];
  const out: CacheEntry[] = [];
  for (const name of readdirSync(root).sort()) {
    const path = join(root, name);
    if (name === 'converted' && lstatSync(path).isDirectory()) {
      for (const sub of readdirSync(path).sort()) out.push(convertedEntry(join(path, sub)));
    } else if (LEFTOVER.test(name)) out.push(entry(path, 'leftover', null, 'left by an interrupted run'));
    else if (name.startsWith('default-')) out.push(entry(path, 'default-model', null, null));
    else if (name === 'bench') out.push(entry(path, 'bench', null, null));
    else out.push(entry(path, 'other', null, null));
  }
  return out;
}

export interface CleanOptions {
  /** Remove everything, not only stale entries. */
  all?: boolean;
  /** Also remove entries not modified for this many days. */
  olderThanDays?: number | null;
  dryRun?: boolean;
  nowMs?: number;
}

/** Removes the entries `clean` selects; returns them. */
export function cleanCache(root: string, opts: CleanOptions = {}): CacheEntry[] {
  const now = opts.nowMs ?? Date.now();
  const cutoff = opts.olderThanDays != null ? now - opts.olderThanDays * 86_400_000 : null;
  const doomed = listCache(root).filter((e) => opts.all === true || e.stale !== null || (cutoff !== null && e.modifiedMs < cutoff));
  if (!opts.dryRun) for (const e of doomed) rmSync(e.path, { recursive: true, force: true });
  return doomed;
}
