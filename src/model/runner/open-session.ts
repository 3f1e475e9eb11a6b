import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { Device, RunnerOptions } from './step-runner.ts';

/** How a runner's sessions use the CPU. */
export type RunnerThreading = Pick<RunnerOptions, 'intraOpThreads' | 'intraOpSpinning'>;

/**
 * The session options every runner starts from: one provider, sequential execution, all graph optimisations, and the
 * intra-op thread pool. Its threads spin between kernels unless told not to: with cores of its own a step is up to
 * 1.3x faster at low concurrency; on a host whose cores are shared with other busy processes, sleeping threads are
 * faster (docs/engine.md, "The intra-op thread pool").
 */
export function runnerSessionOptions(device: Device, threading: RunnerThreading = {}): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: [device],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    ...(threading.intraOpThreads !== undefined ? { intraOpNumThreads: threading.intraOpThreads } : {}),
    extra: { session: { intra_op: { allow_spinning: threading.intraOpSpinning === false ? '0' : '1' } } },
  };
}

/**
 * `options` for a graph loaded from memory (a rewrite of a converted one): its external weights resolve against the
 * model directory.
 */
export function withExternalWeightsIn(options: ort.InferenceSession.SessionOptions, modelDir: string): ort.InferenceSession.SessionOptions {
  const extra = (options.extra ?? {}) as { session?: Record<string, unknown> };
  return { ...options, extra: { ...extra, session: { ...extra.session, model_external_initializers_file_folder_path: modelDir } } };
}

/**
 * Opens a session on a graph file or graph bytes. A failure on a non-CPU provider is DEVICE_UNAVAILABLE (the provider
 * is missing or cannot run the graph here); on the CPU provider it is CHECKPOINT_INVALID (the graph itself is bad).
 * `what` names the graph in the message, e.g. "/models/x: the LoRA graph".
 */
export async function openSession(model: string | Uint8Array, what: string, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  try {
    return typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
  } catch (err) {
    const message = (err as Error).message;
    const provider = options.executionProviders?.[0];
    const device = typeof provider === 'string' ? provider : (provider?.name ?? 'cpu');
    if (device !== 'cpu') throw new TesseraError('DEVICE_UNAVAILABLE', `execution provider '${device}' is not available here (${what}): ${message}`, { cause: err });
    throw new TesseraError('CHECKPOINT_INVALID', `${what}: ONNX Runtime cannot load it: ${message}`, { cause: err });
  }
}
