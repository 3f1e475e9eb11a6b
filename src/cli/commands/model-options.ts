import { choiceOpt, floatOpt, stringOpt, type OptionSpec, type ParsedArgs } from '../args.ts';
import { QUANT_KINDS } from '../choices.ts';
import { resolveModelDir } from '../model-resolver.ts';

/** The options of commands that run a model: which model, and how an HF checkpoint is converted on first use. */
export const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { type: 'string', description: 'HF checkpoint or converted model directory (default: the embedded default model)' },
  quant: { type: 'string', description: 'weight precision when converting an HF checkpoint', default: 'int4' },
  outliers: { type: 'string', description: 'fraction of input channels kept in fp32 (SpQR-style) when converting', default: '0' },
  'int4-accuracy': { type: 'string', description: 'int4 MatMulNBits accuracy level when converting: 4 (fast) or 0 (accurate)', default: '4' },
};

/** --int4-accuracy: 0 or 4. */
export function int4Accuracy(args: ParsedArgs): 0 | 4 {
  const level = choiceOpt(args, 'int4-accuracy', ['0', '4'] as const) ?? '4';
  return level === '0' ? 0 : 4;
}

/** The converted model directory MODEL_OPTIONS name (converted into the cache on first use). */
export function modelDirFromArgs(args: ParsedArgs, log: (line: string) => void): Promise<string> {
  return resolveModelDir({
    model: stringOpt(args, 'model'),
    quant: choiceOpt(args, 'quant', QUANT_KINDS)!,
    outlierFraction: floatOpt(args, 'outliers', { min: 0, max: 0.49 }),
    int4AccuracyLevel: int4Accuracy(args),
    log,
  });
}
