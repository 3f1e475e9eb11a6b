import { readFileSync } from 'node:fs';
import { TesseraError } from '../errors.ts';
import { didYouMean } from './did-you-mean.ts';

/**
 * The one schema of settings, per command (`tessera serve`, `tessera worker`): each has a key (config file), a flag, an
 * environment variable, a default, a unit and a description. Precedence: flag > environment > config file > default.
 * Parsed once, frozen, passed down as typed slices; `--help` and docs/config.md are generated from it.
 */
type Kind = 'string' | 'int' | 'number' | 'bool' | 'list';

interface Setting<K extends Kind = Kind> {
  kind: K;
  flag: string;
  env: string;
  default: K extends 'string' ? string | null : K extends 'int' | 'number' ? number | null : K extends 'bool' ? boolean : string[];
  unit?: string;
  min?: number;
  max?: number;
  choices?: readonly string[];
  doc: string;
}

/** Keeps each setting's own default type, so a setting that defaults to null is nullable in the parsed config. */
const s = <K extends Kind, D extends Setting<K>['default']>(x: Setting<K> & { default: D }): Setting<K> & { default: D } => x;

export const SERVE_SETTINGS = {
  model: s({ kind: 'string', flag: 'model', env: 'TESSERA_MODEL', default: null, doc: 'HF checkpoint or converted model directory; unset = the embedded default model (generated once into the cache)' }),
  quant: s({ kind: 'string', flag: 'quant', env: 'TESSERA_QUANT', default: 'int4', choices: ['fp32', 'int8', 'int4'], doc: 'weight precision when converting an HF checkpoint' }),
  outliers: s({ kind: 'number', flag: 'outliers', env: 'TESSERA_OUTLIERS', default: 0, min: 0, max: 0.49, unit: 'fraction', doc: 'input channels per linear kept in fp32 (SpQR-style) when converting' }),
  int4Accuracy: s({ kind: 'int', flag: 'int4-accuracy', env: 'TESSERA_INT4_ACCURACY', default: 4, min: 0, max: 4, doc: 'int4 MatMulNBits accuracy level when converting: 4 = int8 activations (fast), 0 = fp32 activations (accurate); 1-3 act as 4' }),
  device: s({ kind: 'string', flag: 'device', env: 'TESSERA_DEVICE', default: 'cpu', choices: ['cpu', 'cuda', 'webgpu'], doc: 'ONNX Runtime execution provider' }),
  tp: s({ kind: 'int', flag: 'tp', env: 'TESSERA_TP', default: 1, min: 1, max: 64, doc: 'tensor-parallel ranks per pipeline stage (attention heads and MLP columns split across workers)' }),
  pp: s({ kind: 'int', flag: 'pp', env: 'TESSERA_PP', default: 1, min: 1, max: 64, doc: 'pipeline stages (contiguous layer ranges balanced by parameter count)' }),
  workers: s({ kind: 'list', flag: 'workers', env: 'TESSERA_WORKERS', default: [], doc: 'remote `tessera worker` addresses host:port (tp x pp of them, stage-major); unset = worker threads on this host' }),
  workerModelDir: s({ kind: 'string', flag: 'worker-model-dir', env: 'TESSERA_WORKER_MODEL_DIR', default: null, doc: 'the converted model directory as remote workers see it (default: the same path)' }),
  workerSecretFile: s({ kind: 'string', flag: 'worker-secret-file', env: 'TESSERA_WORKER_SECRET_FILE', default: null, doc: 'file holding the shared secret remote workers expect (their --secret-file); sent on every shard connection' }),
  workerTlsCa: s({ kind: 'string', flag: 'worker-tls-ca', env: 'TESSERA_WORKER_TLS_CA', default: null, doc: 'PEM CA bundle that signed the remote workers\' certificates: TLS on the shard link' }),
  workerTlsCert: s({ kind: 'string', flag: 'worker-tls-cert', env: 'TESSERA_WORKER_TLS_CERT', default: null, doc: 'PEM client certificate this controller shows remote workers (mutual TLS; with --worker-tls-key)' }),
  workerTlsKey: s({ kind: 'string', flag: 'worker-tls-key', env: 'TESSERA_WORKER_TLS_KEY', default: null, doc: 'PEM private key of --worker-tls-cert' }),
  workerTlsServerName: s({ kind: 'string', flag: 'worker-tls-server-name', env: 'TESSERA_WORKER_TLS_SERVER_NAME', default: null, doc: 'name the workers\' certificates must carry when it is not the host in --workers' }),
  controllerId: s({ kind: 'string', flag: 'controller-id', env: 'TESSERA_CONTROLLER_ID', default: null, doc: 'name under which this controller leases remote workers (unset = host-pid-random, new at each start); a restart under the same name reclaims its workers at once' }),
  cudaLibPath: s({ kind: 'list', flag: 'cuda-lib-path', env: 'TESSERA_CUDA_LIB_PATH', default: [], doc: 'directories searched first for the CUDA libraries of --device cuda (`*` matches one path segment, e.g. /venv/lib/python3.12/site-packages/nvidia/*/lib); then LD_LIBRARY_PATH and the system library path (docs/gpu.md)' }),
  intraOpThreads: s({ kind: 'int', flag: 'threads', env: 'TESSERA_THREADS', default: null, min: 1, max: 1024, doc: 'ORT intra-op threads per worker (unset = all cores)' }),
  intraOpSpinning: s({ kind: 'bool', flag: 'thread-spinning', env: 'TESSERA_THREAD_SPINNING', default: true, doc: 'ORT intra-op threads spin between kernels (false: they sleep; faster where the server shares its cores with other busy processes, see docs/engine.md)' }),
  host: s({ kind: 'string', flag: 'host', env: 'TESSERA_HOST', default: '127.0.0.1', doc: 'address the gRPC server binds' }),
  port: s({ kind: 'int', flag: 'port', env: 'TESSERA_PORT', default: 50051, min: 0, max: 65535, doc: 'gRPC port (0 = any free port; the bound one is printed)' }),
  httpPort: s({ kind: 'int', flag: 'http-port', env: 'TESSERA_HTTP_PORT', default: null, min: 0, max: 65535, doc: 'OpenAI-compatible HTTP port on --host (/v1/completions, /v1/chat/completions, /v1/models; unset = off, 0 = any free port)' }),
  httpRequestTimeoutMs: s({ kind: 'int', flag: 'http-request-timeout-ms', env: 'TESSERA_HTTP_REQUEST_TIMEOUT_MS', default: 30_000, min: 100, max: 3_600_000, unit: 'ms', doc: 'time an HTTP client has to send a whole request, headers and body (beyond: 408)' }),
  metricsHost: s({ kind: 'string', flag: 'metrics-host', env: 'TESSERA_METRICS_HOST', default: '127.0.0.1', doc: 'address of the Prometheus endpoint' }),
  metricsPort: s({ kind: 'int', flag: 'metrics-port', env: 'TESSERA_METRICS_PORT', default: null, min: 0, max: 65535, doc: 'Prometheus /metrics port (unset = no endpoint, 0 = any free port)' }),
  otlpEndpoint: s({ kind: 'string', flag: 'otlp-endpoint', env: 'TESSERA_OTLP_ENDPOINT', default: null, doc: 'OTLP/gRPC collector URL for traces (unset = traces not exported)' }),
  apiKeysFile: s({ kind: 'string', flag: 'api-keys', env: 'TESSERA_API_KEYS', default: null, doc: 'JSON file of hashed API keys -> tenants (unset = auth off)' }),
  tlsCert: s({ kind: 'string', flag: 'tls-cert', env: 'TESSERA_TLS_CERT', default: null, doc: 'PEM certificate chain (with --tls-key: TLS on)' }),
  tlsKey: s({ kind: 'string', flag: 'tls-key', env: 'TESSERA_TLS_KEY', default: null, doc: 'PEM private key' }),
  tlsClientCa: s({ kind: 'string', flag: 'tls-client-ca', env: 'TESSERA_TLS_CLIENT_CA', default: null, doc: 'PEM CA bundle: require and verify client certificates (mutual TLS)' }),
  maxMessageBytes: s({ kind: 'int', flag: 'max-message-bytes', env: 'TESSERA_MAX_MESSAGE_BYTES', default: 4 * 1024 * 1024, min: 1024, max: 1 << 30, unit: 'bytes', doc: 'largest gRPC message received or sent' }),
  maxConcurrentRequests: s({ kind: 'int', flag: 'max-concurrent-requests', env: 'TESSERA_MAX_CONCURRENT_REQUESTS', default: 256, min: 1, max: 1_000_000, doc: 'generation calls in flight (beyond: RESOURCE_EXHAUSTED)' }),
  maxQueuedRequests: s({ kind: 'int', flag: 'max-queued-requests', env: 'TESSERA_MAX_QUEUED_REQUESTS', default: 1024, min: 1, max: 1_000_000, doc: 'requests waiting for admission (beyond: RESOURCE_EXHAUSTED)' }),
  maxPromptTokens: s({ kind: 'int', flag: 'max-prompt-tokens', env: 'TESSERA_MAX_PROMPT_TOKENS', default: null, min: 1, max: 10_000_000, unit: 'tokens', doc: 'longest prompt accepted (unset = context - 1)' }),
  maxNewTokens: s({ kind: 'int', flag: 'max-new-tokens', env: 'TESSERA_MAX_NEW_TOKENS', default: null, min: 1, max: 10_000_000, unit: 'tokens', doc: 'largest max_new_tokens accepted (unset = context)' }),
  maxBatchTokens: s({ kind: 'int', flag: 'max-batch-tokens', env: 'TESSERA_MAX_BATCH_TOKENS', default: 2048, min: 1, max: 1_000_000, unit: 'tokens', doc: 'tokens per engine step over all sequences' }),
  prefillChunkTokens: s({ kind: 'int', flag: 'prefill-chunk-tokens', env: 'TESSERA_PREFILL_CHUNK_TOKENS', default: 512, min: 1, max: 1_000_000, unit: 'tokens', doc: 'largest prompt chunk of one sequence per step' }),
  maxRunningSequences: s({ kind: 'int', flag: 'max-running-sequences', env: 'TESSERA_MAX_RUNNING_SEQUENCES', default: 64, min: 1, max: 100_000, doc: 'sequences in the running batch' }),
  decodeStepsPerRun: s({ kind: 'int', flag: 'decode-steps-per-run', env: 'TESSERA_DECODE_STEPS_PER_RUN', default: 1, min: 1, max: 64, unit: 'steps', doc: 'decode steps per model run when every running sequence is decode-only and loop-eligible (greedy or temperature + top-k); > 1 (or --device cuda) runs the model through the ONNX Loop runner (docs/gpu.md)' }),
  kvCacheBytes: s({ kind: 'int', flag: 'kv-cache-bytes', env: 'TESSERA_KV_CACHE_BYTES', default: 1024 * 1024 * 1024, min: 1, max: 2 ** 50, unit: 'bytes', doc: 'memory for the KV cache' }),
  kvBlockTokens: s({ kind: 'int', flag: 'kv-block-tokens', env: 'TESSERA_KV_BLOCK_TOKENS', default: 16, min: 1, max: 4096, unit: 'tokens', doc: 'positions per KV block' }),
  adapterSlots: s({ kind: 'int', flag: 'adapter-slots', env: 'TESSERA_ADAPTER_SLOTS', default: 8, min: 0, max: 1024, doc: 'adapters resident on the device at once' }),
  maxAdapterRank: s({ kind: 'int', flag: 'max-adapter-rank', env: 'TESSERA_MAX_ADAPTER_RANK', default: 16, min: 1, max: 1024, doc: 'largest LoRA rank accepted (slots are padded to it)' }),
  adapterHostCacheBytes: s({ kind: 'int', flag: 'adapter-host-cache-bytes', env: 'TESSERA_ADAPTER_HOST_CACHE_BYTES', default: 512 * 1024 * 1024, min: 0, max: 2 ** 50, unit: 'bytes', doc: 'host LRU budget for adapter bytes (compressed for .cpeft)' }),
  adaptersDir: s({ kind: 'list', flag: 'adapters-dir', env: 'TESSERA_ADAPTERS_DIR', default: [], doc: 'directories whose adapters (PEFT subdirectories, .cpeft files) are registered at start' }),
  adapterRoots: s({ kind: 'list', flag: 'adapter-root', env: 'TESSERA_ADAPTER_ROOTS', default: [], doc: 'directories LoadAdapter may read from (adapters dirs are always allowed)' }),
  maxPinnedAdaptersPerTenant: s({ kind: 'int', flag: 'max-pinned-adapters-per-tenant', env: 'TESSERA_MAX_PINNED_ADAPTERS_PER_TENANT', default: null, min: 0, max: 1024, doc: 'adapters one tenant may pin to device slots (unset = half of the slots that may be pinned, at least 1; shared adapters count only against the slot count)' }),
  drainTimeoutMs: s({ kind: 'int', flag: 'drain-timeout-ms', env: 'TESSERA_DRAIN_TIMEOUT_MS', default: 30_000, min: 0, max: 3_600_000, unit: 'ms', doc: 'on SIGTERM/SIGINT, how long in-flight requests may finish' }),
  logLevel: s({ kind: 'string', flag: 'log-level', env: 'TESSERA_LOG_LEVEL', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'silent'], doc: 'pino log level (logs go to stderr)' }),
  traceComponents: s({ kind: 'list', flag: 'trace', env: 'TESSERA_TRACE', default: [], doc: 'components logged at trace level, e.g. scheduler,kv-cache' }),
} as const;

