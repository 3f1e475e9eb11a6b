import { Worker, type WorkerOptions } from 'node:worker_threads';

const bootstrapUrl = new URL('./ts-worker-bootstrap.mjs', import.meta.url);

/** Starts a worker thread running a TypeScript module (through tsx), whatever loader the parent was started with. */
export function startTsWorker(entry: URL, workerData: Record<string, unknown>, options: WorkerOptions = {}): Worker {
  return new Worker(bootstrapUrl, { ...options, workerData: { ...workerData, tesseraWorkerEntry: entry.href } });
}
