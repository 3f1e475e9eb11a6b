import { TesseraError } from '../../errors.ts';
import { convertCheckpoint } from '../../model/convert/convert-checkpoint.ts';
import { choiceOpt, floatOpt, intOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import { QUANT_KINDS } from '../choices.ts';
import { progressBar } from '../progress.ts';
import { int4Accuracy } from './model-options.ts';

export const convertSpec: CommandSpec = {
  name: 'convert',
  usage: 'tessera convert HF_DIR --quant fp32|int8|int4 [--outliers F] [--block-size B] --out DIR',
  summary: 'Converts a Hugging Face checkpoint into ONNX graphs (base and multi-LoRA) with one external weights file and a manifest.',
  options: {
    quant: { type: 'string', description: 'weight precision', default: 'int4' },
    outliers: { type: 'string', description: 'fraction of input channels per linear kept in fp32 (SpQR-style)', default: '0' },
    'block-size': { type: 'string', description: 'int4/int8 block size (16, 32, 64, 128)', default: '32' },
    'int4-accuracy': { type: 'string', description: 'int4 MatMulNBits accuracy level: 4 = int8 activations (fast), 0 = fp32 activations (accurate)', default: '4' },
    out: { type: 'string', description: 'output directory' },
  },
  positionals: { min: 1, max: 1 },
};

export async function runConvert(args: ParsedArgs, io: { out: (s: string) => void }): Promise<number> {
  const out = stringOpt(args, 'out');
  if (!out) throw new TesseraError('CONFIG_INVALID', 'convert needs --out DIR');
  const quantBar = progressBar('quantize');
  const writeBar = progressBar('write');
  try {
    const manifest = await convertCheckpoint({
      hfDir: args.positionals[0],
      outDir: out,
      quant: choiceOpt(args, 'quant', QUANT_KINDS)!,
      outlierFraction: floatOpt(args, 'outliers', { min: 0, max: 0.49 }),
      blockSize: intOpt(args, 'block-size', { min: 16, max: 128 }),
      int4AccuracyLevel: int4Accuracy(args),
      onProgress: (phase, done, total) => (phase === 'quantize' ? quantBar : writeBar).update(done, total),
    });
    quantBar.stop();
    writeBar.stop();
    io.out(`converted ${manifest.modelId} (${manifest.quant.kind}) to ${out}: ${(manifest.weightsBytes / 2 ** 20).toFixed(1)} MiB of weights in ${(manifest.conversionMs / 1000).toFixed(1)} s\n`);
    return 0;
  } finally {
    quantBar.stop();
    writeBar.stop();
  }
}
