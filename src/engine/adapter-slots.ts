import type { TesseraError } from '../errors.ts';

/**
 * Seam to whatever makes adapters resident in device slots (the adapter cache). The engine holds one reference per
 * admitted sequence: acquire at admission, release when the sequence finishes, is cancelled or preempted.
 */
export interface AdapterSlots {
  /**
   * Device slot (>= 1) of a resident adapter, taking a reference; 'pending' when it is not resident yet (the provider
   * starts or continues loading it; the engine asks again on later steps and runs other requests meanwhile); or an
   * error (unknown adapter, load failed) that fails the request.
   */
  acquire(adapterId: string): number | 'pending' | TesseraError;
  release(adapterId: string): void;
}
