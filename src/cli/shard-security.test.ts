import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadServeConfig } from './config.ts';
import { parseWorkerArgs } from './commands/worker.ts';
import { MIN_SECRET_BYTES, readSecretFile, shardClientSecurity, shardServerSecurity } from './shard-security.ts';

const dir = mkdtempSync(join(tmpdir(), 'tessera-shard-security-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const secret = file('secret', `${'ab'.repeat(16)}\n`);

describe('shard link security settings', () => {
  it('a worker reachable from other hosts must authenticate its controller, unless --insecure', () => {
    const warnings: string[] = [];
    const warn = (l: string) => warnings.push(l);
    expect(() => shardServerSecurity(parseWorkerArgs(['--listen', '0.0.0.0:50052']), warn)).toThrow(/--listen 0\.0\.0\.0:50052 without --secret-file or --tls-client-ca would let anyone/);
    expect(shardServerSecurity(parseWorkerArgs(['--listen', '127.0.0.1:0']), warn)).toEqual({ tls: null, secret: null });
    expect(shardServerSecurity(parseWorkerArgs(['--listen', '[::1]:0']), warn)).toEqual({ tls: null, secret: null });
    expect(warnings).toEqual([]);
    expect(shardServerSecurity(parseWorkerArgs(['--listen', '0.0.0.0:50052', '--insecure']), warn)).toEqual({ tls: null, secret: null });
    expect(warnings).toEqual(['--insecure: any controller that reaches 0.0.0.0:50052 may take this worker']);
    const withSecret = shardServerSecurity(parseWorkerArgs(['--listen', '0.0.0.0:50052', '--secret-file', secret]), warn);
    expect(withSecret.secret?.toString()).toBe('ab'.repeat(16));
    expect(warnings.at(-1)).toMatch(/clear text/);
  });

  it('secrets: trailing newline dropped, too short or with spaces refused, naming the flag', () => {
    expect(readSecretFile(secret, 'secret-file').length).toBe(32);
    expect(() => readSecretFile(file('short', 'tooshort\n'), 'secret-file')).toThrow(`--secret-file ${join(dir, 'short')} must hold at least ${MIN_SECRET_BYTES} bytes (e.g. \`openssl rand -hex 32\`). Given: 8`);
    expect(() => readSecretFile(file('spaces', 'two words that are long enough'), 'worker-secret-file')).toThrow('must hold one token without spaces');
    expect(() => readSecretFile(join(dir, 'absent'), 'worker-secret-file')).toThrow(`--worker-secret-file ${join(dir, 'absent')}: ENOENT`);
  });

  it('TLS settings that only make sense together are refused apart', () => {
    const pem = file('x.pem', 'not read for these checks');
    expect(() => shardServerSecurity(parseWorkerArgs(['--tls-cert', pem]), () => {})).toThrow('--tls-cert and --tls-key go together');
    expect(() => shardServerSecurity(parseWorkerArgs(['--tls-client-ca', pem]), () => {})).toThrow('--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key');
    const serve = (flags: Record<string, string>) => shardClientSecurity(loadServeConfig(new Map(Object.entries(flags).map(([k, v]) => [k, [v]]))));
    expect(() => serve({ 'worker-tls-cert': pem, 'worker-tls-key': pem })).toThrow('--worker-tls-cert (mutual TLS) needs --worker-tls-ca');
    expect(() => serve({ 'worker-tls-server-name': 'w' })).toThrow('--worker-tls-server-name needs --worker-tls-ca');
    expect(() => serve({ 'controller-id': 'has space' })).toThrow('--controller-id must be 1 to 200 printable ASCII characters without spaces');
    expect(serve({}).controllerId).toMatch(/^\S+-\d+-[0-9a-f]{6}$/);
    expect(serve({ 'controller-id': 'leader-0', 'worker-tls-ca': pem })).toMatchObject({ controllerId: 'leader-0', secret: null, tls: { cert: null, key: null, serverName: null } });
  });
});
