import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeModel, type MadeModel } from '../../src/model/checkpoint/make-model.ts';
import { convertCheckpoint } from '../../src/model/convert/convert-checkpoint.ts';
import type { QuantKind } from '../../src/model/converted-model.ts';

/** A fresh temporary directory removed when the process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `tessera-${prefix}-`));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Generates the tiny checkpoint (with adapters) and converts it; both real, written to a temp directory. */
export async function tinyModel(opts: { quant?: QuantKind; numAdapters?: number; seed?: number; outlierFraction?: number } = {}): Promise<{ hf: MadeModel; convertedDir: string }> {
  const root = tempDir('tiny');
  const hf = await makeModel({ preset: 'tiny', outDir: join(root, 'hf'), numAdapters: opts.numAdapters ?? 2, seed: opts.seed ?? 0 });
  const convertedDir = join(root, `converted-${opts.quant ?? 'fp32'}`);
  await convertCheckpoint({ hfDir: hf.outDir, outDir: convertedDir, quant: opts.quant ?? 'fp32', outlierFraction: opts.outlierFraction });
  return { hf, convertedDir };
}
