import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TesseraError } from '../errors.ts';
import { apiKeyFileEntry, createAuthenticator, generateApiKey, hashApiKey, loadApiKeyFile } from './auth.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-auth-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function keyFile(content: string): Promise<string> {
  const path = join(dir, `keys-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(path, content);
  return path;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as TesseraError).code;
  }
  return undefined;
}

describe('hashApiKey', () => {
  it('is the hex SHA-256 of the UTF-8 key', () => {
    // SHA-256("abc") from FIPS 180-2, appendix B.1.
    expect(hashApiKey('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(JSON.parse(apiKeyFileEntry('abc', 'acme'))).toEqual({ sha256: hashApiKey('abc'), tenant: 'acme' });
  });

  it('generates distinct random keys', () => {
    const a = generateApiKey();
    expect(a).toMatch(/^tsk_[A-Za-z0-9_-]{43}$/);
    expect(generateApiKey()).not.toBe(a);
  });
});

describe('key file authentication', () => {
  const keyA = generateApiKey();
  const keyB = generateApiKey();

  it('maps each key to its tenant', async () => {
    const path = await keyFile(JSON.stringify({ keys: [{ sha256: hashApiKey(keyA), tenant: 'acme' }, { sha256: hashApiKey(keyB).toUpperCase(), tenant: 'globex' }] }));
    const auth = await loadApiKeyFile(path);
    expect(auth.numKeys).toBe(2);
    expect(auth.authenticate(`Bearer ${keyA}`)).toBe('acme');
    expect(auth.authenticate(`bearer   ${keyB}`)).toBe('globex');
  });

  it('answers UNAUTHENTICATED for missing, malformed and unknown keys', async () => {
    const auth = createAuthenticator([{ sha256: hashApiKey(keyA), tenant: 'acme' }]);
    expect(codeOf(() => auth.authenticate(undefined))).toBe('UNAUTHENTICATED');
    expect(codeOf(() => auth.authenticate(''))).toBe('UNAUTHENTICATED');
    expect(codeOf(() => auth.authenticate(keyA))).toBe('UNAUTHENTICATED');
    expect(codeOf(() => auth.authenticate(`Basic ${keyA}`))).toBe('UNAUTHENTICATED');
    expect(codeOf(() => auth.authenticate(`Bearer ${keyB}`))).toBe('UNAUTHENTICATED');
    expect(codeOf(() => auth.authenticate(`Bearer ${keyA}x`))).toBe('UNAUTHENTICATED');
    // The stored digest itself is not a key.
    expect(codeOf(() => auth.authenticate(`Bearer ${hashApiKey(keyA)}`))).toBe('UNAUTHENTICATED');
  });

  it('rejects bad key files with CONFIG_INVALID naming the file and entry', async () => {
    await expect(loadApiKeyFile(join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('missing.json') });
    await expect(loadApiKeyFile(await keyFile('{ not json'))).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('not valid JSON') });
    await expect(loadApiKeyFile(await keyFile('{"keys": {}}'))).rejects.toMatchObject({ message: expect.stringContaining('`keys` must be an array') });
    await expect(loadApiKeyFile(await keyFile('{"keys": []}'))).rejects.toMatchObject({ message: expect.stringContaining('at least 1 entry') });
    await expect(loadApiKeyFile(await keyFile(JSON.stringify({ keys: [{ sha256: hashApiKey('x'), tenant: 'a' }, { sha256: 'abc', tenant: 'b' }] }))))
      .rejects.toMatchObject({ message: expect.stringContaining('`keys[1].sha256` must be 64 hex digits. Given: "abc"') });
    await expect(loadApiKeyFile(await keyFile(JSON.stringify({ keys: [{ sha256: hashApiKey('x'), tenant: '' }] }))))
      .rejects.toMatchObject({ message: expect.stringContaining('`keys[0].tenant`') });
    await expect(loadApiKeyFile(await keyFile(JSON.stringify({ keys: [{ sha256: hashApiKey('x'), tenant: 'a' }, { sha256: hashApiKey('x'), tenant: 'b' }] }))))
      .rejects.toMatchObject({ message: expect.stringContaining('repeats an earlier key') });
  });
});
