/** The `tessera` command line: version, "did you mean", early one-line errors, help columns, the cache command. */
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { serveHelp } from './config.ts';
import { main, tesseraVersion } from './main.ts';
import { cleanCache, listCache } from './model-cache.ts';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

describe('tessera command line', () => {
  it('prints the package version', async () => {
    expect(tesseraVersion()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await run(['--version'])).toEqual({ code: 0, out: `tessera ${tesseraVersion()}\n`, err: '' });
  });

  it('suggests the command, serve flag or command option meant', async () => {
    expect((await run(['serv'])).err).toContain("unknown command 'serv' (did you mean 'serve'?)");
    const serve = await run(['serve', '--metric-port', '0']);
    expect(serve.code).toBe(2);
    expect(serve.err).toBe('tessera serve: unknown flag --metric-port (did you mean --metrics-port?); tessera serve --help lists them\n');
    expect((await run(['bench', '--concurency', '3'])).err).toContain('unknown option --concurency (did you mean --concurrency?)');
  });

  it('fails a missing --adapters-dir in one line before loading any model', async () => {
    const started = Date.now();
    const r = await run(['serve', '--adapters-dir', '/nonexistent/adapters', '--model', '/nonexistent/model']);
    expect(r).toEqual({ code: 2, out: '', err: 'tessera serve: --adapters-dir /nonexistent/adapters: no such directory\n' });
    expect(Date.now() - started).toBeLessThan(10_000); // no model was generated or converted
  });

  it('keeps at least two spaces between every flag and its text in serve --help', () => {
    const options = serveHelp().split('\n').filter((l) => l.startsWith('  --'));
    expect(options.length).toBeGreaterThan(30);
    // Every text starts in one column, after at least two spaces (the longest flag included).
    const column = Math.max(...options.map((l) => /^ {2}--\S+(?: [A-Z]+)?/.exec(l)![0].length)) + 2;
    for (const line of options) {
      expect(line.slice(column - 2, column), line).toBe('  ');
      expect(line[column], line).not.toBe(' ');
    }
  });
});

describe('tessera cache', () => {
  let root: string;
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.TESSERA_CACHE_DIR;
    root = mkdtempSync(join(tmpdir(), 'tessera-cache-'));
    process.env.TESSERA_CACHE_DIR = root;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.TESSERA_CACHE_DIR;
    else process.env.TESSERA_CACHE_DIR = saved;
  });

  function fill(): void {
    mkdirSync(join(root, 'default-small-s0-v1'));
    writeFileSync(join(root, 'default-small-s0-v1', 'model.safetensors'), Buffer.alloc(2048));
    mkdirSync(join(root, 'converted', 'gone-int4-abc'), { recursive: true });
    writeFileSync(join(root, 'converted', 'gone-int4-abc', 'manifest.json'), JSON.stringify({ source: { dir: join(root, 'no-such-checkpoint'), files: [] } }));
    mkdirSync(join(root, 'converted', 'half-int8-def'));
    mkdirSync(join(root, 'converted', 'x-int4-123.tmp-42-0f0e'));
    mkdirSync(join(root, 'converted', 'kept-int4-aaa'));
    writeFileSync(join(root, 'converted', 'kept-int4-aaa', 'manifest.json'), JSON.stringify({ source: { dir: root, files: [] } }));
  }

  it('lists entries with kind, size and why they are stale', async () => {
    fill();
    const byName = new Map(listCache(root).map((e) => [e.path.slice(root.length + 1), e]));
    expect(byName.get('default-small-s0-v1')).toMatchObject({ kind: 'default-model', bytes: 2048, stale: null });
    expect(byName.get('converted/gone-int4-abc')!.stale).toContain('source checkpoint is gone');
    expect(byName.get('converted/half-int8-def')!.stale).toContain('incomplete');
    expect(byName.get('converted/x-int4-123.tmp-42-0f0e')).toMatchObject({ kind: 'leftover' });
    expect(byName.get('converted/kept-int4-aaa')).toMatchObject({ kind: 'converted', stale: null, source: root });
    const listed = await run(['cache', 'list']);
    expect(listed.code).toBe(0);
    expect(listed.out).toContain('5 entries');
  });

  it('cleans stale entries by default, old ones with --older-than-days, everything with --all', async () => {
    fill();
    const dry = await run(['cache', 'clean', '--dry-run']);
    expect(dry.out).toContain('would free');
    expect(listCache(root)).toHaveLength(5);
    expect((await run(['cache', 'clean'])).code).toBe(0);
    expect(listCache(root).map((e) => e.path.slice(root.length + 1)).sort()).toEqual(['converted/kept-int4-aaa', 'default-small-s0-v1']);
    const old = (Date.now() - 40 * 86_400_000) / 1000;
    for (const p of ['converted/kept-int4-aaa/manifest.json', 'converted/kept-int4-aaa']) utimesSync(join(root, p), old, old);
    expect(cleanCache(root, { olderThanDays: 30 }).map((e) => e.kind)).toEqual(['converted']);
    expect((await run(['cache', 'clean', '--all'])).code).toBe(0);
    expect(listCache(root)).toEqual([]);
    expect((await run(['cache', 'sweep'])).code).toBe(2);
  });
});