/** `tessera worker`: one model shard served to one controller at a time over tessera.shard.v1 (docs/parallel.md). */
export const WORKER_SETTINGS = {
  listen: s({ kind: 'string', flag: 'listen', env: 'TESSERA_SHARD_LISTEN', default: '127.0.0.1:0', doc: 'address to listen on (port 0 picks a free port, printed on start)' }),
  secretFile: s({ kind: 'string', flag: 'secret-file', env: 'TESSERA_SHARD_SECRET_FILE', default: null, doc: 'file holding the shared secret a controller must present (at least 16 bytes, e.g. `openssl rand -hex 32`)' }),
  tlsCert: s({ kind: 'string', flag: 'tls-cert', env: 'TESSERA_SHARD_TLS_CERT', default: null, doc: 'PEM certificate chain of this worker (with --tls-key: TLS on the shard link)' }),
  tlsKey: s({ kind: 'string', flag: 'tls-key', env: 'TESSERA_SHARD_TLS_KEY', default: null, doc: 'PEM private key of --tls-cert' }),
  tlsClientCa: s({ kind: 'string', flag: 'tls-client-ca', env: 'TESSERA_SHARD_TLS_CLIENT_CA', default: null, doc: 'PEM CA bundle: controllers must present a certificate it signed (mutual TLS)' }),
  leaseMs: s({ kind: 'int', flag: 'lease-ms', env: 'TESSERA_SHARD_LEASE_MS', default: 15_000, min: 0, max: 3_600_000, unit: 'ms', doc: 'how long a controller whose connection dropped keeps this worker (only it may reconnect); then another controller may take it' }),
  insecure: s({ kind: 'bool', flag: 'insecure', env: 'TESSERA_SHARD_INSECURE', default: false, doc: 'serve controllers on a non-loopback address without a secret or client certificates (only on a network you trust)' }),
} as const;

