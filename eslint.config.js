import tseslint from 'typescript-eslint';

/*
 * Layering (../shared/DESIGN.md section 2, STYLE.md section 1): imports point down
 *   cli -> server -> engine ... parallel -> adapters -> model -> kernels, with telemetry, util and the leaf type
 * modules usable from anywhere below the composition root. Each folder lists what it must not import; a file gets
 * exactly one list (ESLint does not merge rule options across config objects, so the lists below never overlap).
 * Tests beside the code follow the same rules, except where TEST_EXEMPT lets them build fixtures with code from
 * another folder; engine tests still never reach ORT, gRPC or the model.
 */
const SRC = (dir) => [`**/${dir}/**`];
const forbid = (what, why, except = []) => ({ group: [...what, ...except.map((p) => `!${p}`)], message: why });
/** `src/<from> must not import src/<to>` for each `to`. */
const mustNot = (from, ...to) => to.map((dir) => forbid(SRC(dir), `src/${from} must not import src/${dir}`));

const ORT = forbid(['onnxruntime-node', 'onnxruntime-common', 'onnxruntime-web'], 'only src/model, src/parallel, src/cli and kernels load ONNX Runtime');
const GRPC = forbid(['@grpc/*'], 'gRPC lives in src/server, src/parallel (shard transport), src/loadgen (client) and src/cli');
const GEN = forbid(SRC('gen'), 'generated proto types are for src/server and src/parallel/wire.ts only');
const CLI = forbid(SRC('cli'), 'src/cli is the composition root: nothing imports it');
const LOADGEN = forbid(SRC('loadgen'), 'src/loadgen is a client of the public API (used by src/cli and bench/)');
/** Nothing below the composition root imports it or the load-generating client. */
const UPWARD = [CLI, LOADGEN];
/** Layers with no transport or model runtime of their own: no generated protos, gRPC or ONNX Runtime. */
const NO_IO_RUNTIMES = [GEN, GRPC, ORT];
const MODEL_NOT_ADAPTERS = forbid(SRC('adapters'), 'src/model must not import src/adapters (adapters sit above the model)');

/** Per source folder: the imports it must not make (production code). */
const LAYERS = {
  server: [
    forbid(SRC('model'), 'src/server must not import src/model: it talks to the engine and the adapter registry'),
    ...mustNot('server', 'parallel'),
    forbid(SRC('adapters'), 'src/server may import only the adapter registry face of src/adapters (adapter-id, adapter-status)', ['**/adapters/adapter-id.ts', '**/adapters/adapter-status.ts']),
    ...UPWARD,
    ORT,
  ],
  engine: [
    forbid(SRC('model'), 'src/engine must not import src/model (runners implement engine/executor.ts)'),
    ...mustNot('engine', 'parallel', 'server'),
    forbid(SRC('adapters'), 'src/engine must not import src/adapters (engine/adapter-slots.ts is the seam)'),
    ...UPWARD,
    ...NO_IO_RUNTIMES,
  ],
  parallel: [
    ...mustNot('parallel', 'server'),
    forbid(SRC('engine'), 'src/parallel may import only the contract types of src/engine (engine/executor.ts)', ['**/engine/executor.ts']),
    ...UPWARD,
    GEN,
  ],
  adapters: [
    ...mustNot('adapters', 'server', 'engine', 'parallel'),
    forbid(['**/model/runner/**', '**/model/graph/**'], 'src/adapters must not depend on the runner or the graph (model shapes and LoraWeights come from model-config.ts)'),
    ...UPWARD,
    ...NO_IO_RUNTIMES,
  ],
  model: [
    ...mustNot('model', 'server', 'parallel'),
    forbid(SRC('engine'), 'src/model may import only the contract types of src/engine (engine/executor.ts)', ['**/engine/executor.ts']),
    MODEL_NOT_ADAPTERS,
    ...UPWARD,
    GEN,
    GRPC,
  ],
  loadgen: [
    forbid(['**/server/**'], 'src/loadgen may import only the proto loader of src/server', ['**/server/proto-loader.ts']),
    forbid([...SRC('engine'), ...SRC('model'), ...SRC('parallel'), ...SRC('adapters')], 'src/loadgen is a client: it knows the public API only'),
    CLI,
    GEN,
    ORT,
  ],
  telemetry: [forbid(['../*'], 'src/telemetry imports nothing from the rest of src/')],
  util: [forbid(['../*'], 'src/util holds leaf utilities: it imports nothing from the rest of src/')],
};

/** Rules that tests of a folder are exempt from: they may build fixtures with code production code there may not use. */
const TEST_EXEMPT = { model: [MODEL_NOT_ADAPTERS] };

/** Leaf modules: import nothing from the project (so anything may import them without a cycle). */
const LEAVES = ['src/errors.ts', 'src/util/seeded-random.ts', 'kernels/model-types.ts', 'src/adapters/adapter-status.ts'];

const restrict = (files, patterns, ignores = []) => ({ files, ignores, rules: { 'no-restricted-imports': ['error', { patterns }] } });

const layerConfigs = Object.entries(LAYERS).flatMap(([dir, patterns]) => [
  restrict([`src/${dir}/**/*.ts`], patterns, ['**/*.test.ts', ...LEAVES]),
  restrict([`src/${dir}/**/*.test.ts`], patterns.filter((p) => !(TEST_EXEMPT[dir] ?? []).includes(p)), LEAVES),
]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'src/gen/**', 'bench/results/**', 'dist/**', '.cache/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  ...layerConfigs,
  // src/gen is imported by src/server and src/parallel/wire.ts only (STYLE.md section 1)
  restrict(['src/parallel/wire.ts'], LAYERS.parallel.filter((p) => p !== GEN)),
  // kernels are the bottom layer: shapes come from kernels/model-types.ts; only the error type comes from src/
  restrict(['kernels/**/*.ts'], [forbid(['**/src/**'], 'kernels/ must not import src/ (shapes and types: kernels/model-types.ts)', ['**/src/errors.ts'])], ['**/*.test.ts', ...LEAVES]),
  restrict(LEAVES, [forbid(['./*', '../*'], 'a leaf module imports nothing from the project')]),
);
