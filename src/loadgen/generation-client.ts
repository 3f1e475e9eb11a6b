/**
 * The load generator's gRPC client for tessera.v1.Generation: one channel, calls timed with performance.now().
 * Built from the same protos as the server (src/server/proto-loader.ts), with its snake_case field names.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { TesseraError } from '../errors.ts';
import { loadPublicApi } from '../server/proto-loader.ts';

/** Metadata header carrying the adapter id, for load balancers that hash on it (Envoy ring-hash adapter affinity). */
export const ADAPTER_HEADER = 'x-tessera-adapter';

export interface TargetOptions {
  /** HOST:PORT. */
  target: string;
  /** TLS channel (default false: plaintext). */
  tls?: boolean;
  /** PEM CA bundle to verify the server with (TLS only; default: the system roots). */
  caFile?: string | null;
  /** Sent as `authorization: Bearer KEY`. */
  apiKey?: string | null;
}

/** The subset of GetModelInfoResponse the load generator uses. */
export interface ServedModelInfo {
  modelId: string;
  quantization: string;
  vocabSize: number;
  maxContextTokens: number;
  maxPromptTokens: number;
  maxNewTokens: number;
}

export interface LoadRequest {
  requestId: string;
  /** Empty = base model. */
  adapterId: string;
  promptTokenIds: number[];
  maxNewTokens: number;
  temperature: number;
  seed: number;
}

/** What one call did, times in ms on the performance.now() clock. */
export interface CallRecord {
  requestId: string;
  adapterId: string;
  promptTokens: number;
  startMs: number;
  endMs: number;
  /** gRPC status name ('OK', 'NOT_FOUND', ...). */
  status: string;
  /** Status details of a failed call. */
  details: string;
  outputTokens: number;
  /** Streaming only: arrival of the first message that carried tokens. */
  firstTokenMs: number | null;
  /** Streaming only: gaps between consecutive token-carrying messages, ms. */
  interTokenGapsMs: number[];
  /** The generated token ids (to compare a run against another with the same seed). */
  outputTokenIds: number[];
}

/** The record of a call starting now. */
export function newCallRecord(req: LoadRequest): CallRecord {
  return {
    requestId: req.requestId,
    adapterId: req.adapterId,
    promptTokens: req.promptTokenIds.length,
    startMs: performance.now(),
    endMs: 0,
    status: 'OK',
    details: '',
    outputTokens: 0,
    firstTokenMs: null,
    interTokenGapsMs: [],
    outputTokenIds: [],
  };
}

export interface RunningCall {
  readonly done: Promise<CallRecord>;
  cancel(): void;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- grpc-js clients from loadPackageDefinition are untyped */
type DynamicClient = any;

export interface GenerationClient {
  getModelInfo(timeoutMs: number): Promise<ServedModelInfo>;
  /** Starts one Generate (unary) or GenerateStream call with the given deadline; never rejects. */
  start(req: LoadRequest, opts: { stream: boolean; timeoutMs: number }): RunningCall;
  close(): void;
}

function statusName(code: number | undefined): string {
  if (code === undefined) return 'UNKNOWN';
  return (grpc.status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

export function createGenerationClient(opts: TargetOptions): GenerationClient {
  if (!/^[^\s/]+:\d+$/.test(opts.target)) throw new TesseraError('CONFIG_INVALID', `--target must be HOST:PORT. Given: ${JSON.stringify(opts.target)}`);
  let creds: grpc.ChannelCredentials;
  if (opts.tls) creds = grpc.credentials.createSsl(opts.caFile ? readFileSync(opts.caFile) : null);
  else {
    if (opts.caFile) throw new TesseraError('CONFIG_INVALID', '--ca needs --tls');
    creds = grpc.credentials.createInsecure();
  }
  const pkg = grpc.loadPackageDefinition(loadPublicApi().packageDefinition) as DynamicClient;
  const client: DynamicClient = new pkg.tessera.v1.Generation(opts.target, creds, { 'grpc.max_receive_message_length': 64 << 20 });

  const metadata = (adapterId: string): grpc.Metadata => {
    const md = new grpc.Metadata();
    if (opts.apiKey) md.set('authorization', `Bearer ${opts.apiKey}`);
    if (adapterId) md.set(ADAPTER_HEADER, adapterId);
    return md;
  };

  return {
    getModelInfo(timeoutMs) {
      return new Promise((resolve, reject) => {
        client.GetModelInfo({}, metadata(''), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: any) => {
          if (err) {
            const code = err.code === grpc.status.UNAUTHENTICATED ? 'UNAUTHENTICATED' : err.code === grpc.status.PERMISSION_DENIED ? 'PERMISSION_DENIED' : 'WORKER_UNAVAILABLE';
            reject(new TesseraError(code, `GetModelInfo on ${opts.target} failed: ${statusName(err.code)}: ${err.details}`, { cause: err }));
            return;
          }
          resolve({
            modelId: res.model_id,
            quantization: res.quantization,
            vocabSize: res.vocab_size,
            maxContextTokens: res.max_context_tokens,
            maxPromptTokens: res.max_prompt_tokens,
            maxNewTokens: res.max_new_tokens,
          });
        });
      });
    },

    start(req, { stream, timeoutMs }) {
      const body = {
        request_id: req.requestId,
        adapter_id: req.adapterId,
        token_ids: { ids: req.promptTokenIds },
        sampling: { temperature: req.temperature, seed: req.seed },
        stopping: { max_new_tokens: req.maxNewTokens, ignore_eos: true },
        top_n_logprobs: 0,
      };
      const record = newCallRecord(req);
      const callOptions = { deadline: Date.now() + timeoutMs };
      let call: grpc.ClientUnaryCall | grpc.ClientReadableStream<unknown>;
      const done = new Promise<CallRecord>((resolve) => {
        const finish = (err: grpc.ServiceError | null) => {
          if (record.endMs !== 0) return;
          record.endMs = performance.now();
          if (err) {
            record.status = statusName(err.code);
            record.details = err.details ?? err.message;
          }
          resolve(record);
        };
        if (!stream) {
          call = client.Generate(body, metadata(req.adapterId), callOptions, (err: grpc.ServiceError | null, res: any) => {
            if (!err) {
              record.outputTokens = res.usage?.generated_tokens ?? res.token_ids.length;
              record.outputTokenIds = res.token_ids;
            }
            finish(err);
          });
          return;
        }
        const s: grpc.ClientReadableStream<any> = client.GenerateStream(body, metadata(req.adapterId), callOptions);
        call = s;
        let lastTokenMs = 0;
        s.on('data', (m: any) => {
          const n: number = m.token_ids.length;
          if (n === 0) return;
          const now = performance.now();
          if (record.firstTokenMs === null) record.firstTokenMs = now;
          else record.interTokenGapsMs.push(now - lastTokenMs);
          lastTokenMs = now;
          record.outputTokens += n;
          record.outputTokenIds.push(...(m.token_ids as number[]));
        });
        s.on('error', (err: grpc.ServiceError) => finish(err));
        s.on('status', (st: grpc.StatusObject) => {
          if (st.code === grpc.status.OK) finish(null);
        });
      });
      return { done, cancel: () => call.cancel() };
    },

    close() {
      client.close();
    },
  };
}
