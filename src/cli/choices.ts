export const QUANT_KINDS = ['fp32', 'int8', 'int4'] as const;
export const DEVICES = ['cpu', 'cuda', 'webgpu'] as const;
export const PRESETS = ['tiny', 'small'] as const;
