import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { Device } from './model-runner.ts';

/** The session options every runner starts from: one provider, sequential execution, all graph optimisations. */
export function runnerSessionOptions(device: Device, intraOpThreads: number | undefined): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: [device],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    ...(intraOpThreads !== undefined ? { intraOpNumThreads: intraOpThreads } : {}),
  };
}

/** For a graph loaded from memory (a rewrite of a converted one): its external weights resolve against the model directory. */
export function externalWeightsIn(modelDir: string): ort.InferenceSession.SessionOptions {
  return { extra: { session: { model_external_initializers_file_folder_path: modelDir } } };
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
