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
 * The call's gRPC deadline as an absolute time on the engine clock, or null when there is none.
 * grpc-js gives the deadline as a Date or epoch milliseconds (Infinity = none).
 */
export function engineDeadlineMs(deadline: Date | number, engineNowMs: number, wallNowMs = Date.now()): number | null {
  const epochMs = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(epochMs)) return null;
  return engineNowMs + (epochMs - wallNowMs);
}
