/**
 * Held-out loss through the serving path (tessera perplexity, openScoringSession: worker-thread executor, adapter
 * manager, one decode step per token) equals the loss the plain-TS reference forward pass gives for the same windows,
 * for the base model, a PEFT adapter and its .cpeft (compared with the reference run on the .cpeft's dense decode).
 */
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ReferenceModel, type ReferenceLora } from '../../kernels/reference/llama-reference.ts';
import { compressAdapterDir, decodeToPeftLike, parseCompeft } from '../../src/adapters/compeft/index.ts';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { runPerplexity } from '../../src/cli/commands/perplexity.ts';
import { parseCommandArgs, type ParsedArgs } from '../../src/cli/args.ts';
import { perplexitySpec } from '../../src/cli/commands/perplexity.ts';
import { openScoringSession } from '../../src/cli/scoring-session.ts';
import { meanNll } from '../../src/engine/scoring/teacher-forced-loss.ts';
import { openCheckpointTensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import fs from 'node:fs';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

const TOLERANCE = 1e-4;

function windowsOf(count: number, length: number, vocab: number): number[][] {
  return Array.from({ length: count }, (_, w) => Array.from({ length }, (_, i) => (w * 37 + i * 101 + 5) % vocab));
}

/** Reference nll of every prediction of `tokens`: one prefill, logits at every position. */
function referenceNll(model: ReferenceModel, tokens: number[], vocab: number): number[] {
  const logits = model.prefill(tokens);
  return tokens.slice(1).map((next, i) => {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    const max = Math.max(...row);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    return max + Math.log(sum) - row[next];
  });
}

describe('held-out loss through the serving path == reference forward pass (tiny fp32)', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 1 });
  const tensors = openCheckpointTensors(hf.outDir);
  const vocab = hf.config.vocabSize;
  const windows = windowsOf(5, 20, vocab);
  const adapterDir = hf.adapterDirs[0];
  const cpeftFile = path.join(tempDir('perplexity'), 'adapter.cpeft');
  await compressAdapterDir({ adapterDir, config: hf.config, density: 0.2, alpha: 'auto', outFile: cpeftFile });
  const dense = decodeToPeftLike(parseCompeft(new Uint8Array(fs.readFileSync(cpeftFile))));
  const references: Array<[string, ReferenceLora | undefined]> = [
    ['base', undefined],
    ['peft', readPeftAdapter(adapterDir, hf.config)],
    ['cpeft', dense],
  ];

  test('base, PEFT adapter and .cpeft in one batch: every prediction within 1e-4 of the reference', async () => {
    const session = await openScoringSession({ modelDir: convertedDir, numAdapterSlots: 3, maxAdapterRank: 16, adapterRoots: [path.dirname(adapterDir), path.dirname(cpeftFile)] });
    try {
      const slots = { base: 0, peft: await session.loadAdapter('peft', adapterDir), cpeft: await session.loadAdapter('cpeft', cpeftFile) };
      const scored = references.flatMap(([name]) => windows.map((tokenIds) => ({ tokenIds, adapterSlot: slots[name as keyof typeof slots] })));
      const nll = await session.score(scored, { maxWindowsPerStep: 7 });
      references.forEach(([, lora], r) => {
        windows.forEach((tokens, w) => {
          const expected = referenceNll(new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), lora), tokens, vocab);
          const got = nll[r * windows.length + w].nll;
          expect(got).toHaveLength(expected.length);
          expected.forEach((e, i) => expect(Math.abs(got[i] - e)).toBeLessThanOrEqual(TOLERANCE));
        });
      });
      // the adapter changes the loss: the comparison above covers adapter rows, not three copies of the base
      const base = meanNll(nll.slice(0, windows.length));
      const adapted = meanNll(nll.slice(windows.length, 2 * windows.length));
      expect(Math.abs(adapted - base)).toBeGreaterThan(10 * TOLERANCE);
    } finally {
      await session.shutdown();
    }
  });

  test('tessera perplexity --windows --adapter --json prints the same loss', async () => {
    const file = path.join(tempDir('perplexity-windows'), 'windows.json');
    fs.writeFileSync(file, JSON.stringify({ windows }));
    const out: string[] = [];
    const args = parseCommandArgs(perplexitySpec, ['--model', convertedDir, '--windows', file, '--adapter', adapterDir, '--json']) as ParsedArgs;
    expect(await runPerplexity(args, { out: (s) => out.push(s), err: () => {} })).toBe(0);
    const printed = JSON.parse(out.join('')) as { loss: number; perplexity: number; predictions: number; windows: number };
    const model = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), references[1][1]);
    const all = windows.flatMap((tokens) => { model.reset(); return referenceNll(model, tokens, vocab); });
    expect(printed.predictions).toBe(windows.length * 19);
    expect(Math.abs(printed.loss - all.reduce((a, b) => a + b, 0) / all.length)).toBeLessThanOrEqual(TOLERANCE);
    expect(printed.perplexity).toBeCloseTo(Math.exp(printed.loss), 9);
  });
});
