/** Public surface of the PEFT LoRA reader. */
export { parsePeftAdapterConfig, readPeftAdapter, readPeftAdapterConfig, type LoraFactors, type PeftAdapter, type PeftAdapterConfig } from './peft-adapter.ts';
