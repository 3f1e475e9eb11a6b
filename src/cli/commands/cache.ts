import { TesseraError } from '../../errors.ts';
import { floatOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import type { CommandIo } from '../main.ts';
import { cleanCache, listCache, type CacheEntry } from '../model-cache.ts';
import { cacheRoot } from '../model-resolver.ts';

export const cacheSpec: CommandSpec = {
  name: 'cache',
  usage: 'tessera cache list [--json] | tessera cache clean [--all] [--older-than-days N] [--dry-run]',
  summary:
    'Lists or prunes the cache ($TESSERA_CACHE_DIR or ~/.cache/tessera): the default model, converted models, bench checkpoints. ' +
    '`clean` removes stale entries (interrupted runs, incomplete conversions, conversions whose checkpoint is gone); ' +
    'with --older-than-days also entries unused that long; with --all everything (it is all rebuilt on demand).',
  options: {
    json: { type: 'boolean', description: 'list as JSON', default: false },
    all: { type: 'boolean', description: 'clean: remove every entry', default: false },
    'older-than-days': { type: 'string', description: 'clean: also remove entries not modified for this many days' },
    'dry-run': { type: 'boolean', description: 'clean: print what would be removed, remove nothing', default: false },
  },
  positionals: { min: 1, max: 1 },
};

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

function table(entries: CacheEntry[]): string {
  const rows = entries.map((e) => [e.kind, mib(e.bytes), new Date(e.modifiedMs).toISOString().slice(0, 16).replace('T', ' '), e.stale ? `stale: ${e.stale}` : e.source ? `from ${e.source}` : '', e.path]);
  const header = ['kind', 'size', 'modified', 'note', 'path'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

export async function runCache(args: ParsedArgs, io: CommandIo): Promise<number> {
  const action = args.positionals[0];
  const root = cacheRoot();
  if (action === 'list') {
    const entries = listCache(root);
    const total = entries.reduce((sum, e) => sum + e.bytes, 0);
    if (args.values.json === true) io.out(`${JSON.stringify({ root, totalBytes: total, entries })}\n`);
    else io.out(entries.length === 0 ? `cache ${root} is empty\n` : `${table(entries)}\n\n${entries.length} entries, ${mib(total)} in ${root}\n`);
    return 0;
  }
  if (action === 'clean') {
    const olderThanDays = floatOpt(args, 'older-than-days', { min: 0, max: 100_000 }) ?? null;
    const dryRun = args.values['dry-run'] === true;
    const removed = cleanCache(root, { all: args.values.all === true, olderThanDays, dryRun });
    for (const e of removed) io.out(`${dryRun ? 'would remove' : 'removed'} ${e.path} (${mib(e.bytes)}${e.stale ? `, ${e.stale}` : ''})\n`);
    io.out(`${dryRun ? 'would free' : 'freed'} ${mib(removed.reduce((sum, e) => sum + e.bytes, 0))} (${removed.length} entries) in ${root}\n`);
    return 0;
  }
  throw new TesseraError('CONFIG_INVALID', `cache: the action must be list or clean. Given: ${action}`);
}
