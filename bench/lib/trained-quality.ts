/**
 * Quantization quality on trained weights: the trained fixture's base checkpoint converted to each variant and served
 * through the serving executor (openScoringSession); per held-out domain, the perplexity of the fixed windows
 * (teacher forcing, one decode step per token) and, at the same positions, top-1 agreement and KL(fp32 || variant)
 * of the next-token distributions. All variants are open at once and score one domain after another, so the fp32
 * logits of only one domain are held. With `peerTypes`, llama.cpp (the peer bench case's node-llama-cpp) scores the
 * same windows on the same checkpoint written as GGUF of those types, compared with the same fp32 logits (the peer
 * must be installed: `npm run bench -- --only peer` installs it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openScoringSession, type ScoringSession } from '../../src/cli/scoring-session.ts';
import { meanNll } from '../../src/engine/scoring/teacher-forced-loss.ts';
import { convertCheckpoint } from '../../src/model/convert/convert-checkpoint.ts';
import { compareLogits } from '../../src/model/quantization/quality.ts';
import type { Cell, ResultTable, SummaryRow } from './bench-case.ts';
import type { QuantVariant } from './quant-variants.ts';
import { variantDirName } from './quant-variants.ts';
import type { TrainedFixture } from './trained-fixture.ts';
import { readWeightBytes } from './weight-bytes.ts';
import type { GgmlTypeName } from './gguf/gguf-format.ts';
import { writeLlamaGguf } from './gguf/llama-gguf.ts';
import { nextTokenLogProbs } from './llama-peer/llama-quality.ts';
import { loadLlama, NODE_LLAMA_CPP_VERSION, type Llama } from './llama-peer/node-llama-cpp.ts';

export interface TrainedDomainQuality {
  domain: string;
  /** Mean nll (nats/token) over every prediction of the domain's held-out windows. */
  loss: number;
  perplexity: number;
  /** Against fp32 at the same positions (fp32's own row: 1 and 0). */
  top1Agreement: number;
  meanKl: number;
  predictions: number;
}

export interface TrainedVariantQuality {
  variant: string;
  weightsBytes: number;
  domains: TrainedDomainQuality[];
}

const WINDOWS_PER_STEP = 32;

