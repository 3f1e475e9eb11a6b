// Entry of every worker thread: registers the TypeScript loader, then runs the worker module named in workerData.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.tesseraWorkerEntry);
