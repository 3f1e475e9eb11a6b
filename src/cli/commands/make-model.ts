import { makeModel } from '../../model/checkpoint/make-model.ts';
import { choiceOpt, intOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import { PRESETS } from '../choices.ts';
import { progressBar } from '../progress.ts';
import { TesseraError } from '../../errors.ts';

export const makeModelSpec: CommandSpec = {
  name: 'make-model',
  usage: 'tessera make-model --preset tiny|small --out DIR [--adapters N] [--seed S]',
  summary: 'Writes a Hugging Face-format Llama checkpoint with deterministic pseudo-random weights, a byte-level BPE tokenizer and N PEFT LoRA adapters.',
  options: {
    preset: { type: 'string', description: 'tiny (unit tests) or small (SmolLM-135M shape)' },
    out: { type: 'string', description: 'output directory' },
    adapters: { type: 'string', description: 'number of LoRA adapters to write', default: '2' },
    seed: { type: 'string', description: 'PRNG seed', default: '0' },
  },
};

export async function runMakeModel(args: ParsedArgs, io: { out: (s: string) => void }): Promise<number> {
  const preset = choiceOpt(args, 'preset', PRESETS);
  const outDir = stringOpt(args, 'out');
  if (!preset || !outDir) throw new TesseraError('CONFIG_INVALID', 'make-model needs --preset and --out');
  const bar = progressBar('weights');
  const started = performance.now();
  try {
    const made = await makeModel({
      preset,
      outDir,
      numAdapters: intOpt(args, 'adapters', { min: 0, max: 1024 }),
      seed: intOpt(args, 'seed', { min: 0, max: 2 ** 32 - 1 }),
      onProgress: (done, total) => bar.update(done, total),
    });
    bar.stop();
    io.out(`wrote ${preset} model to ${made.outDir} (${made.adapterDirs.length} adapters) in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  } finally {
    bar.stop();
  }
}