type Schema = Record<string, Setting>;
type ValueOf<S> = S extends Setting<infer K> ? (K extends 'string' ? string | null : K extends 'int' | 'number' ? number | null : K extends 'bool' ? boolean : string[]) : never;
export type ConfigOf<S extends Schema> = { readonly [K in keyof S]: S[K]['default'] extends null ? ValueOf<S[K]> : NonNullable<ValueOf<S[K]>> };
export type ServeConfig = ConfigOf<typeof SERVE_SETTINGS>;
export type WorkerConfig = ConfigOf<typeof WORKER_SETTINGS>;

export const CONFIG_FILE_FLAG = 'config';

/** Parses `tessera serve` settings from flags (already split into name -> raw values), environment and an optional JSON config file. */
export function loadServeConfig(flags: Map<string, string[]>, env: NodeJS.ProcessEnv = {}): ServeConfig {
  return loadSettings(SERVE_SETTINGS, flags, env, 'TESSERA_CONFIG', 'serve');
}

/** Parses `tessera worker` settings, the same way (config file: --config or TESSERA_SHARD_CONFIG). */
export function loadWorkerConfig(flags: Map<string, string[]>, env: NodeJS.ProcessEnv = {}): WorkerConfig {
  return loadSettings(WORKER_SETTINGS, flags, env, 'TESSERA_SHARD_CONFIG', 'worker');
}

