/**
 * API-key authentication. Keys live in a JSON file as SHA-256 digests, each mapped to a tenant:
 *
 *   { "keys": [ { "sha256": "<64 hex digits>", "tenant": "acme" } ] }
 *
 * Clients send `authorization: Bearer KEY`. The key is hashed and compared with every stored digest in
 * constant time (no early exit), so timing reveals neither which digest nor how much of it matched.
 * No key file configured means auth is off (the caller logs a warning): every call runs as tenant null.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { TesseraError } from '../errors.ts';

export interface ApiKeyEntry {
  /** Hex SHA-256 of the key's UTF-8 bytes (64 hex digits). */
  sha256: string;
  tenant: string;
}

export interface Authenticator {
  readonly numKeys: number;
  /** Tenant of the key in an `authorization` header value; UNAUTHENTICATED when missing, malformed or unknown. */
  authenticate(authorization: string | undefined): string;
}

/** Hex SHA-256 of an API key: what goes into the key file (`tessera hash-key`). */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A fresh random key (256 bits, base64url) for operators who need one. */
export function generateApiKey(): string {
  return `tsk_${randomBytes(32).toString('base64url')}`;
}

/** The key-file line for a key and tenant, as `tessera hash-key` prints it. */
export function apiKeyFileEntry(key: string, tenant: string): string {
  return JSON.stringify({ sha256: hashApiKey(key), tenant });
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

export function createAuthenticator(entries: readonly ApiKeyEntry[], source = 'api keys'): Authenticator {
  if (entries.length === 0) throw new TesseraError('CONFIG_INVALID', `${source}: \`keys\` must hold at least 1 entry. Given: 0`);
  const seen = new Set<string>();
  const digests = entries.map((e, i) => {
    const digest = typeof e?.sha256 === 'string' ? e.sha256.toLowerCase() : '';
    if (!HEX_SHA256.test(digest)) {
      throw new TesseraError('CONFIG_INVALID', `${source}: \`keys[${i}].sha256\` must be 64 hex digits. Given: ${JSON.stringify(e?.sha256)}`);
    }
    if (typeof e.tenant !== 'string' || e.tenant === '') {
      throw new TesseraError('CONFIG_INVALID', `${source}: \`keys[${i}].tenant\` must be a non-empty string. Given: ${JSON.stringify(e.tenant)}`);
    }
    if (seen.has(digest)) throw new TesseraError('CONFIG_INVALID', `${source}: \`keys[${i}].sha256\` repeats an earlier key`);
    seen.add(digest);
    return { digest: Buffer.from(digest, 'hex'), tenant: e.tenant };
  });

  return {
    numKeys: digests.length,
    authenticate(authorization) {
      if (authorization === undefined || authorization === '') {
        throw new TesseraError('UNAUTHENTICATED', '`authorization` metadata is required: send `authorization: Bearer KEY`');
      }
      const m = BEARER.exec(authorization);
      if (!m) throw new TesseraError('UNAUTHENTICATED', '`authorization` metadata must be `Bearer KEY`');
      const given = createHash('sha256').update(m[1], 'utf8').digest();
      let tenant: string | null = null;
      for (const d of digests) {
        // Every digest is compared; no early exit.
        if (timingSafeEqual(given, d.digest) && tenant === null) tenant = d.tenant;
      }
      if (tenant === null) throw new TesseraError('UNAUTHENTICATED', 'API key not recognised');
      return tenant;
    },
  };
}

/** Reads and checks a key file. Errors are CONFIG_INVALID naming the file and the entry. */
export async function loadApiKeyFile(path: string): Promise<Authenticator> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new TesseraError('CONFIG_INVALID', `api key file ${path}: cannot be read (${(err as Error).message})`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new TesseraError('CONFIG_INVALID', `api key file ${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new TesseraError('CONFIG_INVALID', `api key file ${path}: \`keys\` must be an array of { sha256, tenant }`);
  return createAuthenticator(keys as ApiKeyEntry[], `api key file ${path}`);
}
