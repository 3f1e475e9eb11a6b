import { TesseraError } from '../../errors.ts';
import { createEngine } from '../../engine/engine.ts';
import type { GeneratedToken } from '../../engine/request.ts';
import { dirname, resolve } from 'node:path';
import { createAdapterManager } from '../../adapters/adapter-manager.ts';
import { readManifest } from '../../model/converted-model.ts';
import { loadTokenizer } from '../../model/tokenizer/tokenizer.ts';
import { ThreadExecutor } from '../../parallel/thread-executor.ts';
import { choiceOpt, intOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import { selectCudaBinding } from '../cuda-provider.ts';
import { DEVICES } from '../choices.ts';
import { MODEL_OPTIONS, modelDirFromArgs } from './model-options.ts';

export const generateSpec: CommandSpec = {
  name: 'generate',
  usage: 'tessera generate [--model DIR] [--adapter DIR|FILE.cpeft] (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N] [--top-logprobs K] [--quant fp32|int8|int4] [--tp N] [--pp N] [--json]',
  summary: 'Generates greedily from a Hugging Face checkpoint directory (converted once into the cache) or a converted model directory.',
  options: {
    ...MODEL_OPTIONS,
    adapter: { type: 'string', description: 'LoRA adapter: a PEFT directory or a .cpeft file (loaded as the server loads it)' },
    prompt: { type: 'string', description: 'prompt text (needs a tokenizer)' },
    'prompt-ids': { type: 'string', description: 'prompt as comma-separated token ids' },
    'max-tokens': { type: 'string', description: 'tokens to generate', default: '16' },
    'top-logprobs': { type: 'string', description: 'alternatives per token in --json output', default: '0' },
    device: { type: 'string', description: 'execution provider: cpu, cuda or webgpu', default: 'cpu' },
    'cuda-lib-path': { type: 'string', description: 'with --device cuda: directories searched first for the CUDA libraries (comma-separated, `*` matches one path segment; docs/gpu.md)' },
    tp: { type: 'string', description: 'tensor-parallel worker threads per stage', default: '1' },
    pp: { type: 'string', description: 'pipeline stages (worker threads)', default: '1' },
    'ignore-eos': { type: 'boolean', description: 'keep generating past end-of-sequence tokens', default: false },
    json: { type: 'boolean', description: 'print {"tokens":[{id,text,logprob,top}]} instead of text', default: false },
  },
};

const ADAPTER_ID = 'cli-adapter';
const MAX_ADAPTER_RANK = 64;

export async function runGenerate(args: ParsedArgs, io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const prompt = stringOpt(args, 'prompt');
  const promptIds = stringOpt(args, 'prompt-ids');
  if ((prompt === undefined) === (promptIds === undefined)) throw new TesseraError('CONFIG_INVALID', 'give exactly one of --prompt and --prompt-ids');
  const device = choiceOpt(args, 'device', DEVICES);
  // Before anything loads ONNX Runtime: the CUDA build replaces the CPU one for this whole process.
  if (device === 'cuda') selectCudaBinding({ libPath: (stringOpt(args, 'cuda-lib-path') ?? '').split(',').filter((p) => p !== ''), env: process.env });
  const maxTokens = intOpt(args, 'max-tokens', { min: 1, max: 1_000_000 })!;
  const topLogprobs = intOpt(args, 'top-logprobs', { min: 0, max: 20 })!;
  const modelDir = await modelDirFromArgs(args, io.err);
  const manifest = readManifest(modelDir);
  const tokenizer = loadTokenizer(modelDir, { vocabSize: manifest.config.vocabSize });
  if (!tokenizer) io.err(`warning: ${modelDir} has no tokenizer.json: token-id prompts only, no text in the output`);
  let promptTokenIds: number[];
  if (prompt !== undefined) {
    if (!tokenizer) throw new TesseraError('INVALID_ARGUMENT', 'this model has no tokenizer: use --prompt-ids');
    promptTokenIds = tokenizer.encode(prompt);
  } else {
    promptTokenIds = promptIds!.split(',').map((s) => {
      const n = Number(s.trim());
      if (!Number.isInteger(n) || n < 0) throw new TesseraError('CONFIG_INVALID', `--prompt-ids must be comma-separated non-negative integers. Given: ${promptIds}`);
      return n;
    });
  }

  const executor = await ThreadExecutor.start({
    modelDir,
    device,
    tp: intOpt(args, 'tp', { min: 1, max: 64 }),
    pp: intOpt(args, 'pp', { min: 1, max: 64 }),
    kvCacheBytes: 256 * 1024 * 1024,
    numAdapterSlots: 2,
    maxAdapterRank: MAX_ADAPTER_RANK,
  });
  let cleanup: () => Promise<void> | undefined = () => undefined;
  try {
    // The adapter goes through the server's own loader (PEFT directory or .cpeft file, same checks, same slot writes).
    const adapterPath = stringOpt(args, 'adapter');
    const adapters = adapterPath
      ? createAdapterManager({ slots: executor, config: manifest.config, modelId: manifest.modelId, numSlots: 2, maxRank: MAX_ADAPTER_RANK, hostCacheBytes: 1 << 30, allowedRoots: [dirname(resolve(adapterPath))] })
      : null;
    cleanup = () => adapters?.shutdown();
    if (adapters) await adapters.load({ adapterId: ADAPTER_ID, source: resolve(adapterPath!), pin: false, tenantId: null });
    const engine = createEngine({ executor, detokenizer: tokenizer, eosTokenIds: manifest.config.eosTokenIds, adapterSlots: adapters });
    const tokens: GeneratedToken[] = [];
    const events = engine.submit({
      requestId: 'cli',
      promptTokenIds,
      adapterId: adapters ? ADAPTER_ID : null,
      tenantId: null,
      sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
      stopping: { maxNewTokens: maxTokens, stopSequences: [], stopTokenIds: [], ignoreEos: args.values['ignore-eos'] === true },
      topNLogprobs: topLogprobs,
      deadlineMs: null,
    });
    for await (const event of events) {
      if (event.type === 'tokens') {
        tokens.push(...event.tokens);
        if (!args.values.json) io.out(event.text);
      } else {
        if (!args.values.json) io.out('\n');
        if (event.reason === 'error') throw event.error ?? new TesseraError('INTERNAL', 'generation failed');
      }
    }
    await engine.shutdown();
    if (args.values.json) {
      const json = {
        tokens: tokens.map((t) => ({
          id: t.tokenId,
          ...(tokenizer ? { text: tokenizer.decode([t.tokenId]) } : {}),
          logprob: t.logprob,
          top: t.top.map((a) => ({ id: a.tokenId, logprob: a.logprob })),
        })),
      };
      io.out(`${JSON.stringify(json)}\n`);
    }
    return 0;
  } finally {
    await cleanup();
    await executor.shutdown();
  }
}
