import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import type { ErrorCode } from '../errors.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { LORA_TARGETS, type LoraTarget } from '../model/model-config.ts';
import type { Device } from '../model/runner/model-runner.ts';
import type { SegmentKind } from './shard-graphs.ts';
import type { ControllerMessage, WorkerMessage } from './wire.ts';

/** tessera.shard.v1 frames <-> the typed wire messages. The only place that knows the protobuf field names. */
const protoPath = fileURLToPath(new URL('../../proto/tessera/shard/v1/shard.proto', import.meta.url));
export const SHARD_SERVICE_NAME = 'tessera.shard.v1.ShardWorker';

let serviceCtor: grpc.ServiceClientConstructor | null = null;

export function shardServiceClient(): grpc.ServiceClientConstructor {
  if (!serviceCtor) {
    const def = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { tessera: { shard: { v1: { ShardWorker: grpc.ServiceClientConstructor } } } };
    serviceCtor = pkg.tessera.shard.v1.ShardWorker;
  }
  return serviceCtor;
}

const KINDS: Record<SegmentKind, string> = {
  stage: 'SEGMENT_KIND_STAGE',
  embed: 'SEGMENT_KIND_EMBED',
  attention: 'SEGMENT_KIND_ATTENTION',
  mlp: 'SEGMENT_KIND_MLP',
  head: 'SEGMENT_KIND_HEAD',
};

