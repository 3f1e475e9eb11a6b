/**
 * `tessera_lora_requests_info`: the LoRA info gauge of the Gateway API Inference Extension's model-server protocol
 * (vLLM's `vllm:lora_requests_info` shape), in Prometheus text. One series whose labels say which adapters are in
 * the running batch, which wait, and how many fit on the device at once; its value is the sample's Unix time, so an
 * endpoint picker can tell the newest series apart.
 */
export interface LoraInfo {
  /** Adapters that fit in device slots at once. */
  maxLora: number;
  /** Adapter ids of running requests. */
  running: readonly string[];
  /** Adapter ids of requests waiting (for their adapter or for room). */
  waiting: readonly string[];
}

export const LORA_INFO_METRIC = 'tessera_lora_requests_info';

function labelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function loraInfoText(info: LoraInfo, nowS: number): string {
  const labels = `max_lora="${info.maxLora}",running_lora_adapters="${labelValue(info.running.join(','))}",waiting_lora_adapters="${labelValue(info.waiting.join(','))}"`;
  return [
    `# HELP ${LORA_INFO_METRIC} LoRA adapters of running and waiting requests and the device adapter slots (labels); value: Unix time of the sample`,
    `# TYPE ${LORA_INFO_METRIC} gauge`,
    `${LORA_INFO_METRIC}{${labels}} ${nowS.toFixed(3)}`,
    '',
  ].join('\n');
}
