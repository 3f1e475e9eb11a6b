/**
 * Streaming memory bandwidth from JavaScript, STREAM-style, over Float64Arrays much larger than the caches:
 *   copy   dst.set(src)              (a memcpy)              counted bytes = 2 * arrayBytes  (read src, write dst)
 *   read   sum of src, 4 accumulators                         counted bytes = 1 * arrayBytes
 *   triad  a[i] = b[i] + s * c[i]                             counted bytes = 3 * arrayBytes
 * Write-allocate traffic is not counted (STREAM's convention). With numThreads > 1 each worker thread works on its
 * own contiguous slice of SharedArrayBuffers; the time of a repetition is from the first worker's start to the last
 * worker's end, so a straggler counts. Bandwidth in GB/s = 1e9 bytes per second.
 */
import { Worker } from 'node:worker_threads';
import { outOfRange } from '../../src/errors.ts';

export type StreamOp = 'copy' | 'read' | 'triad';

export const BYTES_COUNTED_PER_ELEMENT: Record<StreamOp, number> = { copy: 16, read: 8, triad: 24 };

export interface BandwidthOptions {
  op: StreamOp;
  /** Bytes of each array (the op touches 1-3 of them). */
  arrayBytes: number;
  numThreads: number;
  repetitions: number;
}

export interface BandwidthResult {
  op: StreamOp;
  numThreads: number;
  arrayBytes: number;
  /** Wall time of each repetition, ms. */
  repetitionMs: number[];
  /** Counted bytes / fastest repetition. */
  bestGBps: number;
  /** Counted bytes / median repetition. */
  medianGBps: number;
  /** Checksum of the destination (or the read sum), so the work cannot be optimized away and can be verified. */
  checksum: number;
}

// Plain JavaScript so the worker needs no TypeScript loader. Each repetition waits on a shared flag so that all workers
// start together, then reports its absolute start and end times.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { op, buffers, from, to, repetitions, flag } = workerData;
const arrays = buffers.map((b) => new Float64Array(b));
const go = new Int32Array(flag);
const now = () => performance.timeOrigin + performance.now();
let checksum = 0;
function run() {
  if (op === 'copy') {
    arrays[1].set(arrays[0].subarray(from, to), from);
    checksum = arrays[1][from] + arrays[1][to - 1];
  } else if (op === 'read') {
    const a = arrays[0];
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = from;
    for (; i + 3 < to; i += 4) { s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3]; }
    for (; i < to; i++) s0 += a[i];
    checksum = s0 + s1 + s2 + s3;
  } else {
    const a = arrays[2], b = arrays[0], c = arrays[1];
    for (let i = from; i < to; i++) a[i] = b[i] + 3 * c[i];
    checksum = a[from] + a[to - 1];
  }
}
run(); // warm-up: JIT and page faults outside the timed repetitions
parentPort.postMessage({ ready: true });
const times = [];
for (let r = 0; r < repetitions; r++) {
  Atomics.wait(go, 0, r);
  const start = now();
  run();
  times.push([start, now()]);
  parentPort.postMessage({ done: r });
}
parentPort.postMessage({ times, checksum });
`;

interface WorkerReport {
  times: Array<[number, number]>;
  checksum: number;
}

export async function measureBandwidth(options: BandwidthOptions): Promise<BandwidthResult> {
  const { op, numThreads, repetitions } = options;
  if (!(Number.isInteger(numThreads) && numThreads >= 1)) throw outOfRange('numThreads', 'an integer >= 1', numThreads);
  if (!(Number.isInteger(repetitions) && repetitions >= 1)) throw outOfRange('repetitions', 'an integer >= 1', repetitions);
  const numElements = Math.floor(options.arrayBytes / 8);
  if (numElements < numThreads * 4) throw outOfRange('arrayBytes', `>= ${numThreads * 32} (4 doubles per thread)`, options.arrayBytes);
  const numArrays = op === 'read' ? 1 : op === 'copy' ? 2 : 3;
  const buffers = Array.from({ length: numArrays }, () => new SharedArrayBuffer(numElements * 8));
  const first = new Float64Array(buffers[0]);
  for (let i = 0; i < numElements; i++) first[i] = (i % 1024) * 0.5;
  if (numArrays === 3) new Float64Array(buffers[1]).fill(1);
  const flag = new SharedArrayBuffer(4);
  const go = new Int32Array(flag);

  const workers = Array.from({ length: numThreads }, (_, t) => {
    const from = Math.floor((numElements * t) / numThreads);
    const to = Math.floor((numElements * (t + 1)) / numThreads);
    return new Worker(WORKER_SOURCE, { eval: true, workerData: { op, buffers, from, to, repetitions, flag } });
  });
  try {
    const reports = workers.map(
      (w) =>
        new Promise<{ ready: Promise<void>; done: (r: number) => Promise<void>; final: Promise<WorkerReport> }>((resolve, reject) => {
          const waiters = new Map<string, () => void>();
          const arrived = new Set<string>();
          const wait = (key: string) =>
            new Promise<void>((res) => {
              if (arrived.has(key)) res();
              else waiters.set(key, res);
            });
          const final = new Promise<WorkerReport>((res, rej) => {
            w.on('message', (msg: { ready?: boolean; done?: number; times?: Array<[number, number]>; checksum?: number }) => {
              const key = msg.ready ? 'ready' : msg.done !== undefined ? `done${msg.done}` : 'final';
              if (key === 'final') res({ times: msg.times!, checksum: msg.checksum! });
              arrived.add(key);
              waiters.get(key)?.();
            });
            w.on('error', rej);
          });
          final.catch(reject);
          resolve({ ready: wait('ready'), done: (r) => wait(`done${r}`), final });
        }),
    );
    const handles = await Promise.all(reports);
    await Promise.all(handles.map((h) => h.ready));
    for (let r = 0; r < repetitions; r++) {
      Atomics.store(go, 0, r + 1);
      Atomics.notify(go, 0);
      await Promise.all(handles.map((h) => h.done(r)));
    }
    const finals = await Promise.all(handles.map((h) => h.final));
    const repetitionMs = Array.from({ length: repetitions }, (_, r) => {
      const start = Math.min(...finals.map((f) => f.times[r][0]));
      const end = Math.max(...finals.map((f) => f.times[r][1]));
      return end - start;
    });
    const countedBytes = numElements * BYTES_COUNTED_PER_ELEMENT[op];
    const sorted = [...repetitionMs].sort((a, b) => a - b);
    const medianMs = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    return {
      op,
      numThreads,
      arrayBytes: numElements * 8,
      repetitionMs,
      bestGBps: countedBytes / (sorted[0] * 1e6),
      medianGBps: countedBytes / (medianMs * 1e6),
      checksum: finals.reduce((s, f) => s + f.checksum, 0),
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
