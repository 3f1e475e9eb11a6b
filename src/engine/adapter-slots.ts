import type { TesseraError } from '../errors.ts';

/**
 * Seam to whatever makes adapters resident in device slots (the adapter cache). The engine holds one reference per
 * admitted sequence: acquire at admission, release when the sequence finishes, is cancelled or preempted.
 */
export interface AdapterSlots {
  /**
   * Device slot (>= 1) of a resident adapter, taking a reference; 'pending' when it is not resident yet (the provider
   * starts or continues loading it; the engine asks again on later steps and runs other requests meanwhile); or an
   * error (unknown adapter, load failed) that fails the request. `tenantId` is the request's tenant: a provider
   * scopes adapter ids per tenant (another tenant's adapter is unknown).
   */
  acquire(adapterId: string, tenantId: string | null): number | 'pending' | TesseraError;
  /** Drops the reference taken by acquire; `slot` is the slot acquire returned (versions of one id may differ). */
  release(adapterId: string, slot: number): void;
}
