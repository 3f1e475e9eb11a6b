import { readFileSync } from 'node:fs';
import { TesseraError } from '../errors.ts';
import { didYouMean } from './did-you-mean.ts';

/**
 * The one schema of `tessera serve` settings: each has a key (config file), a flag, an environment variable, a default,
 * a unit and a description. Precedence: flag > environment > config file > default. Parsed once, frozen, passed down
 * as typed slices; `--help` and docs/config.md are generated from it.
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

const s = <K extends Kind>(x: Setting<K>): Setting<K> => x;

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
  intraOpThreads: s({ kind: 'int', flag: 'threads', env: 'TESSERA_THREADS', default: null, min: 1, max: 1024, doc: 'ORT intra-op threads per worker (unset = all cores)' }),
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

type Settings = typeof SERVE_SETTINGS;
type ValueOf<S> = S extends Setting<infer K> ? (K extends 'string' ? string | null : K extends 'int' | 'number' ? number | null : K extends 'bool' ? boolean : string[]) : never;
export type ServeConfig = { readonly [K in keyof Settings]: Settings[K]['default'] extends null ? ValueOf<Settings[K]> : NonNullable<ValueOf<Settings[K]>> };

export const CONFIG_FILE_FLAG = 'config';

/** Parses settings from flags (already split into name -> raw values), environment and an optional JSON config file. */
export function loadServeConfig(flags: Map<string, string[]>, env: NodeJS.ProcessEnv = {}): ServeConfig {
  const configFile = flags.get(CONFIG_FILE_FLAG)?.at(-1) ?? env.TESSERA_CONFIG;
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
      if (!(key in SERVE_SETTINGS)) {
        const hint = didYouMean(key, Object.keys(SERVE_SETTINGS), (k) => `"${k}"`);
        throw new TesseraError('CONFIG_INVALID', `config file ${configFile}: unknown key "${key}"${hint || ` (known: ${Object.keys(SERVE_SETTINGS).join(', ')})`}`);
      }
    }
  }
  for (const flag of flags.keys()) {
    if (flag !== CONFIG_FILE_FLAG && !Object.values(SERVE_SETTINGS).some((setting) => setting.flag === flag)) {
      const known = [CONFIG_FILE_FLAG, ...Object.values(SERVE_SETTINGS).map((setting) => setting.flag as string)];
      throw new TesseraError('CONFIG_INVALID', `unknown flag --${flag}${didYouMean(flag, known, (f) => `--${f}`)}; tessera serve --help lists them`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SERVE_SETTINGS) as Array<[string, Setting]>) {
    const fromFlag = flags.get(setting.flag);
    const fromEnv = env[setting.env];
    if (fromFlag !== undefined) out[key] = parseRaw(setting, setting.kind === 'list' ? fromFlag.join(',') : fromFlag.at(-1)!, `--${setting.flag}`);
    else if (fromEnv !== undefined && fromEnv !== '') out[key] = parseRaw(setting, fromEnv, setting.env);
    else if (key in fileValues) out[key] = parseFileValue(setting, fileValues[key], `config key "${key}"`);
    else out[key] = setting.default;
  }
  return Object.freeze(out) as ServeConfig;
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
  const settings = Object.values(SERVE_SETTINGS) as Setting[];
  const rows: Array<[string, string]> = [
    [`--${CONFIG_FILE_FLAG} FILE`, 'JSON config file with the keys below (env TESSERA_CONFIG)'],
    ...settings.map((setting): [string, string] => [
      `--${setting.flag}${setting.kind === 'bool' ? '' : ' VALUE'}`,
      `${setting.doc}${setting.default !== null && !(Array.isArray(setting.default) && setting.default.length === 0) ? ` (default: ${setting.default})` : ''}`,
    ]),
  ];
  // The flag column is as wide as the longest flag plus two spaces, so a long flag never runs into its text.
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  return [
    'usage: tessera serve [--model DIR] [--host H] [--port P] [--http-port P] [--config FILE] [options]',
    '',
    'Serves the model over gRPC (tessera.v1, grpc.health.v1, reflection) and, with --http-port, the OpenAI-compatible HTTP API. Flag > environment > config file > default.',
    '',
    'options:',
    ...rows.map(([flag, doc]) => `  ${flag.padEnd(width)}${doc}`),
  ].join('\n');
}

/** docs/config.md body, generated from the schema (a test keeps the committed file fresh). */
export function configMarkdown(): string {
  const rows = (Object.entries(SERVE_SETTINGS) as Array<[string, Setting]>).map(([key, st]) => {
    const def = st.default === null ? '—' : Array.isArray(st.default) ? (st.default.length ? st.default.join(',') : '—') : String(st.default);
    const range = st.choices ? st.choices.join(' \\| ') : st.min !== undefined ? `${st.min} … ${st.max}` : '';
    return `| \`${key}\` | \`--${st.flag}\` | \`${st.env}\` | ${def} | ${st.unit ?? ''} | ${range} | ${st.doc} |`;
  });
  return [
    '# `tessera serve` configuration',
    '',
    'Generated from `src/cli/config.ts` by `node bin/run-ts.mjs scripts/gen-config-doc.ts`; a test fails when this file is stale.',
    'Precedence: flag > environment variable > JSON config file (`--config FILE` or `TESSERA_CONFIG`) > default.',
    '',
    '| key (config file) | flag | environment | default | unit | range | meaning |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
