/** What the registry reports about one adapter (ListAdapters / GetAdapter); the server maps it to AdapterInfo. */
export type AdapterState = 'registered' | 'fetching' | 'cached' | 'decoding' | 'resident' | 'evicted' | 'failed';
export type AdapterTier = 'source' | 'host' | 'device';

export interface AdapterStatus {
  adapterId: string;
  state: AdapterState;
  tier: AdapterTier;
  rank: number;
  /** Bytes in the current tier. */
  sizeBytes: number;
  version: number;
  /** null = shared adapter. */
  tenantId: string | null;
  source: string;
  compressedSizeBytes: number;
  decompressedSizeBytes: number;
  pinned: boolean;
  /** Last load failure, or null. */
  error: string | null;
  /** Clock time of the last acquire, or null. */
  lastUsedMs: number | null;
}
