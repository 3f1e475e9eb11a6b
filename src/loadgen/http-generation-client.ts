/**
 * The load generator's client for the OpenAI-compatible HTTP face (`tessera bench --protocol http`): POST
 * /v1/completions with the token-id prompt, streamed as server-sent events or whole, over keep-alive connections
 * (node:http, one socket per call in flight). Timing as the gRPC client: the first chunk with text is the first
 * token; gaps between text chunks are the inter-token gaps; output tokens come from the usage the server reports.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { TesseraError } from '../errors.ts';
import { ADAPTER_HEADER, newCallRecord, type CallRecord, type GenerationClient, type ServedModelInfo, type TargetOptions } from './generation-client.ts';

/**
 * gRPC status names of the HTTP statuses (the report's error table counts by gRPC status, so both protocols' reports
 * compare row for row): the inverse of the server's mapping (src/server/http/http-errors.ts), 400 read as
 * INVALID_ARGUMENT (FAILED_PRECONDITION shares it).
 */
const STATUS_BY_HTTP: Readonly<Record<number, string>> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  408: 'DEADLINE_EXCEEDED',
  413: 'RESOURCE_EXHAUSTED',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

function statusOf(httpStatus: number, body: string): { status: string; details: string } {
  const status = STATUS_BY_HTTP[httpStatus] ?? 'INTERNAL';
  try {
    const err = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    return { status, details: err?.message ?? body.slice(0, 200) };
  } catch {
    return { status: STATUS_BY_HTTP[httpStatus] ?? 'INTERNAL', details: `HTTP ${httpStatus}: ${body.slice(0, 200)}` };
  }
}

/** Error codes that can end a started stream, by their gRPC status (the rest read as INTERNAL). */
const GRPC_STATUS_OF_CODE: Readonly<Record<string, string>> = {
  CANCELLED: 'CANCELLED',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  DRAINING: 'UNAVAILABLE',
  WORKER_UNAVAILABLE: 'UNAVAILABLE',
  KV_CACHE_EXHAUSTED: 'RESOURCE_EXHAUSTED',
};

interface BaseModelCard {
  id: string;
  max_model_len: number;
  tessera?: { quantization: string; vocab_size: number; max_prompt_tokens: number; max_new_tokens: number };
}

