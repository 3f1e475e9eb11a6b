/**
 * The adapter cache's instruments. Structurally a subset of src/telemetry's TesseraInstruments, so the composition
 * root passes `metrics.instruments` as is; tests build them from any OTel Meter with createAdapterMetrics.
 * Attribute: tier = 'host' | 'device'. Requests per adapter are counted once, by the server (tessera_adapter_requests).
 */
import type { Counter, Gauge, Histogram, Meter } from '@opentelemetry/api';

export interface AdapterMetrics {
  adapterCacheHits: Counter;
  adapterCacheMisses: Counter;
  adapterCacheLoads: Counter;
  adapterCacheEvictions: Counter;
  adapterCacheBytes: Gauge;
  adapterLoadDuration: Histogram;
}

/** Instruments with the same names as src/telemetry/metrics.ts, created on `meter`. */
export function createAdapterMetrics(meter: Meter): AdapterMetrics {
  return {
    adapterCacheHits: meter.createCounter('tessera_adapter_cache_hits'),
    adapterCacheMisses: meter.createCounter('tessera_adapter_cache_misses'),
    adapterCacheLoads: meter.createCounter('tessera_adapter_cache_loads'),
    adapterCacheEvictions: meter.createCounter('tessera_adapter_cache_evictions'),
    adapterCacheBytes: meter.createGauge('tessera_adapter_cache_bytes', { unit: 'By' }),
    adapterLoadDuration: meter.createHistogram('tessera_adapter_load_duration', { unit: 's' }),
  };
}