/** The first variant is the reference (fp32). */
export async function measureTrainedQuantization(
  fixture: TrainedFixture,
  variants: QuantVariant[],
  log: (m: string) => void,
  opts: { peerTypes?: GgmlTypeName[] } = {},
): Promise<TrainedVariantQuality[]> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-trained-quant-'));
  const sessions: ScoringSession[] = [];
  const peerTypes = opts.peerTypes ?? [];
  let llama: Llama | null = null;
  try {
    const ggufFiles = new Map<GgmlTypeName, { file: string; bytes: number }>();
    if (peerTypes.length > 0) {
      llama = await loadLlama({ maxThreads: 2 });
      for (const type of peerTypes) {
        const file = path.join(scratch, `trained-${type}.gguf`);
        log(`trained model: writing GGUF ${type} for llama.cpp`);
        ggufFiles.set(type, { file, bytes: writeLlamaGguf({ hfDir: fixture.baseDir, outFile: file, type }) });
      }
    }
    const dirs: string[] = [];
    for (const v of variants) {
      log(`trained model: converting to ${v.id}`);
      const dir = path.join(scratch, variantDirName(v));
      await convertCheckpoint({
        hfDir: fixture.baseDir,
        outDir: dir,
        quant: v.quant,
        ...(v.blockSize !== null ? { blockSize: v.blockSize } : {}),
        outlierFraction: v.outlierFraction,
        ...(v.int4AccuracyLevel !== undefined ? { int4AccuracyLevel: v.int4AccuracyLevel } : {}),
      });
      dirs.push(dir);
      sessions.push(await openScoringSession({ modelDir: dir, numAdapterSlots: 2, maxAdapterRank: 1 }));
    }
    const vocab = sessions[0].layout.vocabSize;
    const out: TrainedVariantQuality[] = [
      ...variants.map((v, i) => ({ variant: v.id, weightsBytes: readWeightBytes(dirs[i]).weightsBytes, domains: [] })),
      ...peerTypes.map((type) => ({ variant: `llama.cpp ${type}`, weightsBytes: ggufFiles.get(type)!.bytes, domains: [] })),
    ];
    for (const domain of Object.keys(fixture.manifest.base.heldoutLoss)) {
      const held = fixture.heldout(domain);
      const windows = held.windows.map((tokenIds) => ({ tokenIds, adapterSlot: 0 }));
      const perWindow = held.windowTokens - 1;
      const reference = new Float32Array(windows.length * perWindow * vocab); // fp32 logits of this domain
      for (const [i, session] of sessions.entries()) {
        log(`trained model: ${variants[i].id} on ${domain} (${windows.length} windows)`);
        let agree = 0;
        let klSum = 0;
        const nll = await session.score(windows, {
          maxWindowsPerStep: WINDOWS_PER_STEP,
          onLogits: (w, p, row) => {
            const at = (w * perWindow + p) * vocab;
            if (i === 0) reference.set(row, at);
            const c = compareLogits(reference.subarray(at, at + vocab), row, vocab);
            agree += c.top1Agreement;
            klSum += c.meanKl;
          },
        });
        const loss = meanNll(nll);
        const predictions = windows.length * perWindow;
        out[i].domains.push({ domain, loss, perplexity: Math.exp(loss), top1Agreement: agree / predictions, meanKl: klSum / predictions, predictions });
      }
      for (const [k, type] of peerTypes.entries()) {
        log(`trained model: llama.cpp ${type} on ${domain}`);
        // F32 KV cache, no flash attention: only the weight format differs from Tessera's fp32
        const logProbs = await nextTokenLogProbs(llama!, ggufFiles.get(type)!.file, held.windows, 1, { vocabSize: vocab, threads: 2, exact: true });
        let nllSum = 0;
        let agree = 0;
        let klSum = 0;
        held.windows.forEach((w, wi) => {
          for (let p = 0; p < perWindow; p++) {
            const at = (wi * perWindow + p) * vocab;
            const row = logProbs.subarray(at, at + vocab);
            nllSum -= row[w[p + 1]];
            const c = compareLogits(reference.subarray(at, at + vocab), row, vocab);
            agree += c.top1Agreement;
            klSum += c.meanKl;
          }
        });
        const predictions = held.windows.length * perWindow;
        const loss = nllSum / predictions;
        out[variants.length + k].domains.push({ domain, loss, perplexity: Math.exp(loss), top1Agreement: agree / predictions, meanKl: klSum / predictions, predictions });
      }
    }
    return out;
  } finally {
    await llama?.dispose();
    for (const s of sessions) await s.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** Worst (largest) relative perplexity change vs the reference over the domains, with its domain. */
export function worstPerplexityChange(v: TrainedVariantQuality, ref: TrainedVariantQuality): { change: number; domain: string } {
  let worst = { change: -Infinity, domain: '' };
  v.domains.forEach((d, i) => {
    const change = d.perplexity / ref.domains[i].perplexity - 1;
    if (change > worst.change) worst = { change, domain: d.domain };
  });
  return worst;
}

function pooled(v: TrainedVariantQuality): { top1: number; kl: number } {
  const n = v.domains.reduce((s, d) => s + d.predictions, 0);
  return {
    top1: v.domains.reduce((s, d) => s + d.top1Agreement * d.predictions, 0) / n,
    kl: v.domains.reduce((s, d) => s + d.meanKl * d.predictions, 0) / n,
  };
}

const sig = (x: number, digits = 4): number => Number(x.toPrecision(digits));

export function trainedQuantizationOutput(fixture: TrainedFixture, q: TrainedVariantQuality[]): { tables: ResultTable[]; summary: SummaryRow[] } {
  const ref = q[0];
  const m = fixture.manifest;
  const domains = ref.domains.map((d) => d.domain);
  const rows: Cell[][] = q.map((v) => {
    const worst = worstPerplexityChange(v, ref);
    const p = pooled(v);
    return [v.variant, sig(v.weightsBytes / 2 ** 20, 3), ...v.domains.map((d) => sig(d.perplexity)), `${sig(100 * worst.change, 3)}% (${worst.domain})`, sig(p.top1), sig(p.kl, 3)];
  });
  const trainerVsTessera = domains.map((d, i) => `${d} ${m.base.heldoutLoss[d].toFixed(6)} / ${ref.domains[i].loss.toFixed(6)}`).join(', ');
  const windows = fixture.heldout(domains[0]);
  return {
    tables: [
      {
        title: `Held-out perplexity on trained weights (${m.config._name_or_path as string}, ${(m.base.parameters / 1e6).toFixed(1)}M parameters, trained on English man pages; ${windows.windows.length} windows x ${windows.windowTokens - 1} predictions per domain)`,
        columns: ['variant', 'weights MiB', ...domains.map((d) => `ppl ${d}`), 'worst ppl change vs fp32', 'top-1 vs fp32', 'KL vs fp32 (nats)'],
        rows,
        notes: [
          'perplexity = exp(mean next-token nll) over fixed held-out windows (pages never trained on), teacher-forced through the serving executor: one decode step per token, 32 windows per step',
          `en is the training domain; de/fr/es are languages the base never saw (the adapters' domains): text far from the training distribution`,
          'top-1 agreement and KL(fp32 || variant) at the same positions, pooled over all domains',
          `llama.cpp rows (when measured): node-llama-cpp ${NODE_LLAMA_CPP_VERSION} on the same checkpoint written as GGUF (bench/lib/gguf), F32 KV cache and no flash attention, compared with Tessera's fp32 logits`,
          `held-out loss, trainer (float32 torch) / Tessera fp32: ${trainerVsTessera}`,
          `fixture ${fixture.dir} (key ${m.key}, built ${m.createdAt.slice(0, 10)})`,
        ],
      },
    ],
    summary: q.slice(1).map((v) => {
      const worst = worstPerplexityChange(v, ref);
      const p = pooled(v);
      return { metric: `quantization on trained weights: ${v.variant} held-out perplexity vs fp32 (worst domain)`, value: `${worst.change >= 0 ? '+' : ''}${sig(100 * worst.change, 3)}% (${worst.domain}); top-1 ${sig(100 * p.top1, 3)}%, KL ${sig(p.kl, 3)} nats` };
    }),
  };
}
