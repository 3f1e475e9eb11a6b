import { describe, expect, it } from 'vitest';
import { parsePrometheusText, sumSamples } from './prometheus-text.ts';

const PAGE = `# HELP tessera_kv_usage_ratio Fraction of KV cache blocks in use
# UNIT tessera_kv_usage_ratio 1
# TYPE tessera_kv_usage_ratio gauge
tessera_kv_usage_ratio 0.25
tessera_running_sequences 3 1712345678000
tessera_errors_total{code="CANCELLED",error_code="CANCELLED"} 4
tessera_errors_total{code="NOT_FOUND",error_code="ADAPTER_NOT_FOUND"} 2
tessera_errors_total{code="INTERNAL",error_code="INTERNAL",msg="a \\"quoted\\", comma\\\\"} 1
gen_ai_server_request_duration_bucket{le="+Inf"} 9

`;

describe('Prometheus text parsing', () => {
  it('reads samples with labels (escapes included), timestamps and +Inf', () => {
    const samples = parsePrometheusText(PAGE);
    expect(samples).toHaveLength(6);
    expect(samples[0]).toEqual({ name: 'tessera_kv_usage_ratio', labels: {}, value: 0.25 });
    expect(samples[1]).toEqual({ name: 'tessera_running_sequences', labels: {}, value: 3 });
    expect(samples[4].labels).toEqual({ code: 'INTERNAL', error_code: 'INTERNAL', msg: 'a "quoted", comma\\' });
    expect(samples[5].labels).toEqual({ le: '+Inf' });
  });

  it('sums matching series and tells an absent metric (null) from 0', () => {
    const samples = parsePrometheusText(PAGE);
    expect(sumSamples(samples, 'tessera_errors_total')).toBe(7);
    expect(sumSamples(samples, 'tessera_errors_total', { code: (c) => c !== 'CANCELLED' })).toBe(3);
    expect(sumSamples(samples, 'tessera_errors_total', { code: 'NOT_FOUND' })).toBe(2);
    expect(sumSamples(samples, 'tessera_errors_total', { code: 'UNAVAILABLE' })).toBeNull();
    expect(sumSamples(samples, 'process_resident_memory_bytes')).toBeNull();
  });

  it('rejects malformed lines naming them', () => {
    expect(() => parsePrometheusText('tessera_x{a="1" 2')).toThrow(/not a Prometheus sample line: tessera_x\{a="1" 2/);
    expect(() => parsePrometheusText('tessera_x abc')).toThrow(/bad sample value in metrics line: tessera_x abc/);
    expect(() => parsePrometheusText('tessera_x{a=1} 2')).toThrow(/bad label set/);
  });
});
