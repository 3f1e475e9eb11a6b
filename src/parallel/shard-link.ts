import * as grpc from '@grpc/grpc-js';
import type { Worker } from 'node:worker_threads';
import { TesseraError } from '../errors.ts';
import { startTsWorker } from '../util/ts-worker.ts';
import { decodeWorkerFrame, encodeControllerMessage, shardServiceClient } from './shard-grpc.ts';
import type { ControllerMessage, WithoutId, WorkerMessage } from './wire.ts';

/**
 * The controller's handle on one shard worker, whatever carries the messages. A link that goes down (worker exited,
 * stream ended, a call not answered within its timeout) rejects every pending call with WORKER_UNAVAILABLE, calls
 * its down listener once, and refuses further calls; the controller then opens a fresh link.
 */
export interface ShardLink {
  readonly label: string;
  call(msg: WithoutId<ControllerMessage>, options?: { timeoutMs?: number; transfer?: ArrayBuffer[] }): Promise<WorkerMessage>;
  onDown(listener: (reason: string) => void): void;
  /** Ends the worker (thread terminated, stream cancelled); idempotent. */
  close(): Promise<void>;
}

type Pending = { resolve: (msg: WorkerMessage) => void; reject: (err: Error) => void; timer: NodeJS.Timeout | null };

/** Pending-call bookkeeping shared by the transports. */
export class PendingCalls {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private downReason: string | null = null;
  private readonly listeners: Array<(reason: string) => void> = [];

  constructor(private readonly label: string) {}

  get isDown(): boolean {
    return this.downReason !== null;
  }

  /** Registers a call; `send` puts it on the wire. */
  open(send: (id: number) => void, timeoutMs: number | undefined, what: string): Promise<WorkerMessage> {
    if (this.downReason !== null) return Promise.reject(new TesseraError('WORKER_UNAVAILABLE', `shard worker ${this.label} is down: ${this.downReason}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs
        ? setTimeout(() => this.down(`no answer to ${what} within ${timeoutMs} ms`), timeoutMs)
        : null;
      this.pending.set(id, { resolve, reject, timer });
      try {
        send(id);
      } catch (err) {
        this.down(`send failed: ${(err as Error).message}`);
      }
    });
  }

  answer(msg: WorkerMessage): void {
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (p.timer) clearTimeout(p.timer);
    if (msg.type === 'error') p.reject(new TesseraError(msg.code, msg.message));
    else p.resolve(msg);
  }

  onDown(listener: (reason: string) => void): void {
    if (this.downReason !== null) listener(this.downReason);
    else this.listeners.push(listener);
  }

  down(reason: string): void {
    if (this.downReason !== null) return;
    this.downReason = reason;
    const err = new TesseraError('WORKER_UNAVAILABLE', `shard worker ${this.label} stopped: ${reason}`);
    for (const p of this.pending.values()) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const l of this.listeners.splice(0)) l(reason);
  }
}

/** A shard worker in a worker thread of this process (structured clone; result buffers transferred). */
export class ThreadLink implements ShardLink {
  private readonly calls: PendingCalls;
  private closing: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  private exited = false;

  private constructor(
    readonly label: string,
    private readonly worker: Worker,
  ) {
    this.calls = new PendingCalls(label);
    worker.on('message', (msg: WorkerMessage) => this.calls.answer(msg));
    worker.on('error', (err) => this.calls.down(err.message));
    worker.on('exit', (code) => {
      this.exited = true;
      this.calls.down(`thread exited with code ${code}`);
    });
  }

  static open(label: string): ThreadLink {
    return new ThreadLink(label, startTsWorker(new URL('./runner-worker.ts', import.meta.url), {}));
  }

  /** The thread's id, for tests that kill a worker. */
  get threadId(): number {
    return this.worker.threadId;
  }

  call(msg: WithoutId<ControllerMessage>, options: { timeoutMs?: number; transfer?: ArrayBuffer[] } = {}): Promise<WorkerMessage> {
    return this.calls.open((id) => this.worker.postMessage({ ...msg, id }, options.transfer ?? []), options.timeoutMs, msg.type);
  }

  onDown(listener: (reason: string) => void): void {
    this.calls.onDown(listener);
  }

  /**
   * Takes the worker down at once for the controller (every pending call fails now), then stops the thread: asked
   * first, forcibly after `graceMs` (a hung worker). Terminating a thread while ONNX Runtime is inside session.run can
   * abort the whole process, so a thread mid-run is left to finish that run and exit by itself.
   */
  async kill(reason = 'killed', graceMs = 10_000): Promise<void> {
    this.calls.down(reason);
    await this.stopThread(graceMs);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.calls.down('closed');
      await this.stopThread(5_000);
    })();
    return this.closing;
  }

  private stopThread(graceMs: number): Promise<void> {
    this.stopping ??= new Promise<void>((resolve) => {
      if (this.exited) return resolve();
      const timer = setTimeout(() => void this.worker.terminate(), graceMs);
      this.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      // Answered by nobody (id -1): the worker releases its sessions after the run in progress and closes its port.
      this.worker.postMessage({ type: 'shutdown', id: -1 });
    });
    return this.stopping;
  }
}

/** A shard worker in another process or host, over one tessera.shard.v1 Connect stream. */
export class GrpcLink implements ShardLink {
  private readonly calls: PendingCalls;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly label: string,
    private readonly client: grpc.Client,
    private readonly stream: grpc.ClientDuplexStream<unknown, unknown>,
  ) {
    this.calls = new PendingCalls(label);
    stream.on('data', (frame: Record<string, unknown>) => this.calls.answer(decodeWorkerFrame(frame)));
    stream.on('error', (err: Error) => this.calls.down(err.message));
    stream.on('end', () => this.calls.down('stream ended'));
  }

  /** Connects to `address` (host:port), waiting at most `timeoutMs` for the channel. */
  static async connect(address: string, timeoutMs = 5000): Promise<GrpcLink> {
    const Ctor = shardServiceClient();
    const client = new Ctor(address, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
    try {
      await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + timeoutMs, (err?: Error) => (err ? reject(err) : resolve())));
    } catch (err) {
      client.close();
      throw new TesseraError('WORKER_UNAVAILABLE', `shard worker ${address} not reachable: ${(err as Error).message}`);
    }
    const stream = (client as unknown as { Connect: () => grpc.ClientDuplexStream<unknown, unknown> }).Connect();
    return new GrpcLink(address, client, stream);
  }

  call(msg: WithoutId<ControllerMessage>, options: { timeoutMs?: number } = {}): Promise<WorkerMessage> {
    return this.calls.open((id) => this.stream.write(encodeControllerMessage({ ...msg, id } as ControllerMessage)), options.timeoutMs, msg.type);
  }

  onDown(listener: (reason: string) => void): void {
    this.calls.onDown(listener);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.calls.down('closed');
      this.stream.cancel();
      this.client.close();
    })();
    return this.closing;
  }
}

/** Link factory for a controller whose workers are remote: worker index i is `addresses[i]` (stage-major). */
export function grpcLinks(addresses: string[], connectTimeoutMs = 5000): (index: number) => Promise<ShardLink> {
  return (index) => {
    const address = addresses[index];
    if (address === undefined) return Promise.reject(new TesseraError('CONFIG_INVALID', `\`workers\` lists ${addresses.length} addresses; the shard group needs one for worker ${index}`));
    return GrpcLink.connect(address, connectTimeoutMs);
  };
}
