import { TesseraError } from '../../errors.ts';
import type { LoraTarget } from '../../model/model-config.ts';
import type { CompeftFile } from './compeft-format.ts';
import { PayloadError, visitPayload } from './compeft-payload.ts';

/** Where logical element (i, j) of a [rows, cols] tensor goes: dest[destOffset + i * row + j * col]. */
export interface DestStrides {
  row: number;
  col: number;
}

/**
 * Decodes tensor `tensorIndex` straight into `dest`: first zero-fills the tensor's [rows, cols] region (as laid out
 * by the strides; padding outside it, e.g. ranks beyond this adapter's in a rank-padded slot, is left untouched),
 * then writes +-scale at each kept position. Every target index is bounds-checked against dest.length before the
 * first write. O(rows * cols) for the fill plus O(payload) for the writes; no intermediate dense copy.
 *
 * Slot layouts: A [r, in] stored transposed as [in, maxRank] -> strides { row: 1, col: maxRank };
 *               B [out, r] stored transposed as [maxRank, out] -> strides { row: 1, col: out }.
 */
export function decodeTensorInto(file: CompeftFile, tensorIndex: number, dest: Float32Array, destOffset: number, strides: DestStrides): void {
  const tensors = file.header.tensors;
  if (!Number.isInteger(tensorIndex) || tensorIndex < 0 || tensorIndex >= tensors.length) {
    throw new TesseraError('INVALID_ARGUMENT', `\`tensorIndex\` must be an integer >= 0 and < ${tensors.length}. Given: ${tensorIndex}`);
  }
  const t = tensors[tensorIndex];
  const { rows, cols } = t;
  const { row, col } = strides;
  if (!Number.isInteger(destOffset) || !Number.isInteger(row) || !Number.isInteger(col)) {
    throw new TesseraError('INVALID_ARGUMENT', `\`destOffset\` and \`strides\` must be integers. Given: ${destOffset}, ${JSON.stringify(strides)}`);
  }
  const lo = destOffset + Math.min(0, (rows - 1) * row) + Math.min(0, (cols - 1) * col);
  const hi = destOffset + Math.max(0, (rows - 1) * row) + Math.max(0, (cols - 1) * col);
  if (lo < 0 || hi >= dest.length) {
    throw new TesseraError(
      'INVALID_ARGUMENT',
      `tensor ${t.name} [${rows}, ${cols}] at destOffset ${destOffset} with strides ${JSON.stringify(strides)} writes indices ${lo}..${hi}; \`dest\` must hold them (length ${dest.length})`,
    );
  }
  zeroRegion(dest, destOffset, rows, cols, row, col);
  const plus = t.scale;
  const minus = -t.scale;
  try {
    if (col === 1) {
      // Row-major-like destination: the flat index maps to (i, j) with one division per kept value.
      visitPayload(file.bytes, file.dataOffset + t.offset, t.length, layoutOf(t), (p, neg) => {
        const i = (p / cols) | 0;
        dest[destOffset + i * row + (p - i * cols)] = neg ? minus : plus;
      });
    } else {
      visitPayload(file.bytes, file.dataOffset + t.offset, t.length, layoutOf(t), (p, neg) => {
        const i = (p / cols) | 0;
        dest[destOffset + i * row + (p - i * cols) * col] = neg ? minus : plus;
      });
    }
  } catch (err) {
    if (err instanceof PayloadError) throw new TesseraError('COMPEFT_INVALID', `tensor ${t.name}: ${err.message}`);
    throw err;
  }
}

function layoutOf(t: CompeftFile['header']['tensors'][number]) {
  return { encoding: t.encoding, riceK: t.riceK, nnz: t.nnz, numElements: t.rows * t.cols };
}

function zeroRegion(dest: Float32Array, off: number, rows: number, cols: number, row: number, col: number): void {
  if (col === 1 && row === cols) {
    dest.fill(0, off, off + rows * cols);
  } else if (col === 1) {
    for (let i = 0; i < rows; i++) dest.fill(0, off + i * row, off + i * row + cols);
  } else if (row === 1) {
    for (let j = 0; j < cols; j++) dest.fill(0, off + j * col, off + j * col + rows);
  } else {
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) dest[off + i * row + j * col] = 0;
  }
}

/** Same shape as the PEFT reader's PeftAdapter, so tools and tests can treat both alike. */
export interface PeftLikeAdapter {
  rank: number;
  loraAlpha: number;
  scale: number;
  targets: LoraTarget[];
  baseModel: string | null;
  layers: Array<Partial<Record<LoraTarget, { a: Float32Array /* [r, in] */; b: Float32Array /* [out, r] */ }>>>;
  /** Bytes of the dense float32 tensors returned. */
  sizeBytes: number;
}

export interface DecodeDenseOptions {
  /** Refuse to allocate more than this many bytes of dense float32 (default 512 MiB). */
  maxDenseBytes?: number;
}

/** Decodes every tensor to dense row-major float32 (for tests and tools; servers decode into slots instead). */
export function decodeToPeftLike(file: CompeftFile, opts: DecodeDenseOptions = {}): PeftLikeAdapter {
  const h = file.header;
  const maxDenseBytes = opts.maxDenseBytes ?? 512 * 1024 * 1024;
  let totalBytes = 0;
  for (const t of h.tensors) totalBytes += t.rows * t.cols * 4;
  if (totalBytes > maxDenseBytes) {
    throw new TesseraError('INVALID_ARGUMENT', `dense adapter would need ${totalBytes} bytes; \`maxDenseBytes\` is ${maxDenseBytes}`);
  }
  const layers: PeftLikeAdapter['layers'] = Array.from({ length: h.numLayers }, () => ({}));
  const partial = new Map<string, { a?: Float32Array; b?: Float32Array }>();
  h.tensors.forEach((t, index) => {
    const data = new Float32Array(t.rows * t.cols);
    decodeTensorInto(file, index, data, 0, { row: t.cols, col: 1 });
    const key = `${t.layer}:${t.target}`;
    const entry = partial.get(key) ?? {};
    if (t.kind === 'A') entry.a = data;
    else entry.b = data;
    partial.set(key, entry);
    if (entry.a && entry.b) layers[t.layer][t.target] = { a: entry.a, b: entry.b };
  });
  return { rank: h.rank, loraAlpha: h.loraAlpha, scale: h.scale, targets: [...h.targets], baseModel: h.baseModel, layers, sizeBytes: totalBytes };
}
