/**
 * The hostile side of a soak: while normal traffic runs, one hostile call every `intervalMs`, in turn:
 *   undecodable   GenerateRequest bytes with a truncated string (`1a 7f 61`)          -> INVALID_ARGUMENT
 *   invalid       a token id past the vocabulary                                       -> INVALID_ARGUMENT
 *   huge-prompt   a text prompt of `hugePromptBytes` (default 3.9 MB)                  -> INVALID_ARGUMENT (PROMPT_TOO_LONG)
 *                 or RESOURCE_EXHAUSTED when it exceeds the server's message limit
 *   cancel        a stream cancelled by the client after its first tokens              -> CANCELLED
 *   adapter       (with `adapterSources`) LoadAdapter of a hostile adapter, one Generate with it if it loaded, then
 *                 UnloadAdapter                                                        -> OK or a client-error status
 * Every result is recorded with the statuses it was allowed to end with; a server fault (INTERNAL, UNKNOWN,
 * UNAVAILABLE, DEADLINE_EXCEEDED) or an unexpected status is what the soak reports as a failure.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { loadPublicApi } from '../server/proto-loader.ts';
import type { ServedModelInfo, TargetOptions } from './generation-client.ts';

export type HostileAction = 'undecodable' | 'invalid' | 'huge-prompt' | 'cancel' | 'adapter';

export interface HostileMixOptions {
  /** One hostile call every this many ms (default 1000). */
  intervalMs?: number;
  /** Size of the huge text prompt (default 3.9 MB, under the default 4 MiB message limit). */
  hugePromptBytes?: number;
  /** Adapter sources the server can read (under its --adapter-root) to load and unload; none = no adapter action. */
  adapterSources?: readonly string[];
  /** Deadline of each hostile call (default 30 s). */
  timeoutMs?: number;
}

export interface HostileResult {
  action: HostileAction;
  /** gRPC status name of the call (for 'adapter': of the load; 'OK' when it loaded and the rest went through). */
  status: string;
  details: string;
  /** Whether `status` is one this action may end with. */
  expected: boolean;
  ms: number;
}

const EXPECTED: Readonly<Record<HostileAction, readonly string[]>> = {
  undecodable: ['INVALID_ARGUMENT'],
  invalid: ['INVALID_ARGUMENT'],
  'huge-prompt': ['INVALID_ARGUMENT', 'RESOURCE_EXHAUSTED'],
  cancel: ['CANCELLED', 'OK'],
  adapter: ['OK', 'INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'NOT_FOUND', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED'],
};

/* eslint-disable @typescript-eslint/no-explicit-any -- grpc-js clients from loadPackageDefinition are untyped */
type DynamicClient = any;

const statusName = (code: number | undefined): string => (code === undefined ? 'UNKNOWN' : ((grpc.status as unknown as Record<number, string>)[code] ?? `CODE_${code}`));

export interface HostileMix {
  /** Stops issuing and waits for the calls in flight; returns every result. */
  stop(): Promise<HostileResult[]>;
}

