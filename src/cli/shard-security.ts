import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { TesseraError } from '../errors.ts';
import type { ShardClientSecurity, ShardServerSecurity } from '../parallel/shard-auth.ts';
import type { ServeConfig, WorkerConfig } from './config.ts';

/** Shortest shared secret accepted (bytes): 16 random bytes, or 32 hex characters from `openssl rand -hex 32`. */
export const MIN_SECRET_BYTES = 16;

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TesseraError('CONFIG_INVALID', `--${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The secret in `path`, without trailing whitespace (a newline left by an editor or `echo`). */
export function readSecretFile(path: string, flag: string): Buffer {
  const secret = Buffer.from(readPem(path, flag).toString('utf8').trimEnd(), 'utf8');
  if (secret.length < MIN_SECRET_BYTES) {
    throw new TesseraError('CONFIG_INVALID', `--${flag} ${path} must hold at least ${MIN_SECRET_BYTES} bytes (e.g. \`openssl rand -hex 32\`). Given: ${secret.length}`);
  }
  if (/[\s\0]/.test(secret.toString('utf8'))) throw new TesseraError('CONFIG_INVALID', `--${flag} ${path} must hold one token without spaces or line breaks`);
  return secret;
}

function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The worker's TLS and secret from its settings. A worker reachable from other hosts must authenticate its controller
 * (a shared secret and/or client certificates) unless `--insecure` says the network is trusted.
 */
export function shardServerSecurity(config: WorkerConfig, warn: (line: string) => void): ShardServerSecurity {
  if ((config.tlsCert === null) !== (config.tlsKey === null)) throw new TesseraError('CONFIG_INVALID', '--tls-cert and --tls-key go together');
  if (config.tlsClientCa !== null && config.tlsCert === null) throw new TesseraError('CONFIG_INVALID', '--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key');
  const tls = config.tlsCert !== null ? { cert: readPem(config.tlsCert, 'tls-cert'), key: readPem(config.tlsKey!, 'tls-key'), clientCa: config.tlsClientCa !== null ? readPem(config.tlsClientCa, 'tls-client-ca') : null } : null;
  const secret = config.secretFile !== null ? readSecretFile(config.secretFile, 'secret-file') : null;
  const authenticated = secret !== null || tls?.clientCa != null;
  if (!authenticated && !isLoopback(config.listen)) {
    if (!config.insecure) {
      throw new TesseraError(
        'CONFIG_INVALID',
        `--listen ${config.listen} without --secret-file or --tls-client-ca would let anyone who reaches it drive this worker: give a shared secret and/or mutual TLS (--tls-cert, --tls-key, --tls-client-ca), or --insecure on a network you trust`,
      );
    }
    warn(`--insecure: any controller that reaches ${config.listen} may take this worker`);
  }
  if (secret !== null && tls === null && !isLoopback(config.listen)) warn('the shared secret crosses the network in clear text: add --tls-cert/--tls-key unless the link is encrypted on the way (e.g. a service mesh)');
  return { tls, secret };
}

/** The controller's side, from `serve` settings: undefined = plaintext, no secret, a fresh id. */
export function shardClientSecurity(config: ServeConfig): ShardClientSecurity {
  if ((config.workerTlsCert === null) !== (config.workerTlsKey === null)) throw new TesseraError('CONFIG_INVALID', '--worker-tls-cert and --worker-tls-key go together');
  if (config.workerTlsCert !== null && config.workerTlsCa === null) throw new TesseraError('CONFIG_INVALID', '--worker-tls-cert (mutual TLS) needs --worker-tls-ca, the CA that signed the workers\' certificates');
  if (config.workerTlsServerName !== null && config.workerTlsCa === null) throw new TesseraError('CONFIG_INVALID', '--worker-tls-server-name needs --worker-tls-ca (it names the certificate TLS checks)');
  const tls =
    config.workerTlsCa !== null
      ? {
          ca: readPem(config.workerTlsCa, 'worker-tls-ca'),
          cert: config.workerTlsCert !== null ? readPem(config.workerTlsCert, 'worker-tls-cert') : null,
          key: config.workerTlsKey !== null ? readPem(config.workerTlsKey, 'worker-tls-key') : null,
          serverName: config.workerTlsServerName,
        }
      : null;
  const secret = config.workerSecretFile !== null ? readSecretFile(config.workerSecretFile, 'worker-secret-file') : null;
  const controllerId = config.controllerId ?? defaultControllerId();
  if (!/^[\x21-\x7e]{1,200}$/.test(controllerId)) throw new TesseraError('CONFIG_INVALID', `--controller-id must be 1 to 200 printable ASCII characters without spaces. Given: ${JSON.stringify(controllerId)}`);
  return { tls, secret, controllerId };
}

/** host-pid-random: tells an operator which process holds a worker, and never repeats across restarts. */
export function defaultControllerId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}
