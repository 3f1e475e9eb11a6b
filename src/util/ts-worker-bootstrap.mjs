// Entry of every worker thread: registers the TypeScript loader (and the parent's ONNX Runtime binding choice, see
// ort-binding.ts), then runs the worker module named in workerData.
import { register } from 'tsx/esm/api';
import { register as registerHooks } from 'node:module';
import { workerData } from 'node:worker_threads';

register();
if (workerData.tesseraOrtBinding) registerHooks(new URL('./ort-binding-hooks.mjs', import.meta.url), { data: { url: workerData.tesseraOrtBinding } });
await import(workerData.tesseraWorkerEntry);