/** Starts issuing hostile calls against `target` until stop(). */
export function startHostileMix(target: TargetOptions, model: ServedModelInfo, opts: HostileMixOptions = {}): HostileMix {
  const creds = target.tls ? grpc.credentials.createSsl(target.caFile ? readFileSync(target.caFile) : null) : grpc.credentials.createInsecure();
  const pkg = grpc.loadPackageDefinition(loadPublicApi().packageDefinition) as DynamicClient;
  const channelOptions = { 'grpc.max_send_message_length': 64 << 20 };
  const gen: DynamicClient = new pkg.tessera.v1.Generation(target.target, creds, channelOptions);
  const admin: DynamicClient = new pkg.tessera.v1.Adapters(target.target, creds, channelOptions);
  const raw = new grpc.Client(target.target, creds, channelOptions);
  const metadata = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    if (target.apiKey) md.set('authorization', `Bearer ${target.apiKey}`);
    return md;
  };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = () => ({ deadline: Date.now() + timeoutMs });
  const hugeText = 'lorem ipsum dolor sit amet '.repeat(Math.ceil((opts.hugePromptBytes ?? 3_900_000) / 27)).slice(0, opts.hugePromptBytes ?? 3_900_000);
  const actions: HostileAction[] = ['undecodable', 'invalid', 'huge-prompt', 'cancel'];
  if ((opts.adapterSources ?? []).length > 0) actions.push('adapter');

  const unary = (client: DynamicClient, method: string, body: object): Promise<{ status: string; details: string; reply: any }> =>
    new Promise((resolve) => {
      client[method](body, metadata(), deadline(), (err: grpc.ServiceError | null, reply: any) =>
        resolve({ status: err ? statusName(err.code) : 'OK', details: err?.details ?? '', reply }),
      );
    });

  let adapterTurn = 0;
  const run = async (action: HostileAction): Promise<{ status: string; details: string }> => {
    switch (action) {
      case 'undecodable':
        return new Promise((resolve) => {
          const identity = (b: Buffer) => b;
          raw.makeUnaryRequest('/tessera.v1.Generation/Generate', identity, identity, Buffer.from('1a7f61', 'hex'), metadata(), deadline(), (err) =>
            resolve({ status: err ? statusName(err.code) : 'OK', details: err?.details ?? '' }),
          );
        });
      case 'invalid':
        return unary(gen, 'Generate', { token_ids: { ids: [1, model.vocabSize + 7] } });
      case 'huge-prompt':
        return unary(gen, 'Generate', { text: hugeText, stopping: { max_new_tokens: 1 } });
      case 'cancel':
        return new Promise((resolve) => {
          const call = gen.GenerateStream({ token_ids: { ids: [1, 2, 3] }, stopping: { max_new_tokens: Math.min(64, model.maxNewTokens), ignore_eos: true } }, metadata(), deadline());
          let settled = false;
          const settle = (status: string, details: string) => {
            if (!settled) resolve({ status, details });
            settled = true;
          };
          call.once('data', () => call.cancel());
          call.on('error', (err: grpc.ServiceError) => settle(statusName(err.code), err.details ?? ''));
          call.on('end', () => settle('OK', ''));
        });
      case 'adapter': {
        const sources = opts.adapterSources!;
        const source = sources[adapterTurn % sources.length];
        const id = `hostile-${adapterTurn++}`;
        const loaded = await unary(admin, 'LoadAdapter', { adapter_id: id, source });
        if (loaded.status !== 'OK') return loaded;
        const used = await unary(gen, 'Generate', { adapter_id: id, token_ids: { ids: [1, 2, 3] }, sampling: { temperature: 0 }, stopping: { max_new_tokens: 4, ignore_eos: true } });
        const unloaded = await unary(admin, 'UnloadAdapter', { adapter_id: id });
        if (used.status !== 'OK') return { status: used.status, details: `generate with the loaded adapter: ${used.details}` };
        return unloaded.status === 'OK' ? loaded : { status: unloaded.status, details: `unload: ${unloaded.details}` };
      }
    }
  };

  const results: HostileResult[] = [];
  const inFlight = new Set<Promise<void>>();
  let turn = 0;
  const fire = () => {
    const action = actions[turn++ % actions.length];
    const t0 = performance.now();
    const p = run(action).then(({ status, details }) => {
      results.push({ action, status, details: details.slice(0, 200), expected: EXPECTED[action].includes(status), ms: performance.now() - t0 });
    });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  const timer = setInterval(fire, opts.intervalMs ?? 1000);
  fire();

  return {
    async stop() {
      clearInterval(timer);
      while (inFlight.size > 0) await Promise.all([...inFlight]);
      gen.close();
      admin.close();
      raw.close();
      return results;
    },
  };
}