/** The flags of a schema that take no value (`--insecure` alone means true). */
export function booleanFlags(schema: Schema): Set<string> {
  return new Set(Object.values(schema).filter((st) => st.kind === 'bool').map((st) => st.flag));
}

function loadSettings<S extends Schema>(schema: S, flags: Map<string, string[]>, env: NodeJS.ProcessEnv, configEnv: string, command: string): ConfigOf<S> {
  const configFile = flags.get(CONFIG_FILE_FLAG)?.at(-1) ?? env[configEnv];
  let fileValues: Record<string, unknown> = {};
  if (configFile) {
    try {
      fileValues = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new TesseraError('CONFIG_INVALID', `config file ${configFile}: ${(err as Error).message}`);
    }
    if (typeof fileValues !== 'object' || fileValues === null || Array.isArray(fileValues)) {
      throw new TesseraError('CONFIG_INVALID', `config file ${configFile}: must be a JSON object of settings`);
    }
    for (const key of Object.keys(fileValues)) {
      if (!(key in schema)) {
        const hint = didYouMean(key, Object.keys(schema), (x) => `"${x}"`);
        throw new TesseraError('CONFIG_INVALID', `config file ${configFile}: unknown key "${key}"${hint || ` (known: ${Object.keys(schema).join(', ')})`}`);
      }
    }
  }
  for (const flag of flags.keys()) {
    if (flag !== CONFIG_FILE_FLAG && !Object.values(schema).some((setting) => setting.flag === flag)) {
      const known = [CONFIG_FILE_FLAG, ...Object.values(schema).map((setting) => setting.flag as string)];
      throw new TesseraError('CONFIG_INVALID', `unknown flag --${flag}${didYouMean(flag, known, (f) => `--${f}`)}; tessera ${command} --help lists them`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(schema) as Array<[string, Setting]>) {
    const fromFlag = flags.get(setting.flag);
    const fromEnv = env[setting.env];
    if (fromFlag !== undefined) out[key] = parseRaw(setting, setting.kind === 'list' ? fromFlag.join(',') : fromFlag.at(-1)!, `--${setting.flag}`);
    else if (fromEnv !== undefined && fromEnv !== '') out[key] = parseRaw(setting, fromEnv, setting.env);
    else if (key in fileValues) out[key] = parseFileValue(setting, fileValues[key], `config key "${key}"`);
    else out[key] = setting.default;
  }
  return Object.freeze(out) as ConfigOf<S>;
}

function parseRaw(setting: Setting, raw: string, where: string): unknown {
  switch (setting.kind) {
    case 'string':
      return check(setting, raw, where);
    case 'bool':
      if (raw === '' || raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw new TesseraError('CONFIG_INVALID', `${where} must be true or false. Given: ${raw}`);
    case 'list':
      return raw.split(',').map((x) => x.trim()).filter((x) => x !== '');
    case 'int':
    case 'number':
      return check(setting, Number(raw), where, raw);
  }
}

function parseFileValue(setting: Setting, value: unknown, where: string): unknown {
  if (value === null) return null;
  switch (setting.kind) {
    case 'string':
      if (typeof value !== 'string') throw new TesseraError('CONFIG_INVALID', `${where} must be a string. Given: ${JSON.stringify(value)}`);
      return check(setting, value, where);
    case 'bool':
      if (typeof value !== 'boolean') throw new TesseraError('CONFIG_INVALID', `${where} must be true or false. Given: ${JSON.stringify(value)}`);
      return value;
    case 'list':
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new TesseraError('CONFIG_INVALID', `${where} must be an array of strings. Given: ${JSON.stringify(value)}`);
      return value;
    case 'int':
    case 'number':
      if (typeof value !== 'number') throw new TesseraError('CONFIG_INVALID', `${where} must be a number. Given: ${JSON.stringify(value)}`);
      return check(setting, value, where, value);
  }
}

function check(setting: Setting, value: string | number, where: string, given: unknown = value): string | number {
  if (typeof value === 'string') {
    if (setting.choices && !setting.choices.includes(value)) throw new TesseraError('CONFIG_INVALID', `${where} must be one of ${setting.choices.join(', ')}. Given: ${value}`);
    return value;
  }
  const ok = Number.isFinite(value) && (setting.kind !== 'int' || Number.isInteger(value)) && (setting.min === undefined || value >= setting.min) && (setting.max === undefined || value <= setting.max);
  if (!ok) {
    throw new TesseraError('CONFIG_INVALID', `${where} must be ${setting.kind === 'int' ? 'an integer' : 'a number'} >= ${setting.min} and <= ${setting.max}. Given: ${given}`);
  }
  return value;
}

/** `tessera serve --help` text, generated from the schema. */
export function serveHelp(): string {
  return settingsHelp(
    SERVE_SETTINGS,
    [
      'usage: tessera serve [--model DIR] [--host H] [--port P] [--http-port P] [--config FILE] [options]',
      '',
      'Serves the model over gRPC (tessera.v1, grpc.health.v1, reflection) and, with --http-port, the OpenAI-compatible HTTP API. Flag > environment > config file > default.',
    ],
    'TESSERA_CONFIG',
  );
}

/** `tessera worker --help` text, generated from the schema. */
export function workerHelp(): string {
  return settingsHelp(WORKER_SETTINGS, ['usage: tessera worker [--listen HOST:PORT] [--secret-file FILE] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [options]', '', 'Serves one model shard to one controller at a time over tessera.shard.v1 (the controller sends the model directory and the shard position). Flag > environment > config file > default.'], 'TESSERA_SHARD_CONFIG');
}

function settingsHelp(schema: Schema, head: string[], configEnv: string): string {
  const rows: Array<[string, string]> = [
    [`--${CONFIG_FILE_FLAG} FILE`, `JSON config file with the keys below (env ${configEnv})`],
    ...Object.values(schema).map((setting): [string, string] => [
      `--${setting.flag}${setting.kind === 'bool' ? '' : ' VALUE'}`,
      `${setting.doc}${setting.default !== null && !(Array.isArray(setting.default) && setting.default.length === 0) ? ` (default: ${setting.default})` : ''}`,
    ]),
  ];
  // The flag column is as wide as the longest flag plus two spaces, so a long flag never runs into its text.
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  return [...head, '', 'options:', ...rows.map(([flag, doc]) => `  ${flag.padEnd(width)}${doc}`)].join('\n');
}

function settingsTable(schema: Schema): string[] {
  const rows = Object.entries(schema).map(([key, st]) => {
    const def = st.default === null ? '—' : Array.isArray(st.default) ? (st.default.length ? st.default.join(',') : '—') : String(st.default);
    const range = st.choices ? st.choices.join(' \\| ') : st.min !== undefined ? `${st.min} … ${st.max}` : '';
    return `| \`${key}\` | \`--${st.flag}\` | \`${st.env}\` | ${def} | ${st.unit ?? ''} | ${range} | ${st.doc} |`;
  });
  return ['| key (config file) | flag | environment | default | unit | range | meaning |', '| --- | --- | --- | --- | --- | --- | --- |', ...rows];
}

/** docs/config.md body, generated from the schemas (src/cli/config.test.ts keeps the committed file fresh). */
export function configMarkdown(): string {
  return [
    '# `tessera serve` configuration',
    '',
    'Generated from `src/cli/config.ts` by `node bin/run-ts.mjs scripts/gen-config-doc.ts`; a test fails when this file is stale.',
    'Precedence: flag > environment variable > JSON config file (`--config FILE` or `TESSERA_CONFIG`) > default.',
    '',
    ...settingsTable(SERVE_SETTINGS),
    '',
    '## `tessera worker`',
    '',
    'A remote model shard (docs/parallel.md). Same precedence; its config file is `--config FILE` or `TESSERA_SHARD_CONFIG`.',
    '',
    ...settingsTable(WORKER_SETTINGS),
    '',
  ].join('\n');
}
