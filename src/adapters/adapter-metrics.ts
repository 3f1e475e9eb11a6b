/**
 * The adapter cache's instruments: the adapter ones of src/telemetry's TesseraInstruments, so the composition root
 * passes `metrics.instruments` as is. Attribute: tier = 'host' | 'device'. Requests per adapter are counted once, by
 * the server (tessera_adapter_requests).
 */
import type { TesseraInstruments } from '../telemetry/metrics.ts';

export type AdapterMetrics = Pick<
  TesseraInstruments,
  'adapterCacheHits' | 'adapterCacheMisses' | 'adapterCacheLoads' | 'adapterCacheEvictions' | 'adapterCacheBytes' | 'adapterLoadDuration'
>;