export function createHttpGenerationClient(opts: TargetOptions): GenerationClient {
  if (!/^[^\s/]+:\d+$/.test(opts.target)) throw new TesseraError('CONFIG_INVALID', `--target must be HOST:PORT. Given: ${JSON.stringify(opts.target)}`);
  if (!opts.tls && opts.caFile) throw new TesseraError('CONFIG_INVALID', '--ca needs --tls');
  const [host, portText] = [opts.target.slice(0, opts.target.lastIndexOf(':')), opts.target.slice(opts.target.lastIndexOf(':') + 1)];
  const transport = opts.tls ? https : http;
  const agent = opts.tls ? new https.Agent({ keepAlive: true, ...(opts.caFile ? { ca: readFileSync(opts.caFile) } : {}) }) : new http.Agent({ keepAlive: true });
  let baseModelId = '';

  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({ ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}), ...extra });

  function request(method: string, path: string, hdrs: Record<string, string>, timeoutMs: number): http.ClientRequest {
    const req = transport.request({ host: host.replace(/^\[|\]$/g, ''), port: Number(portText), method, path, headers: hdrs, agent });
    req.setTimeout(timeoutMs);
    return req;
  }

  return {
    getModelInfo(timeoutMs) {
      return new Promise((resolve, reject) => {
        const req = request('GET', '/v1/models', headers(), timeoutMs);
        req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.on('error', (err) => reject(new TesseraError('WORKER_UNAVAILABLE', `GET /v1/models on ${opts.target} failed: ${err.message}`, { cause: err })));
        req.on('response', (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d: string) => (body += d));
          res.on('end', () => {
            if (res.statusCode !== 200) {
              const { status, details } = statusOf(res.statusCode ?? 0, body);
              const code = status === 'UNAUTHENTICATED' || status === 'PERMISSION_DENIED' ? status : 'WORKER_UNAVAILABLE';
              reject(new TesseraError(code, `GET /v1/models on ${opts.target} failed: ${status}: ${details}`));
              return;
            }
            const base = (JSON.parse(body) as { data: BaseModelCard[] }).data[0];
            if (!base?.tessera) {
              reject(new TesseraError('CONFIG_INVALID', `${opts.target} is not a Tessera HTTP face (GET /v1/models has no base model with its limits)`));
              return;
            }
            baseModelId = base.id;
            resolve({
              modelId: base.id,
              quantization: base.tessera.quantization,
              vocabSize: base.tessera.vocab_size,
              maxContextTokens: base.max_model_len,
              maxPromptTokens: base.tessera.max_prompt_tokens,
              maxNewTokens: base.tessera.max_new_tokens,
            } satisfies ServedModelInfo);
          });
        });
        req.end();
      });
    },

    start(lr, { stream, timeoutMs }) {
      const body = JSON.stringify({
        model: lr.adapterId || baseModelId,
        prompt: lr.promptTokenIds,
        max_tokens: lr.maxNewTokens,
        temperature: lr.temperature,
        seed: lr.seed,
        ignore_eos: true,
        stream,
        ...(stream ? { stream_options: { include_usage: true } } : {}),
      });
      const record = newCallRecord(lr);
      const req = request(
        'POST',
        '/v1/completions',
        headers({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'x-request-id': lr.requestId, ...(lr.adapterId ? { [ADAPTER_HEADER]: lr.adapterId } : {}) }),
        timeoutMs,
      );
      let cancelled = false;
      const done = new Promise<CallRecord>((resolve) => {
        const finish = (status: string, details = ''): void => {
          if (record.endMs !== 0) return;
          record.endMs = performance.now();
          record.status = status;
          record.details = details;
          resolve(record);
        };
        req.on('timeout', () => req.destroy(new Error('deadline')));
        req.on('error', (err) => finish(cancelled ? 'CANCELLED' : err.message === 'deadline' ? 'DEADLINE_EXCEEDED' : 'UNAVAILABLE', err.message));
        req.on('response', (res) => {
          res.setEncoding('utf8');
          if (res.statusCode !== 200 || !stream) {
            let text = '';
            res.on('data', (d: string) => (text += d));
            res.on('end', () => {
              if (res.statusCode !== 200) {
                const s = statusOf(res.statusCode ?? 0, text);
                finish(s.status, s.details);
                return;
              }
              record.outputTokens = (JSON.parse(text) as { usage: { completion_tokens: number } }).usage.completion_tokens;
              finish('OK');
            });
            res.on('error', (err) => finish(cancelled ? 'CANCELLED' : 'UNAVAILABLE', err.message));
            return;
          }
          let buffered = '';
          let lastChunkMs = 0;
          let failure: { status: string; details: string } | null = null;
          res.on('data', (d: string) => {
            buffered += d;
            let end: number;
            while ((end = buffered.indexOf('\n\n')) >= 0) {
              const event = buffered.slice(0, end);
              buffered = buffered.slice(end + 2);
              if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
              const chunk = JSON.parse(event.slice(6)) as { choices?: Array<{ text: string }>; usage?: { completion_tokens: number } | null; error?: { code?: string; message?: string } };
              // An error after the stream began: its Tessera code says what it was (CANCELLED, DRAINING, ...).
              if (chunk.error) failure = { status: chunk.error.code ? (GRPC_STATUS_OF_CODE[chunk.error.code] ?? 'INTERNAL') : 'INTERNAL', details: chunk.error.message ?? '' };
              if (chunk.usage) record.outputTokens = chunk.usage.completion_tokens;
              if (!chunk.choices?.[0]?.text) continue;
              const now = performance.now();
              if (record.firstTokenMs === null) record.firstTokenMs = now;
              else record.interTokenGapsMs.push(now - lastChunkMs);
              lastChunkMs = now;
            }
          });
          res.on('end', () => (failure ? finish(failure.status, failure.details) : finish('OK')));
          res.on('error', (err) => finish(cancelled ? 'CANCELLED' : 'UNAVAILABLE', err.message));
        });
      });
      req.end(body);
      return {
        done,
        cancel: () => {
          cancelled = true;
          req.destroy(new Error('cancelled'));
        },
      };
    },

    close() {
      agent.destroy();
    },
  };
}
