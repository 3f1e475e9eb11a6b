/** What every handler does first: authenticate the caller and read the call's deadline. */
import type { Metadata } from '@grpc/grpc-js';
import type { Authenticator } from './auth.ts';

/** Tenant of the call (null when auth is off); throws UNAUTHENTICATED. */
export function tenantOf(metadata: Metadata, auth: Authenticator | null): string | null {
  if (auth === null) return null;
  const values = metadata.get('authorization');
  const first = values.length > 0 ? values[0] : undefined;
  return auth.authenticate(typeof first === 'string' ? first : undefined);
}

/**
 * Metadata header carrying the adapter id, so a gRPC-aware proxy can route by it (Envoy ring hash on this header keeps
 * an adapter's requests on the replicas whose caches hold it). Clients send it beside `adapter_id`.
 */
export const ADAPTER_HEADER = 'x-tessera-adapter';

/** The adapter id from the call's `x-tessera-adapter` header ('' when absent). */
export function adapterHeaderOf(metadata: Metadata): string {
  const values = metadata.get(ADAPTER_HEADER);
  return values.length > 0 && typeof values[0] === 'string' ? values[0] : '';
}

/**
 * The call's gRPC deadline as an absolute time on the engine clock, or null when there is none.
 * grpc-js gives the deadline as a Date or epoch milliseconds (Infinity = none).
 */
export function engineDeadlineMs(deadline: Date | number, engineNowMs: number, wallNowMs = Date.now()): number | null {
  const epochMs = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(epochMs)) return null;
  return engineNowMs + (epochMs - wallNowMs);
}
