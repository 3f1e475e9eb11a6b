/**
 * Loading: a source checked against the policy (adapter-source.ts) is read and validated into a host-tier item, and
 * an item is written into a device slot. Validation happens here, before anything is registered or cached: rank
 * within the server's max, tensors that fit the model, the declared base model matching the served one.
 *
 * Host items: for `.cpeft` sources the compressed file bytes (decoded into the slot by the worker when it can); for
 * PEFT directories the float32 factors at the adapter's own rank (no padding).
 */
import { TesseraError, isTesseraError } from '../errors.ts';
import type { LoraWeights, ModelConfig } from '../model/model-config.ts';
import { fetchWithLimit, readLocalFile, readPeftSource, resolveAdapterSource, type ResolvedSource, type SourcePolicy } from './adapter-source.ts';
import { checkCompeftCompatible } from './compeft/compeft-compat.ts';
import { decodeToPeftLike } from './compeft/compeft-decode.ts';
import { parseCompeft } from './compeft/compeft-reader.ts';

interface HostItemSizes {
  rank: number;
  /** Bytes the host tier holds for it. */
  sizeBytes: number;
  /** Bytes at the source. */
  compressedSizeBytes: number;
  /** Bytes once dense float32 in a slot (at the adapter's own rank). */
  decompressedSizeBytes: number;
}

export type HostItem = HostItemSizes & ({ kind: 'weights'; weights: LoraWeights } | { kind: 'cpeft'; bytes: Uint8Array });

/** What writes device slots: the model worker (ThreadExecutor has all three). */
export interface DeviceSlotWriter {
  loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void>;
  clearAdapterSlot(slot: number): Promise<void>;
  /** Optional: decode a `.cpeft` file straight into the slot (else it is decoded here to dense factors). */
  loadCompressedSlot?(slot: number, bytes: Uint8Array): Promise<void>;
}

export interface AdapterLoaderOptions {
  config: ModelConfig;
  /** Served model id (`name@hash`); an adapter that declares a base model must match its name. */
  modelId: string;
  maxRank: number;
  policy: SourcePolicy;
  fetchTimeoutMs: number;
}

export interface AdapterLoader {
  /** Checks a source against the policy (INVALID_ARGUMENT / ADAPTER_LOAD_FAILED); reads nothing. */
  resolve(source: string): ResolvedSource;
  /** Reads and validates a resolved source into a host-tier item; errors as the client should see them. */
  fetch(resolved: ResolvedSource, adapterId: string): Promise<HostItem>;
  /** Writes `item` into device slot `slot` through `writer`. */
  writeSlot(writer: DeviceSlotWriter, slot: number, item: HostItem, adapterId: string): Promise<void>;
}

export function createAdapterLoader(opts: AdapterLoaderOptions): AdapterLoader {
  const { config, maxRank, policy } = opts;
  const modelName = baseName(opts.modelId.split('@')[0]);

  function checkRank(rank: number, adapterId: string): void {
    if (rank > maxRank) {
      throw new TesseraError('ADAPTER_INCOMPATIBLE', `adapter ${JSON.stringify(adapterId)}: rank must be <= the server's max adapter rank ${maxRank}. Given: ${rank}`);
    }
  }

  function checkBaseModel(declared: string | null, adapterId: string): void {
    if (declared === null || declared === '') return;
    if (baseName(declared) !== modelName) {
      throw new TesseraError(
        'ADAPTER_INCOMPATIBLE',
        `adapter ${JSON.stringify(adapterId)} was trained for base model ${JSON.stringify(declared)}; this server serves ${JSON.stringify(opts.modelId)}`,
      );
    }
  }

  async function read(resolved: ResolvedSource, adapterId: string): Promise<HostItem> {
    if (resolved.kind === 'peft-dir') {
      // Both files read through descriptors opened beneath the root (adapter-source.ts): what was checked is read.
      const { adapter, weightsFileBytes: compressedSizeBytes } = await readPeftSource(resolved, policy.maxFileBytes, config);
      checkRank(adapter.rank, adapterId);
      checkBaseModel(adapter.baseModel, adapterId);
      const weights: LoraWeights = { rank: adapter.rank, scale: adapter.scale, layers: adapter.layers };
      return { kind: 'weights', weights, rank: adapter.rank, sizeBytes: adapter.sizeBytes, compressedSizeBytes, decompressedSizeBytes: adapter.sizeBytes };
    }
    const bytes =
      resolved.kind === 'cpeft-file'
        ? await readLocalFile(resolved, policy.maxFileBytes)
        : await fetchWithLimit(resolved.url, { maxBytes: policy.maxFileBytes, timeoutMs: opts.fetchTimeoutMs });
    const file = parseCompeft(bytes, { source: adapterId });
    checkRank(file.header.rank, adapterId);
    checkCompeftCompatible(file, config, { maxRank });
    checkBaseModel(file.header.baseModel, adapterId);
    let dense = 0;
    for (const t of file.header.tensors) dense += t.rows * t.cols * 4;
    return { kind: 'cpeft', bytes, rank: file.header.rank, sizeBytes: bytes.byteLength, compressedSizeBytes: bytes.byteLength, decompressedSizeBytes: dense };
  }

  return {
    resolve: (source) => resolveAdapterSource(source, policy),

    async fetch(resolved, adapterId) {
      try {
        return await read(resolved, adapterId);
      } catch (err) {
        throw asLoadError(err);
      }
    },

    async writeSlot(writer, slot, item, adapterId) {
      if (item.kind === 'weights') return writer.loadAdapterSlot(slot, item.weights);
      if (writer.loadCompressedSlot) return writer.loadCompressedSlot(slot, item.bytes);
      const dense = decodeToPeftLike(parseCompeft(item.bytes, { source: adapterId, verifyPayloads: false }));
      return writer.loadAdapterSlot(slot, dense);
    },
  };
}

/** Load failures as the client sees them: adapter codes kept; anything else from reading becomes ADAPTER_LOAD_FAILED. */
export function asLoadError(err: unknown): TesseraError {
  if (isTesseraError(err)) {
    if (err.code.startsWith('ADAPTER_') || err.code === 'INVALID_ARGUMENT' || err.code === 'WORKER_UNAVAILABLE') return err;
    return new TesseraError('ADAPTER_LOAD_FAILED', err.message, { cause: err });
  }
  return new TesseraError('ADAPTER_LOAD_FAILED', `adapter load failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Last path segment, lower-cased: `org/Model-7B` and `model-7b` name the same model. */
function baseName(name: string): string {
  const parts = name.split('/').filter((p) => p !== '');
  return (parts[parts.length - 1] ?? '').toLowerCase();
}
