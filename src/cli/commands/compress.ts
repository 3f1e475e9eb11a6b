import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../../errors.ts';
import { compressAdapterDir, inspectCompeft } from '../../adapters/compeft/compress-command.ts';
import { parseHfConfig } from '../../model/checkpoint/hf-config.ts';
import { ensureDefaultModel } from '../../model/checkpoint/make-model.ts';
import { floatOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import type { CommandIo } from '../main.ts';
import { cacheRoot } from '../model-resolver.ts';
import { progressBar } from '../progress.ts';

export const compressSpec: CommandSpec = {
  name: 'compress',
  usage: 'tessera compress ADAPTER_DIR --density K [--alpha auto|X] [--model DIR] --out FILE.cpeft',
  summary: 'Compresses a PEFT LoRA adapter with ComPEFT (top-k sparsify + ternary quantize A and B) into a .cpeft file.',
  options: {
    density: { type: 'string', description: 'fraction of values kept per tensor, in (0, 1]' },
    alpha: { type: 'string', description: "'auto' (per-module optimal scales) or the paper's fixed alpha (x std)", default: 'auto' },
    model: { type: 'string', description: 'base model (HF or converted directory) whose shapes the adapter must fit (default: the embedded default model)' },
    out: { type: 'string', description: 'output .cpeft file' },
  },
  positionals: { min: 1, max: 1 },
};

export const inspectSpec: CommandSpec = {
  name: 'inspect',
  usage: 'tessera inspect FILE.cpeft [--tensors]',
  summary: 'Prints the header of a .cpeft file (checksums verified).',
  options: { tensors: { type: 'boolean', description: 'list every tensor', default: false } },
  positionals: { min: 1, max: 1 },
};

export async function runCompress(args: ParsedArgs, io: CommandIo): Promise<number> {
  const density = floatOpt(args, 'density', { min: Number.MIN_VALUE, max: 1 });
  const out = stringOpt(args, 'out');
  if (density === undefined || !out) throw new TesseraError('CONFIG_INVALID', 'compress needs --density K and --out FILE.cpeft');
  const alphaRaw = stringOpt(args, 'alpha') ?? 'auto';
  const alpha = alphaRaw === 'auto' ? 'auto' : floatOpt(args, 'alpha', { min: Number.MIN_VALUE, max: 1e6 })!;
  const modelDir = stringOpt(args, 'model') ?? (await ensureDefaultModel({ cacheRoot: cacheRoot() }));
  const configFile = join(modelDir, 'config.json');
  const config = parseHfConfig(JSON.parse(readFileSync(configFile, 'utf8')), configFile);
  const bar = progressBar('compress');
  try {
    const s = await compressAdapterDir({ adapterDir: args.positionals[0], config, density, alpha, outFile: out, onProgress: (d, t) => bar.update(d, t) });
    bar.stop();
    io.out(
      `${s.outFile}: ${s.numTensors} tensors, ${s.numParams} params, density ${s.density}, alpha ${s.alpha} | ` +
        `${(s.sourceBytes / 1024).toFixed(1)} KiB source, ${(s.fp16SafetensorsBytes / 1024).toFixed(1)} KiB as fp16 -> ${(s.compressedBytes / 1024).toFixed(1)} KiB ` +
        `(${s.ratioVsFp16.toFixed(1)}x vs fp16, ${s.ratioVsSource.toFixed(1)}x vs source) | ` +
        `relative error of BA ${s.relFrobeniusError.toFixed(3)} (worst module ${s.maxModuleRelError.toFixed(3)}) | ${(s.elapsedMs / 1000).toFixed(1)} s\n`,
    );
    return 0;
  } finally {
    bar.stop();
  }
}

export async function runInspect(args: ParsedArgs, io: CommandIo): Promise<number> {
  io.out(`${inspectCompeft(args.positionals[0], { tensors: args.values.tensors === true })}\n`);
  return 0;
}
