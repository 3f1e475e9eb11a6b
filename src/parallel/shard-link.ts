import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { TesseraError } from '../errors.ts';
import { startTsWorker } from '../util/ts-worker.ts';
import { clientChannelOptions, clientCredentials, connectMetadata, LEASE_FREE_IN_TRAILER, LEASE_HEADER, type ShardClientSecurity } from './shard-auth.ts';
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

  /**
   * Connects to the worker at `address` (host:port) and claims it: retries while it cannot be reached, for at most
   * `timeoutMs`, and resolves once the worker accepted this controller (its lease header). A worker that refuses
   * (credentials, or another controller holds it) fails at once, with the worker's reason.
   */
  static async connect(address: string, options: GrpcLinkOptions = {}): Promise<GrpcLink> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const security = options.security ?? { tls: null, secret: null, controllerId: anonymousControllerId };
    const Ctor = shardServiceClient();
    const client = new Ctor(address, clientCredentials(security), { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1, ...clientChannelOptions(security) });
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const stream = (client as unknown as { Connect: (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown> }).Connect(connectMetadata(security));
      const outcome = await new Promise<'accepted' | grpc.ServiceError>((resolve) => {
        stream.on('metadata', (md: grpc.Metadata) => {
          if (md.get(LEASE_HEADER)[0] === 'granted') resolve('accepted');
        });
        stream.once('error', (err: grpc.ServiceError) => resolve(err));
      });
      stream.removeAllListeners('metadata');
      stream.removeAllListeners('error');
      if (outcome === 'accepted') return new GrpcLink(address, client, stream);
      if (outcome.code === grpc.status.UNAVAILABLE && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
        continue;
      }
      // The worker's last controller is gone and its lease runs out soon: wait for it (a controller replacing a dead
      // one), as long as the worker keeps saying so; a holder that reconnects makes the next answer a plain refusal.
      const freeInMs = Number(outcome.metadata?.get(LEASE_FREE_IN_TRAILER)[0] ?? NaN);
      if (outcome.code === grpc.status.FAILED_PRECONDITION && Number.isFinite(freeInMs) && freeInMs <= (options.maxLeaseWaitMs ?? 60_000)) {
        await new Promise((r) => setTimeout(r, Math.min(Math.max(freeInMs, 0) + CONNECT_RETRY_MS, 5000)));
        continue;
      }
      client.close();
      throw refusal(address, outcome, timeoutMs, security);
    }
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

export interface GrpcLinkOptions {
  /** How long to keep trying to reach the worker. Default 5 s. */
  timeoutMs?: number;
  /** TLS, shared secret and the controller's id (shard-auth.ts); default: plaintext, no secret, an id per process. */
  security?: ShardClientSecurity;
  /** Wait for a worker whose previous controller is gone when its lease ends within this. Default 60 s. */
  maxLeaseWaitMs?: number;
}

const CONNECT_RETRY_MS = 200;
const anonymousControllerId = `controller-${process.pid}-${randomBytes(4).toString('hex')}`;

/** A refused or failed Connect as a Tessera error naming the worker and its reason. */
function refusal(address: string, err: grpc.ServiceError, timeoutMs: number, security: ShardClientSecurity): TesseraError {
  // grpc-js appends a timestamp and an empty resolution note to connection errors.
  const details = (err.details || err.message).replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '').replace(/\.?\s*Resolution note:\s*$/, '').trim();
  switch (err.code) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.INVALID_ARGUMENT:
      return new TesseraError('CONFIG_INVALID', `shard worker ${address} refused this controller: ${details}`);
    case grpc.status.FAILED_PRECONDITION:
      return new TesseraError('WORKER_UNAVAILABLE', `shard worker ${address} refused this controller: ${details}`);
    case grpc.status.UNAVAILABLE:
      return new TesseraError('WORKER_UNAVAILABLE', `shard worker ${address} not reachable within ${timeoutMs} ms: ${details} (is it running, and does its TLS match this controller's: ${linkSecurity(security)}?)`);
    default:
      return new TesseraError('WORKER_UNAVAILABLE', `shard worker ${address}: ${grpc.status[err.code] ?? err.code}: ${details}`);
  }
}

function linkSecurity(security: ShardClientSecurity): string {
  if (!security.tls) return 'plaintext, no --worker-tls-ca';
  return security.tls.cert ? 'mutual TLS' : 'TLS without a client certificate (--worker-tls-cert)';
}

/** Link factory for a controller whose workers are remote: worker index i is `addresses[i]` (stage-major). */
export function grpcLinks(addresses: string[], options: GrpcLinkOptions = {}): (index: number) => Promise<ShardLink> {
  return (index) => {
    const address = addresses[index];
    if (address === undefined) return Promise.reject(new TesseraError('CONFIG_INVALID', `\`workers\` lists ${addresses.length} addresses; the shard group needs one for worker ${index}`));
    return GrpcLink.connect(address, options);
  };
}
