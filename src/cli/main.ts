import { readFileSync } from 'node:fs';
import { isTesseraError } from '../errors.ts';
import { helpText, parseCommandArgs, type CommandSpec, type ParsedArgs } from './args.ts';
import { didYouMean } from './did-you-mean.ts';

export interface CommandIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

interface LoadedCommand {
  spec: CommandSpec;
  run: (args: ParsedArgs, io: CommandIo) => Promise<number>;
}

/** Commands load their modules on use, so `tessera make-model` does not pay for ORT or gRPC at start. */
const COMMANDS: Array<{ name: string; summary: string; load: () => Promise<LoadedCommand> }> = [
  {
    name: 'make-model',
    summary: 'write a deterministic pseudo-random HF checkpoint (tiny or small preset) with LoRA adapters',
    load: async () => {
      const m = await import('./commands/make-model.ts');
      return { spec: m.makeModelSpec, run: m.runMakeModel };
    },
  },
  {
    name: 'convert',
    summary: 'convert an HF checkpoint to ONNX graphs + quantized weights (fp32, int8, int4, outliers)',
    load: async () => {
      const m = await import('./commands/convert.ts');
      return { spec: m.convertSpec, run: m.runConvert };
    },
  },
  {
    name: 'generate',
    summary: 'generate greedily from a model (optionally with a LoRA adapter), as text or JSON with logprobs',
    load: async () => {
      const m = await import('./commands/generate.ts');
      return { spec: m.generateSpec, run: m.runGenerate };
    },
  },
  {
    name: 'perplexity',
    summary: 'held-out loss / perplexity of token windows, teacher-forced through the serving executor (optionally with an adapter)',
    load: async () => {
      const m = await import('./commands/perplexity.ts');
      return { spec: m.perplexitySpec, run: m.runPerplexity };
    },
  },
  {
    name: 'bench',
    summary: 'load-test a running server over gRPC (throughput, TTFT, TPOT, latency percentiles, errors); --soak-minutes checks it returns to rest',
    load: async () => {
      const m = await import('./commands/bench.ts');
      return { spec: m.benchSpec, run: m.runBench };
    },
  },
  {
    name: 'compress',
    summary: 'compress a PEFT LoRA adapter into a ComPEFT .cpeft file (sparse ternary A and B)',
    load: async () => {
      const m = await import('./commands/compress.ts');
      return { spec: m.compressSpec, run: m.runCompress };
    },
  },
  {
    name: 'inspect',
    summary: 'print the header of a .cpeft file',
    load: async () => {
      const m = await import('./commands/compress.ts');
      return { spec: m.inspectSpec, run: m.runInspect };
    },
  },
  {
    name: 'cache',
    summary: 'list or clean the cache of generated and converted models (~/.cache/tessera or $TESSERA_CACHE_DIR)',
    load: async () => {
      const m = await import('./commands/cache.ts');
      return { spec: m.cacheSpec, run: m.runCache };
    },
  },
];

/** `serve` and `worker` take their settings from the config schemas (src/cli/config.ts), not from a CommandSpec. */
const SETTINGS_COMMANDS: Array<{ name: string; summary: string; load: () => Promise<(argv: string[], io: CommandIo) => Promise<number>> }> = [
  {
    name: 'serve',
    summary: 'serve the model over gRPC (health, reflection, metrics) and, with --http-port, the OpenAI-compatible HTTP API; no --model = the embedded default model',
    load: async () => (await import('./commands/serve.ts')).runServe,
  },
  {
    name: 'worker',
    summary: 'serve one model shard to one controller at a time over tessera.shard.v1 (multi-host tensor/pipeline parallel)',
    load: async () => (await import('./commands/worker.ts')).runWorker,
  },
];

/** The package version (package.json), for `tessera --version`. */
export function tesseraVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

function usage(): string {
  const lines = [...SETTINGS_COMMANDS, ...COMMANDS].map((c) => `  ${c.name.padEnd(12)} ${c.summary}`);
  return ['usage: tessera COMMAND [options]', '', 'commands:', ...lines, '', 'tessera COMMAND --help shows its options; tessera --version prints the version.'].join('\n');
}

/** Entry point of the `tessera` command; returns the process exit code. */
export async function main(argv: string[], io: CommandIo = defaultIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    io.out(`tessera ${tesseraVersion()}\n`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(`${usage()}\n`);
    return name ? 0 : 2;
  }
  const settingsCommand = SETTINGS_COMMANDS.find((c) => c.name === name);
  if (settingsCommand) {
    const run = await settingsCommand.load();
    try {
      return await run(rest, io);
    } catch (err) {
      if (isTesseraError(err)) {
        io.err(`tessera ${name}: ${err.message}\n`);
        return err.code === 'CONFIG_INVALID' ? 2 : 1;
      }
      throw err;
    }
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    io.err(`tessera: unknown command '${name}'${didYouMean(name, [...SETTINGS_COMMANDS, ...COMMANDS].map((c) => c.name), (c) => `'${c}'`)}\n${usage()}\n`);
    return 2;
  }
  const command = await entry.load();
  try {
    const args = parseCommandArgs(command.spec, rest);
    if (args === 'help') {
      io.out(`${helpText(command.spec)}\n`);
      return 0;
    }
    return await command.run(args, io);
  } catch (err) {
    if (isTesseraError(err)) {
      io.err(`tessera ${name}: ${err.message}\n`);
      return err.code === 'CONFIG_INVALID' ? 2 : 1;
    }
    throw err;
  }
}

const defaultIo: CommandIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s.endsWith('\n') ? s : `${s}\n`),
};
