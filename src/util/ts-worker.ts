import { Worker, type WorkerOptions } from 'node:worker_threads';
import { selectedOrtBinding } from './ort-binding.ts';

const bootstrapUrl = new URL('./ts-worker-bootstrap.mjs', import.meta.url);

/**
 * Starts a worker thread running a TypeScript module (through tsx), whatever loader the parent was started with; the
 * thread resolves `onnxruntime-node` to the binding this process selected (src/util/ort-binding.ts).
 */
export function startTsWorker(entry: URL, workerData: Record<string, unknown>, options: WorkerOptions = {}): Worker {
  return new Worker(bootstrapUrl, { ...options, workerData: { ...workerData, tesseraWorkerEntry: entry.href, tesseraOrtBinding: selectedOrtBinding() } });
}
