import fs from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TesseraError } from '../../errors.ts';
import { meanNll, type ScoredWindow } from '../../engine/scoring/teacher-forced-loss.ts';
import { loadTokenizer } from '../../model/tokenizer/tokenizer.ts';
import { intOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import { openScoringSession } from '../scoring-session.ts';
import { MODEL_OPTIONS, modelDirFromArgs } from './model-options.ts';

export const perplexitySpec: CommandSpec = {
  name: 'perplexity',
  usage: 'tessera perplexity [--model DIR] [--quant fp32|int8|int4] [--adapter DIR|FILE.cpeft] (--windows FILE.json | --text FILE [--window-tokens N] [--max-windows N]) [--json]',
  summary:
    'Held-out loss and perplexity of fixed token windows, teacher-forced through the serving executor (worker thread, adapter manager, one decode step per token).',
  options: {
    ...MODEL_OPTIONS,
    adapter: { type: 'string', description: 'LoRA adapter: a PEFT directory or a .cpeft file (loaded as the server loads it)' },
    windows: { type: 'string', description: 'JSON file {"windows": [[token ids], ...]} (the trained fixture\'s heldout/<domain>.json)' },
    text: { type: 'string', description: 'UTF-8 text file, tokenized by the model\'s tokenizer and cut into windows' },
    'window-tokens': { type: 'string', description: 'tokens per window with --text', default: '129' },
    'max-windows': { type: 'string', description: 'most windows taken from --text (from its start)', default: '64' },
    json: { type: 'boolean', description: 'print {"loss", "perplexity", "predictions", "windows"} as JSON', default: false },
  },
};

function readWindowsFile(file: string): number[][] {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TesseraError('INVALID_ARGUMENT', `--windows ${file}: cannot read JSON (${(err as Error).message})`, { cause: err });
  }
  const windows = (json as { windows?: unknown } | null)?.windows;
  if (!Array.isArray(windows) || windows.length === 0 || !windows.every((w) => Array.isArray(w) && w.every((t) => Number.isInteger(t)))) {
    throw new TesseraError('INVALID_ARGUMENT', `--windows ${file}: must hold {"windows": [[token ids], ...]} with at least one window`);
  }
  return windows as number[][];
}

/** Consecutive windows of `length` tokens from the start of the text's tokens, at most `maxWindows`. */
function textWindows(ids: number[], length: number, maxWindows: number): number[][] {
  const out: number[][] = [];
  for (let start = 0; start + length <= ids.length && out.length < maxWindows; start += length) out.push(ids.slice(start, start + length));
  return out;
}

export async function runPerplexity(args: ParsedArgs, io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const windowsFile = stringOpt(args, 'windows');
  const textFile = stringOpt(args, 'text');
  if ((windowsFile === undefined) === (textFile === undefined)) throw new TesseraError('CONFIG_INVALID', 'give exactly one of --windows and --text');
  const modelDir = await modelDirFromArgs(args, io.err);
  let windows: number[][];
  if (windowsFile !== undefined) {
    windows = readWindowsFile(windowsFile);
  } else {
    const tokenizer = loadTokenizer(modelDir);
    if (!tokenizer) throw new TesseraError('INVALID_ARGUMENT', `${modelDir} has no tokenizer.json: use --windows with token ids`);
    const length = intOpt(args, 'window-tokens', { min: 2, max: 1_000_000 })!;
    windows = textWindows(tokenizer.encode(fs.readFileSync(textFile!, 'utf8'), { addSpecialTokens: false }), length, intOpt(args, 'max-windows', { min: 1, max: 1_000_000 })!);
    if (windows.length === 0) throw new TesseraError('INVALID_ARGUMENT', `--text ${textFile}: fewer than ${length} tokens`);
  }
  const adapterPath = stringOpt(args, 'adapter');
  const session = await openScoringSession({ modelDir, numAdapterSlots: 2, adapterRoots: adapterPath ? [dirname(resolve(adapterPath))] : [] });
  try {
    const slot = adapterPath ? await session.loadAdapter('cli-adapter', resolve(adapterPath)) : 0;
    const scored: ScoredWindow[] = windows.map((tokenIds) => ({ tokenIds, adapterSlot: slot }));
    const nll = await session.score(scored);
    const loss = meanNll(nll);
    const predictions = nll.reduce((n, w) => n + w.nll.length, 0);
    if (args.values.json) io.out(`${JSON.stringify({ loss, perplexity: Math.exp(loss), predictions, windows: windows.length, modelDir, adapter: adapterPath ?? null })}\n`);
    else io.out(`loss ${loss.toFixed(6)} nats/token, perplexity ${Math.exp(loss).toFixed(4)} over ${predictions} predictions (${windows.length} windows)\n`);
    return 0;
  } finally {
    await session.shutdown();
  }
}
