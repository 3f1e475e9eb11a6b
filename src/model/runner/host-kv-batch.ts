import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { SequenceWork } from '../../engine/executor.ts';
import { GRAPH_IO } from '../graph/graph-io.ts';
import type { ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';
import { addGatherLoraFeeds, addPackedLoraFeeds } from './lora-feeds.ts';
import type { PackedLoraStacks } from './packed-lora-stacks.ts';
import type { PagedKvCache } from './paged-kv-cache.ts';
import { PADDING_SEQ_ID, type StepInputs } from './step-inputs.ts';

/** Where one run's time went: building the feeds (step inputs, past KV gather), inside session.run, reading outputs back (KV scatter). */
export interface RunPhasesMs {
  inputsMs: number;
  runMs: number;
  outputsMs: number;
}

/** Opt-in instrumentation of the host-KV runners for benchmarks (bench/cases/profile.ts); serving passes none. */
export interface HostKvHooks {
  /** Merged over every session's options, e.g. `{ enableProfiling: true, profileFilePrefix }`. */
  sessionOptions?: ort.InferenceSession.SessionOptions;
  /** Called after each run with its phases. */
  onRunPhases?: (phases: RunPhasesMs) => void;
}

/** What a host-KV graph runs over: the KV cache and adapter slots of the layers (and heads, columns) a runner holds. */
export interface HostKvState {
  /** The model as this runner holds it: the whole model, or a shard's heads, MLP columns and layers. */
  readonly config: ModelConfig;
  /** Global index of the first layer held (a pipeline stage's first layer; 0 for the whole model). */
  readonly layerStart: number;
  readonly kv: PagedKvCache;
  readonly slots: AdapterSlotStacks;
  /** Packed copies of the slots, for graphs built with the packed LoRA kernel; null when none is. */
  readonly packed: PackedLoraStacks | null;
  readonly onRunPhases?: HostKvHooks['onRunPhases'];
}

const inputNamesOf = new WeakMap<ort.InferenceSession, ReadonlySet<string>>();

/**
 * Runs one host-KV graph over one batch: the one implementation behind every host-KV runner (ModelRunner for the whole
 * model, LoopDecodeRunner's single steps, ShardRunner for a pipeline stage or a tensor-parallel segment).
 *   feeds = the step inputs the graph takes (ids, positions, bias, logits index; the residual stream `hidden`)
 *         + for each of `kvLayers` the rows' past gathered from the paged cache (past_key.l / past_value.l)
 *         + for a LoRA graph the rows' adapters: packed factors and column selection, or slot stacks and indices
 *   out   = session.run(feeds); each of `kvLayers`' new_key.l / new_value.l is written into the rows' blocks
 */
export async function runHostKvBatch(
  state: HostKvState,
  session: ort.InferenceSession,
  rows: readonly SequenceWork[],
  inputs: StepInputs,
  options: { kvLayers: readonly number[]; hidden?: Float32Array | null },
): Promise<ort.InferenceSession.ReturnType> {
  const started = performance.now();
  let names = inputNamesOf.get(session);
  if (!names) inputNamesOf.set(session, (names = new Set(session.inputNames)));
  const { batch, stepLength, pastLength } = inputs;
  const { numKvHeads, headDim, hiddenSize } = state.config;
  const feeds: Record<string, ort.Tensor> = {};
  if (names.has(GRAPH_IO.inputIds)) feeds[GRAPH_IO.inputIds] = new ort.Tensor('int64', inputs.inputIds, [batch, stepLength]);
  if (names.has(GRAPH_IO.hiddenIn)) {
    const hidden = options.hidden;
    if (!hidden || hidden.length !== batch * stepLength * hiddenSize) {
      throw new TesseraError('INTERNAL', `the graph needs hidden [${batch}, ${stepLength}, ${hiddenSize}], got ${hidden?.length ?? 'no'} floats`);
    }
    // ORT does not take views of shared memory: a rank copies the shared residual stream into its own buffer.
    feeds[GRAPH_IO.hiddenIn] = new ort.Tensor('float32', hidden.buffer instanceof SharedArrayBuffer ? new Float32Array(hidden) : hidden, [batch, stepLength, hiddenSize]);
  }
  if (names.has(GRAPH_IO.positionIds)) feeds[GRAPH_IO.positionIds] = new ort.Tensor('int64', inputs.positionIds, [batch, stepLength]);
  if (names.has(GRAPH_IO.attentionBias)) feeds[GRAPH_IO.attentionBias] = new ort.Tensor('float32', inputs.attentionBias, [batch, 1, stepLength, pastLength + stepLength]);
  if (names.has(GRAPH_IO.logitsIndex)) feeds[GRAPH_IO.logitsIndex] = new ort.Tensor('int64', inputs.logitsIndex, [inputs.logitsIndex.length]);
  const lane = stepLength === 1 ? 'decode' : 'prefill';
  for (const layer of options.kvLayers) {
    const past = state.kv.past(layer - state.layerStart, inputs.kvRows, pastLength, lane);
    feeds[GRAPH_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
    feeds[GRAPH_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
  }
  const scope = { layers: { start: state.layerStart, end: state.layerStart + state.config.numLayers }, inputNames: names };
  if (names.has(GRAPH_IO.loraRowIndex)) {
    // Padding rows (PADDING_SEQ_ID) and padding positions read the zero row: only a row's real tokens get its delta.
    const tokens = rows.map((r) => ({ slot: r.adapterSlot, tokens: r.seqId === PADDING_SEQ_ID ? 0 : r.tokenIds.length }));
    addPackedLoraFeeds(feeds, state.packed!, tokens, stepLength, scope);
  }
  else if (names.has(GRAPH_IO.loraSlot)) addGatherLoraFeeds(feeds, state.slots, state.config, rows.map((r) => r.adapterSlot), scope);

  const feedsReady = performance.now();
  const out = await session.run(feeds);
  const ran = performance.now();
  for (const layer of options.kvLayers) {
    state.kv.scatter(layer - state.layerStart, inputs.kvRows, stepLength, out[GRAPH_IO.newKey(layer)].data as Float32Array, out[GRAPH_IO.newValue(layer)].data as Float32Array);
  }
  state.onRunPhases?.({ inputsMs: feedsReady - started, runMs: ran - feedsReady, outputsMs: performance.now() - ran });
  return out;
}
