import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { onnxModelType } from '../model/graph/onnx-serialize.ts';
import { TesseraError } from '../errors.ts';
import type { ModelManifest } from '../model/converted-model.ts';
import type { LinearWeight } from '../../kernels/linear.ts';


interface TensorRecord {
  name: string;
  dataType: number;
  dims: number[];
  rawData?: Uint8Array;
  external?: { offset: number; length: number };
}

/**
 * The weights of a converted model, read back by initializer name from its base ONNX graph and the shared external
 * weights file. Shard graphs are built from these at load time, so a model converted once serves any TP/PP layout.
 * Only the tensors asked for are read (a shard never reads the other shards' bytes).
 */
export class ConvertedWeights {
  private readonly records = new Map<string, TensorRecord>();
  private fd: number | null;
  /** Bytes read from the weights file so far. */
  bytesRead = 0;

  constructor(
    private readonly dir: string,
    private readonly manifest: ModelManifest,
  ) {
    const type = onnxModelType();
    const graphFile = join(dir, manifest.graphs.base);
    let model: { graph?: { initializer?: Array<Record<string, unknown>> } };
    try {
      model = type.toObject(type.decode(readFileSync(graphFile)), { longs: Number }) as typeof model;
    } catch (err) {
      throw new TesseraError('CHECKPOINT_INVALID', `${graphFile}: cannot read the ONNX graph: ${(err as Error).message}`);
    }
    for (const init of model.graph?.initializer ?? []) {
      const name = init.name as string;
      const entries = (init.externalData as Array<{ key: string; value: string }> | undefined) ?? [];
      const get = (key: string) => entries.find((e) => e.key === key)?.value;
      const record: TensorRecord = { name, dataType: init.dataType as number, dims: (init.dims as number[] | undefined) ?? [] };
      if (entries.length > 0) record.external = { offset: Number(get('offset') ?? 0), length: Number(get('length')) };
      else record.rawData = init.rawData as Uint8Array;
      this.records.set(name, record);
    }
    this.fd = openSync(join(dir, manifest.weightsFile), 'r');
  }

  has(name: string): boolean {
    return this.records.has(name);
  }

  dims(name: string): number[] {
    return this.record(name).dims;
  }

  /** Raw little-endian bytes of one initializer (a fresh, aligned copy). */
  bytes(name: string): Uint8Array {
    const r = this.record(name);
    if (r.rawData) return new Uint8Array(r.rawData);
    if (this.fd === null) throw new Error('ConvertedWeights: closed');
    const out = new Uint8Array(r.external!.length);
    const n = readSync(this.fd, out, 0, out.byteLength, r.external!.offset);
    if (n !== out.byteLength) throw new TesseraError('CHECKPOINT_INVALID', `${join(this.dir, 'weights')}: ${r.name} truncated (${n} of ${out.byteLength} bytes)`);
    this.bytesRead += n;
    return out;
  }

  float32(name: string): Float32Array {
    const b = this.bytes(name);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  }

