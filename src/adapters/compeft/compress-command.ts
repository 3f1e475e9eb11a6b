/**
 * `tessera compress` and `tessera inspect` as functions (the CLI dispatcher calls these):
 * PEFT LoRA directory -> `.cpeft` file, and a readable summary of a `.cpeft` file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import { peftLoraTensorName } from '../../model/checkpoint/hf-tensor-names.ts';
import { LORA_TARGETS, type ModelConfig } from '../../model/model-config.ts';
import { readPeftAdapter, type PeftAdapter } from '../peft/peft-adapter.ts';
import { compressLoraTensors } from './compeft-codec.ts';
import type { CompeftFile } from './compeft-format.ts';
import { parseCompeft } from './compeft-reader.ts';
import { checkAlpha, type ScaleMode } from './compeft-scales.ts';
import { checkDensity } from './compeft-topk.ts';
import type { LoraTensor, TernaryTensor } from './compeft-types.ts';
import { writeCompeft } from './compeft-writer.ts';

export interface CompressAdapterOptions {
  adapterDir: string;
  config: ModelConfig;
  /** Fraction of each LoRA tensor's values kept, in (0, 1]. */
  density: number;
  /** 'auto': per-module optimal scales; a number: the paper's fixed alpha x per-tensor std. */
  alpha: 'auto' | number;
  /** Overrides how `alpha` picks the scales (measurements: the paper's one global scalar, see ScaleMode). */
  scaleMode?: ScaleMode;
  outFile: string;
  /** Called after each LoRA module with tensors done and in total. */
  onProgress?: (doneTensors: number, totalTensors: number) => void;
}

export interface CompressSummary {
  outFile: string;
  numTensors: number;
  numParams: number;
  density: number;
  alpha: 'auto' | number;
  /** Size of the same factors as an fp16 safetensors file (header included). */
  fp16SafetensorsBytes: number;
  /** Size of the adapter_model.safetensors that was read. */
  sourceBytes: number;
  compressedBytes: number;
  ratioVsFp16: number;
  ratioVsSource: number;
  /** ||BA - B^A^||_F / ||BA||_F over the whole adapter. */
  relFrobeniusError: number;
  maxModuleRelError: number;
  encodings: { rice: number; bitmap: number };
  elapsedMs: number;
}

/** Bytes of a safetensors file holding these tensors as F16 (8-byte length, JSON header padded to 8, data). */
export function fp16SafetensorsBytes(tensors: Array<{ name: string; rows: number; cols: number }>): number {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.rows * t.cols * 2;
    header[t.name] = { dtype: 'F16', shape: [t.rows, t.cols], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const headerBytes = Buffer.byteLength(JSON.stringify(header), 'utf8');
  return 8 + Math.ceil(headerBytes / 8) * 8 + offset;
}

/** An adapter's factors as named LoRA tensors, one [A, B] pair per (layer, target) in layer and LORA_TARGETS order. */
export function loraModulesOf(adapter: Pick<PeftAdapter, 'rank' | 'layers'>): Array<[LoraTensor, LoraTensor]> {
  const modules: Array<[LoraTensor, LoraTensor]> = [];
  adapter.layers.forEach((factors, layer) => {
    for (const target of LORA_TARGETS) {
      const f = factors[target];
      if (!f) continue;
      const inF = f.a.length / adapter.rank;
      const outF = f.b.length / adapter.rank;
      modules.push([
        { name: peftLoraTensorName(layer, target, 'A'), layer, target, kind: 'A', rows: adapter.rank, cols: inF, data: f.a },
        { name: peftLoraTensorName(layer, target, 'B'), layer, target, kind: 'B', rows: outF, cols: adapter.rank, data: f.b },
      ]);
    }
  });
  return modules;
}

export async function compressAdapterDir(opts: CompressAdapterOptions): Promise<CompressSummary> {
  const started = performance.now();
  checkDensity(opts.density);
  if (opts.alpha !== 'auto') checkAlpha(opts.alpha);
  const adapter = readPeftAdapter(opts.adapterDir, opts.config);
  const modules = loraModulesOf(adapter);
  if (modules.length === 0) throw new TesseraError('INVALID_ARGUMENT', `${opts.adapterDir}: adapter has no LoRA factors to compress`);

  // Scales are chosen per module, so modules compress independently: report progress and yield between them. One
  // global scalar (the paper's rule) needs every module at once.
  const total = modules.length * 2;
  const batches: LoraTensor[][] = opts.scaleMode?.kind === 'global' ? [modules.flat()] : modules;
  const ternary: TernaryTensor[] = [];
  let errSq = 0;
  let normSq = 0;
  let maxModuleRelError = 0;
  let done = 0;
  for (let i = 0; i < batches.length; i++) {
    const res = compressLoraTensors(batches[i], { density: opts.density, alpha: opts.alpha, ...(opts.scaleMode ? { scaleMode: opts.scaleMode } : {}) });
    ternary.push(...res.tensors);
    for (const m of res.modules) {
      errSq += (m.relError * m.normBA) ** 2;
      normSq += m.normBA ** 2;
      maxModuleRelError = Math.max(maxModuleRelError, m.relError);
    }
    done += batches[i].length;
    opts.onProgress?.(done, total);
    if (i % 16 === 15) await new Promise((resolve) => setImmediate(resolve));
  }
  const relFrobeniusError = normSq > 0 ? Math.sqrt(errSq / normSq) : 0;
  const bytes = writeCompeft(
    {
      baseModel: adapter.baseModel,
      numLayers: opts.config.numLayers,
      rank: adapter.rank,
      loraAlpha: adapter.loraAlpha,
      scale: adapter.scale,
      density: opts.density,
      alpha: opts.alpha,
      relFrobeniusError,
    },
    ternary,
  );
  const file = parseCompeft(bytes, { source: opts.outFile }); // never leave a file we cannot read back
  writeFileAtomic(opts.outFile, bytes);

  const numParams = ternary.reduce((s, t) => s + t.rows * t.cols, 0);
  const fp16Bytes = fp16SafetensorsBytes(ternary);
  const sourceBytes = fs.statSync(path.join(opts.adapterDir, 'adapter_model.safetensors')).size;
  const encodings = { rice: 0, bitmap: 0 };
  for (const t of file.header.tensors) encodings[t.encoding]++;
  return {
    outFile: opts.outFile,
    numTensors: ternary.length,
    numParams,
    density: opts.density,
    alpha: opts.alpha,
    fp16SafetensorsBytes: fp16Bytes,
    sourceBytes,
    compressedBytes: bytes.length,
    ratioVsFp16: fp16Bytes / bytes.length,
    ratioVsSource: sourceBytes / bytes.length,
    relFrobeniusError,
    maxModuleRelError,
    encodings,
    elapsedMs: performance.now() - started,
  };
}

function writeFileAtomic(file: string, bytes: Uint8Array): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

export interface InspectOptions {
  /** Also list every tensor (default false). */
  tensors?: boolean;
}

/** Reads and validates a `.cpeft` file and returns a human-readable description of its header. */
export function inspectCompeft(file: string, opts: InspectOptions = {}): string {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new TesseraError('INVALID_ARGUMENT', `cannot read \`${file}\`: ${(err as Error).message}`, { cause: err });
  }
  return describeCompeft(parseCompeft(bytes, { source: file }), file, opts);
}