function bytesOf(a: Float32Array | Uint8Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A float32 view of received bytes (copied when unaligned). */
function floatsOf(b: Uint8Array): Float32Array {
  if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const copy = new Uint8Array(b);
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
}

type Frame = Record<string, unknown> & { id: number; body?: string };

export function encodeControllerMessage(msg: ControllerMessage): Frame {
  switch (msg.type) {
    case 'init': {
      const s = msg.spec;
      return {
        id: msg.id,
        init: {
          model_dir: s.modelDir,
          position: {
            stage: s.position.stage,
            num_stages: s.position.numStages,
            layer_start: s.position.layerStart,
            layer_end: s.position.layerEnd,
            tp_rank: s.position.tpRank,
            tp_size: s.position.tpSize,
          },
          num_kv_blocks: s.numKvBlocks,
          block_size_tokens: s.blockSizeTokens,
          num_adapter_slots: s.numAdapterSlots,
          max_adapter_rank: s.maxAdapterRank,
          device: s.device ?? '',
          intra_op_threads: s.intraOpThreads ?? 0,
          intra_op_threads_sleep: s.intraOpSpinning === false,
        },
      };
    }
    case 'run':
      return {
        id: msg.id,
        run: {
          step_id: msg.run.stepId,
          kind: KINDS[msg.run.segment.kind],
          layer: msg.run.segment.layer,
          rows: msg.run.rows.map((r) => ({
            seq_id: r.seqId,
            token_ids: r.tokenIds,
            start_position: r.startPosition,
            block_table: r.blockTable,
            adapter_slot: r.adapterSlot,
            sample_next: r.sampleNext,
          })),
          hidden: msg.run.hidden ? bytesOf(msg.run.hidden) : Buffer.alloc(0),
        },
      };
    case 'load-adapter': {
      const modules: unknown[] = [];
      msg.weights.layers.forEach((layer, index) => {
        for (const target of LORA_TARGETS) {
          const w = layer[target];
          if (w) modules.push({ layer: index, target, a: bytesOf(w.a), b: bytesOf(w.b) });
        }
      });
      return { id: msg.id, load_adapter: { slot: msg.slot, rank: msg.weights.rank, scale: msg.weights.scale, modules } };
    }
    case 'load-compressed-adapter':
      return { id: msg.id, load_compressed_adapter: { slot: msg.slot, cpeft: bytesOf(msg.bytes) } };
    case 'clear-adapter':
      return { id: msg.id, clear_adapter: { slot: msg.slot } };
    case 'shutdown':
      return { id: msg.id, shutdown: {} };
  }
}

type P = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function decodeControllerFrame(f: P): ControllerMessage {
  const id = Number(f.id);
  switch (f.body) {
    case 'init': {
      const s = f.init;
      const p = s.position ?? {};
      return {
        type: 'init',
        id,
        spec: {
          modelDir: s.model_dir,
          position: { stage: p.stage, numStages: p.num_stages, layerStart: p.layer_start, layerEnd: p.layer_end, tpRank: p.tp_rank, tpSize: p.tp_size },
          numKvBlocks: s.num_kv_blocks,
          blockSizeTokens: s.block_size_tokens,
          numAdapterSlots: s.num_adapter_slots,
          maxAdapterRank: s.max_adapter_rank,
          ...(s.device ? { device: s.device as Device } : {}),
          ...(s.intra_op_threads ? { intraOpThreads: s.intra_op_threads } : {}),
          ...(s.intra_op_threads_sleep ? { intraOpSpinning: false } : {}),
          // The frames carry no runner kind: a remote worker is host-kv (model/runner/runner-kind.ts).
          runnerKind: 'host-kv',
        },
      };
    }
    case 'run': {
      const r = f.run;
      const kind = (Object.keys(KINDS) as SegmentKind[]).find((k) => KINDS[k] === r.kind);
      if (!kind) throw new Error(`unknown segment kind ${r.kind}`);
      return {
        type: 'run',
        id,
        run: {
          stepId: Number(r.step_id),
          segment: { kind, layer: r.layer },
          rows: (r.rows as P[]).map((w) => ({
            seqId: Number(w.seq_id),
            tokenIds: w.token_ids,
            startPosition: w.start_position,
            blockTable: w.block_table,
            adapterSlot: w.adapter_slot,
            sampleNext: w.sample_next,
          })),
          hidden: r.hidden.length > 0 ? floatsOf(r.hidden) : null,
        },
      };
    }
    case 'load_adapter': {
      const a = f.load_adapter;
      const layers: LoraWeights['layers'] = [];
      for (const m of a.modules as P[]) {
        while (layers.length <= m.layer) layers.push({});
        if (!(LORA_TARGETS as readonly string[]).includes(m.target)) throw new Error(`unknown LoRA target ${m.target}`);
        layers[m.layer][m.target as LoraTarget] = { a: floatsOf(m.a), b: floatsOf(m.b) };
      }
      return { type: 'load-adapter', id, slot: a.slot, weights: { rank: a.rank, scale: a.scale, layers } };
    }
    case 'load_compressed_adapter':
      return { type: 'load-compressed-adapter', id, slot: f.load_compressed_adapter.slot, bytes: new Uint8Array(f.load_compressed_adapter.cpeft) };
    case 'clear_adapter':
      return { type: 'clear-adapter', id, slot: f.clear_adapter.slot };
    case 'shutdown':
      return { type: 'shutdown', id };
    default:
      throw new Error(`empty controller frame ${id}`);
  }
}

export function encodeWorkerMessage(msg: WorkerMessage): Frame {
  switch (msg.type) {
    case 'ready':
      return {
        id: msg.id,
        ready: {
          memory: { weights_bytes: msg.memory.weightsBytes, kv_cache_bytes: msg.memory.kvCacheBytes, adapter_slot_bytes: msg.memory.adapterSlotBytes },
          model_id: msg.modelId,
          vocab_size: msg.layout.vocabSize,
          max_context_tokens: msg.layout.maxContextTokens,
          num_adapter_slots: msg.layout.numAdapterSlots,
        },
      };
    case 'result':
      return { id: msg.id, result: { output: bytesOf(msg.reply.output), runtime_ms: msg.reply.runtimeMs } };
    case 'done':
      return { id: msg.id, done: {} };
    case 'error':
      return { id: msg.id, error: { code: msg.code, message: msg.message } };
  }
}

export function decodeWorkerFrame(f: P): WorkerMessage {
  const id = Number(f.id);
  switch (f.body) {
    case 'ready': {
      const r = f.ready;
      return {
        type: 'ready',
        id,
        memory: { weightsBytes: Number(r.memory.weights_bytes), kvCacheBytes: Number(r.memory.kv_cache_bytes), adapterSlotBytes: Number(r.memory.adapter_slot_bytes) },
        modelId: r.model_id,
        layout: { vocabSize: r.vocab_size, maxContextTokens: r.max_context_tokens, numAdapterSlots: r.num_adapter_slots },
      };
    }
    case 'result':
      return { type: 'result', id, reply: { output: floatsOf(f.result.output), runtimeMs: f.result.runtime_ms } };
    case 'done':
      return { type: 'done', id };
    case 'error':
      return { type: 'error', id, code: f.error.code as ErrorCode, message: f.error.message };
    default:
      return { type: 'error', id, code: 'INTERNAL', message: `empty worker frame ${id}` };
  }
}