  /**
   * A linear layer as the converter stored it (fp32, int8 or int4, with outliers and bias when present). `inFeatures`
   * comes from the model config: int4 keeps it only as a node attribute.
   */
  linear(name: string, inFeatures: number): LinearWeight {
    let w: LinearWeight;
    if (this.has(`${name}.weight`)) {
      const [inFeatures, outFeatures] = this.dims(`${name}.weight`);
      w = { kind: 'fp32', inFeatures, outFeatures, weightInOut: this.float32(`${name}.weight`) };
    } else if (this.has(`${name}.qweight`) && this.manifest.quant.kind === 'int8') {
      const [outFeatures, , blockSize] = this.dims(`${name}.qweight`);
      w = { kind: 'int8', inFeatures, outFeatures, blockSize, packed: this.bytes(`${name}.qweight`), scales: this.float32(`${name}.scales`) };
    } else if (this.has(`${name}.qweight`)) {
      const [outFeatures, , halfBlock] = this.dims(`${name}.qweight`);
      const blockSize = halfBlock * 2;
      w = {
        kind: 'int4',
        inFeatures,
        outFeatures,
        blockSize,
        packed: this.bytes(`${name}.qweight`),
        scales: this.float32(`${name}.scales`),
        zeroPoints: this.bytes(`${name}.zero_points`),
        accuracyLevel: this.manifest.quant.int4AccuracyLevel ?? 4,
      };
    } else {
      throw new TesseraError('CHECKPOINT_INVALID', `converted model ${this.dir}: no weight for linear ${name}`);
    }
    if (this.has(`${name}.outlier_columns`)) {
      const c = this.bytes(`${name}.outlier_columns`);
      const columns = Int32Array.from(new BigInt64Array(c.buffer, c.byteOffset, c.byteLength / 8), (v) => Number(v));
      w.outliers = { columns, weight: this.float32(`${name}.outlier_weight`) };
    }
    if (this.has(`${name}.bias`)) w.bias = this.float32(`${name}.bias`);
    return w;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private record(name: string): TensorRecord {
    const r = this.records.get(name);
    if (!r) throw new TesseraError('CHECKPOINT_INVALID', `converted model ${this.dir}: no initializer ${name}`);
    return r;
  }
}

/** Output ranges [start, start + count) of a linear, concatenated in order (column-parallel shards, fused QKV). */
export function sliceLinearOutputs(w: LinearWeight, ranges: Array<{ start: number; count: number }>): LinearWeight {
  const outFeatures = ranges.reduce((a, r) => a + r.count, 0);
  const pickCols = (m: Float32Array, rows: number, cols: number) => {
    const out = new Float32Array(rows * outFeatures);
    for (let r = 0; r < rows; r++) {
      let at = r * outFeatures;
      for (const { start, count } of ranges) {
        out.set(m.subarray(r * cols + start, r * cols + start + count), at);
        at += count;
      }
    }
    return out;
  };
  const pickRows = <T extends Uint8Array | Float32Array>(m: T, rowLength: number): T => {
    const out = new (m.constructor as { new (n: number): T })(outFeatures * rowLength);
    let at = 0;
    for (const { start, count } of ranges) {
      out.set(m.subarray(start * rowLength, (start + count) * rowLength), at);
      at += count * rowLength;
    }
    return out;
  };
  let sliced: LinearWeight;
  switch (w.kind) {
    case 'fp32':
      sliced = { kind: 'fp32', inFeatures: w.inFeatures, outFeatures, weightInOut: pickCols(w.weightInOut, w.inFeatures, w.outFeatures) as Float32Array };
      break;
    case 'int8': {
      const kBlocks = Math.ceil(w.inFeatures / w.blockSize);
      sliced = { kind: 'int8', inFeatures: w.inFeatures, outFeatures, blockSize: w.blockSize, packed: pickRows(w.packed, kBlocks * w.blockSize), scales: pickRows(w.scales, kBlocks) };
      break;
    }
    case 'int4': {
      const kBlocks = Math.ceil(w.inFeatures / w.blockSize);
      sliced = {
        kind: 'int4',
        inFeatures: w.inFeatures,
        outFeatures,
        blockSize: w.blockSize,
        packed: pickRows(w.packed, (kBlocks * w.blockSize) / 2),
        scales: pickRows(w.scales, kBlocks),
        zeroPoints: pickRows(w.zeroPoints, Math.ceil(kBlocks / 2)),
        accuracyLevel: w.accuracyLevel,
      };
      break;
    }
  }
  if (w.outliers) sliced.outliers = { columns: w.outliers.columns, weight: pickCols(w.outliers.weight, w.outliers.columns.length, w.outFeatures) as Float32Array };
  if (w.bias) sliced.bias = pickCols(w.bias, 1, w.outFeatures) as Float32Array;
  return sliced;
}

/**
 * Input range [start, start + count) of a linear (row-parallel shards: each holds the rows of W^T for its slice of x,
 * and the partial outputs sum to the whole). The bias goes to one shard only (`keepBias`).
 */
export function sliceLinearInputs(w: LinearWeight, start: number, count: number, keepBias: boolean): LinearWeight {
  let sliced: LinearWeight;
  switch (w.kind) {
    case 'fp32':
      sliced = { kind: 'fp32', inFeatures: count, outFeatures: w.outFeatures, weightInOut: w.weightInOut.slice(start * w.outFeatures, (start + count) * w.outFeatures) };
      break;
    case 'int8': {
      const { b0, nb } = alignedBlocks(w.blockSize, w.inFeatures, start, count);
      const kBlocks = Math.ceil(w.inFeatures / w.blockSize);
      const bs = w.blockSize;
      const packed = new Uint8Array(w.outFeatures * nb * bs);
      const scales = new Float32Array(w.outFeatures * nb);
      for (let n = 0; n < w.outFeatures; n++) {
        packed.set(w.packed.subarray((n * kBlocks + b0) * bs, (n * kBlocks + b0 + nb) * bs), n * nb * bs);
        scales.set(w.scales.subarray(n * kBlocks + b0, n * kBlocks + b0 + nb), n * nb);
      }
      sliced = { kind: 'int8', inFeatures: count, outFeatures: w.outFeatures, blockSize: bs, packed, scales };
      break;
    }
    case 'int4': {
      const bs = w.blockSize;
      const { b0, nb } = alignedBlocks(bs, w.inFeatures, start, count);
      const kBlocks = Math.ceil(w.inFeatures / bs);
      const rowBytes = (kBlocks * bs) / 2;
      const zpBytes = Math.ceil(kBlocks / 2);
      const nzp = Math.ceil(nb / 2);
      const packed = new Uint8Array(w.outFeatures * nb * (bs / 2));
      const scales = new Float32Array(w.outFeatures * nb);
      const zeroPoints = new Uint8Array(w.outFeatures * nzp);
      for (let n = 0; n < w.outFeatures; n++) {
        packed.set(w.packed.subarray(n * rowBytes + (b0 * bs) / 2, n * rowBytes + ((b0 + nb) * bs) / 2), (n * nb * bs) / 2);
        scales.set(w.scales.subarray(n * kBlocks + b0, n * kBlocks + b0 + nb), n * nb);
        for (let b = 0; b < nb; b++) {
          const src = b0 + b;
          const zp = (w.zeroPoints[n * zpBytes + (src >> 1)] >> ((src & 1) * 4)) & 0xf;
          zeroPoints[n * nzp + (b >> 1)] |= zp << ((b & 1) * 4);
        }
      }
      sliced = { kind: 'int4', inFeatures: count, outFeatures: w.outFeatures, blockSize: bs, packed, scales, zeroPoints, accuracyLevel: w.accuracyLevel };
      break;
    }
  }
  if (w.outliers) {
    const keep: number[] = [];
    w.outliers.columns.forEach((c, i) => {
      if (c >= start && c < start + count) keep.push(i);
    });
    const weight = new Float32Array(keep.length * w.outFeatures);
    keep.forEach((i, j) => weight.set(w.outliers!.weight.subarray(i * w.outFeatures, (i + 1) * w.outFeatures), j * w.outFeatures));
    if (keep.length > 0) sliced.outliers = { columns: Int32Array.from(keep, (i) => w.outliers!.columns[i] - start), weight };
  }
  if (w.bias && keepBias) sliced.bias = w.bias;
  return sliced;
}

/** The blocks [b0, b0 + nb) holding input channels [start, start + count): a split must fall on block boundaries. */
function alignedBlocks(blockSize: number, inFeatures: number, start: number, count: number): { b0: number; nb: number } {
  if (start % blockSize !== 0 || (count % blockSize !== 0 && start + count !== inFeatures)) {
    throw new TesseraError('CONFIG_INVALID', `tensor-parallel split of input channels [${start}, ${start + count}) is not aligned to the quantization block size ${blockSize}`);
  }
  return { b0: start / blockSize, nb: Math.ceil(count / blockSize) };
}

/** Bytes a linear's stored form takes. */
export function linearBytes(w: LinearWeight): number {
  let bytes = 0;
  switch (w.kind) {
    case 'fp32':
      bytes = w.weightInOut.byteLength;
      break;
    case 'int8':
      bytes = w.packed.byteLength + w.scales.byteLength;
      break;
    case 'int4':
      bytes = w.packed.byteLength + w.scales.byteLength + w.zeroPoints.byteLength;
      break;
  }
  return bytes + (w.outliers ? w.outliers.weight.byteLength + w.outliers.columns.length * 8 : 0) + (w.bias?.byteLength ?? 0);
}