const int = (n: number): string => n.toLocaleString('en-US');

export function describeCompeft(f: CompeftFile, label: string, opts: InspectOptions = {}): string {
  const h = f.header;
  let params = 0;
  let nnz = 0;
  const enc = { rice: 0, bitmap: 0 };
  const layersWithFactors = new Set<number>();
  const perTarget = new Map<string, { tensors: number; params: number; nnz: number; bytes: number }>();
  for (const t of h.tensors) {
    params += t.rows * t.cols;
    nnz += t.nnz;
    enc[t.encoding]++;
    layersWithFactors.add(t.layer);
    const row = perTarget.get(t.target) ?? { tensors: 0, params: 0, nnz: 0, bytes: 0 };
    row.tensors++;
    row.params += t.rows * t.cols;
    row.nnz += t.nnz;
    row.bytes += t.length;
    perTarget.set(t.target, row);
  }
  const fp16 = fp16SafetensorsBytes(h.tensors);
  const lines = [
    `file            ${label} (${int(f.bytes.length)} bytes)`,
    `format          .cpeft ${f.majorVersion}.${f.minorVersion}`,
    `base model      ${h.baseModel ?? '(not recorded)'}`,
    `rank / alpha    ${h.rank} / ${h.loraAlpha} (scale ${h.scale})`,
    `targets         ${h.targets.join(' ')}`,
    `layers          ${h.numLayers} (${layersWithFactors.size} with factors)`,
    `density         ${h.density} (scales: ${h.alpha === 'auto' ? 'auto, per-module optimal' : `alpha ${h.alpha} x std`})`,
    `tensors         ${h.tensors.length} (rice ${enc.rice}, bitmap ${enc.bitmap}); ${int(params)} params, ${int(nnz)} kept (${params > 0 ? ((100 * nnz) / params).toFixed(2) : '0'}%)`,
    `size            header ${int(f.dataOffset)} B + data ${int(h.dataLength)} B; ${params > 0 ? ((8 * f.bytes.length) / params).toFixed(3) : '-'} bits/param; ${(fp16 / f.bytes.length).toFixed(1)}x vs fp16 safetensors (${int(fp16)} B)`,
    `rel. error BA   ${h.relFrobeniusError === null ? '(not recorded)' : h.relFrobeniusError.toFixed(4)} (Frobenius, whole adapter)`,
    '',
    `${'target'.padEnd(10)} ${'tensors'.padStart(7)} ${'params'.padStart(12)} ${'kept'.padStart(10)} ${'bytes'.padStart(10)} ${'bits/param'.padStart(10)}`,
  ];
  for (const [target, r] of perTarget) {
    lines.push(
      `${target.padEnd(10)} ${String(r.tensors).padStart(7)} ${int(r.params).padStart(12)} ${int(r.nnz).padStart(10)} ${int(r.bytes).padStart(10)} ${((8 * r.bytes) / r.params).toFixed(3).padStart(10)}`,
    );
  }
  if (opts.tensors ?? false) {
    lines.push('', `${'#'.padStart(4)}  ${'name'.padEnd(64)} ${'shape'.padEnd(12)} ${'scale'.padStart(12)} ${'nnz'.padStart(8)} ${'enc'.padEnd(8)} ${'bytes'.padStart(8)}`);
    h.tensors.forEach((t, i) => {
      const encName = t.encoding === 'rice' ? `rice k=${t.riceK}` : 'bitmap';
      lines.push(
        `${String(i).padStart(4)}  ${t.name.padEnd(64)} ${`[${t.rows}, ${t.cols}]`.padEnd(12)} ${t.scale.toPrecision(6).padStart(12)} ${String(t.nnz).padStart(8)} ${encName.padEnd(8)} ${String(t.length).padStart(8)}`,
      );
    });
  }
  return lines.join('\n') + '\n';
}
