import * as grpc from '@grpc/grpc-js';
import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * How a controller and a remote shard worker know each other: TLS on the link (the worker's certificate, and with
 * mutual TLS the controller's), a shared secret sent as `authorization: Bearer <secret>` on the Connect call (for
 * links whose TLS ends before the worker, e.g. in a service mesh), and the controller's id, which the worker leases
 * itself to (shard-lease.ts). Plain data in, gRPC credentials out; files are read by the CLI.
 */
export const CONTROLLER_ID_HEADER = 'tessera-controller-id';
/** Response header of an accepted Connect call: the worker is this controller's until it lets go. */
export const LEASE_HEADER = 'tessera-shard-lease';
/** Trailer of a refusal whose holder is gone: the worker is free in this many ms unless the holder comes back. */
export const LEASE_FREE_IN_TRAILER = 'tessera-shard-lease-free-in-ms';
const AUTHORIZATION = 'authorization';
const MAX_CONTROLLER_ID_CHARS = 200;

export interface ShardServerSecurity {
  /** The worker's certificate chain and key; `clientCa` set = controllers must present a certificate it signed. */
  tls: { cert: Buffer; key: Buffer; clientCa: Buffer | null } | null;
  /** The shared secret controllers must present; null = none asked for. */
  secret: Buffer | null;
}

export interface ShardClientSecurity {
  /** `ca` verifies the workers' certificates; `cert`/`key` are this controller's (mutual TLS). */
  tls: { ca: Buffer; cert: Buffer | null; key: Buffer | null; serverName: string | null } | null;
  secret: Buffer | null;
  /** The name workers lease themselves to. */
  controllerId: string;
}

export function serverCredentials(security: ShardServerSecurity): grpc.ServerCredentials {
  const tls = security.tls;
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.clientCa, [{ cert_chain: tls.cert, private_key: tls.key }], tls.clientCa !== null);
}

export function clientCredentials(security: ShardClientSecurity): grpc.ChannelCredentials {
  const tls = security.tls;
  return tls ? grpc.credentials.createSsl(tls.ca, tls.key, tls.cert) : grpc.credentials.createInsecure();
}

/** Channel options for `security` (the certificate name to expect when it is not the address's host). */
export function clientChannelOptions(security: ShardClientSecurity): grpc.ChannelOptions {
  const name = security.tls?.serverName;
  return name ? { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name } : {};
}

/** The Connect call's metadata: who this controller is, and the secret when there is one. */
export function connectMetadata(security: ShardClientSecurity): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CONTROLLER_ID_HEADER, security.controllerId);
  if (security.secret) md.set(AUTHORIZATION, `Bearer ${security.secret.toString('utf8')}`);
  return md;
}

/** Checks a Connect call's metadata; returns the controller id, or the status the call is refused with. */
export function checkController(md: grpc.Metadata, security: ShardServerSecurity): { controllerId: string } | { code: grpc.status; details: string } {
  if (security.secret) {
    const header = String(md.get(AUTHORIZATION)[0] ?? '');
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    if (!presented) return { code: grpc.status.UNAUTHENTICATED, details: 'this shard worker needs the shared secret (controller: --worker-secret-file); none was presented' };
    if (!sameSecret(security.secret, Buffer.from(presented, 'utf8'))) return { code: grpc.status.UNAUTHENTICATED, details: 'wrong shared secret (controller: --worker-secret-file must hold the worker\'s --secret-file)' };
  }
  const id = String(md.get(CONTROLLER_ID_HEADER)[0] ?? '');
  if (id.length === 0 || id.length > MAX_CONTROLLER_ID_CHARS || !/^[\x21-\x7e]+$/.test(id)) {
    return { code: grpc.status.INVALID_ARGUMENT, details: `\`${CONTROLLER_ID_HEADER}\` must be 1 to ${MAX_CONTROLLER_ID_CHARS} printable ASCII characters without spaces. Given: ${JSON.stringify(id.slice(0, 40))}` };
  }
  return { controllerId: id };
}

/** Constant-time comparison of two secrets of any length (compares their digests). */
function sameSecret(expected: Buffer, presented: Buffer): boolean {
  const digest = (b: Buffer) => createHash('sha256').update(b).digest();
  return timingSafeEqual(digest(expected), digest(presented));
}
