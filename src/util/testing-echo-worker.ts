import { parentPort, workerData } from 'node:worker_threads';
const n: number = workerData.n;
parentPort!.postMessage({ doubled: n * 2 });
