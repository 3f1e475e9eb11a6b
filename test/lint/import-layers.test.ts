/**
 * The layering rules in eslint.config.js (DESIGN.md section 2, STYLE.md section 1), checked through ESLint itself: each
 * case lints a one-line import as if it were written in the given file.
 */
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
let eslint: ESLint;

beforeAll(() => {
  eslint = new ESLint({ cwd: root });
});

async function restriction(file: string, specifier: string): Promise<string | null> {
  const [result] = await eslint.lintText(`import '${specifier}';\n`, { filePath: `${root}/${file}` });
  const hit = result.messages.find((m) => m.ruleId === 'no-restricted-imports');
  return hit ? hit.message : null;
}

const REFUSED: Array<[file: string, specifier: string, because: RegExp]> = [
  ['src/engine/probe.ts', '../model/model-config.ts', /src\/engine must not import src\/model/],
  ['src/engine/scheduler/probe.ts', '../../parallel/controller.ts', /src\/engine must not import src\/parallel/],
  ['src/engine/probe.ts', '../adapters/adapter-manager.ts', /src\/engine must not import src\/adapters/],
  ['src/engine/probe.ts', '../server/validate.ts', /src\/engine must not import src\/server/],
  ['src/engine/probe.ts', 'onnxruntime-node', /ONNX Runtime/],
  ['src/engine/probe.ts', '@grpc/grpc-js', /gRPC/],
  ['src/engine/probe.ts', '../gen/tessera/v1/GenerateRequest.ts', /generated proto types/],
  ['src/engine/probe.test.ts', 'onnxruntime-node', /ONNX Runtime/],
  ['src/engine/probe.test.ts', '../model/runner/model-runner.ts', /src\/engine must not import src\/model/],
  ['src/server/probe.ts', '../model/runner/model-runner.ts', /src\/server must not import src\/model/],
  ['src/server/probe.ts', '../parallel/controller.ts', /src\/server must not import src\/parallel/],
  ['src/server/probe.ts', '../adapters/adapter-manager.ts', /registry face/],
  ['src/server/probe.ts', '../cli/serve.ts', /composition root/],
  ['src/server/probe.ts', 'onnxruntime-node', /ONNX Runtime/],
  ['src/adapters/probe.ts', '../model/runner/adapter-slot-stacks.ts', /must not depend on the runner/],
  ['src/adapters/compeft/probe.ts', '../../server/validate.ts', /src\/adapters must not import src\/server/],
  ['src/adapters/probe.ts', '../engine/request.ts', /src\/adapters must not import src\/engine/],
  ['src/adapters/probe.ts', '../parallel/shard-runner.ts', /src\/adapters must not import src\/parallel/],
  ['src/model/probe.ts', '../engine/engine.ts', /contract types of src\/engine/],
  ['src/model/runner/probe.ts', '../../engine/scheduler/scheduler.ts', /contract types of src\/engine/],
  ['src/model/probe.ts', '../adapters/adapter-manager.ts', /adapters sit above the model/],
  ['src/model/probe.ts', '../parallel/controller.ts', /src\/model must not import src\/parallel/],
  ['src/model/probe.ts', '@grpc/grpc-js', /gRPC/],
  ['src/parallel/probe.ts', '../server/status.ts', /src\/parallel must not import src\/server/],
  ['src/parallel/probe.ts', '../engine/engine.ts', /contract types of src\/engine/],
  ['src/parallel/probe.ts', '../gen/tessera/v1/GenerateRequest.ts', /generated proto types/],
  ['src/loadgen/probe.ts', '../engine/engine.ts', /client/],
  ['src/loadgen/probe.ts', '../server/validate.ts', /proto loader/],
  ['src/telemetry/probe.ts', '../errors.ts', /imports nothing/],
  ['src/util/probe.ts', '../engine/request.ts', /leaf utilities/],
  ['kernels/probe.ts', '../src/model/model-config.ts', /kernels\/ must not import src\//],
  ['kernels/reference/probe.ts', '../../src/model/checkpoint/tensor.ts', /kernels\/ must not import src\//],
  ['src/errors.ts', './engine/request.ts', /leaf module/],
  ['kernels/model-types.ts', './onnx-graph.ts', /leaf module/],
  ['src/util/seeded-random.ts', '../errors.ts', /leaf module/],
];

const ALLOWED: Array<[file: string, specifier: string]> = [
  ['src/server/probe.ts', '../adapters/adapter-id.ts'],
  ['src/server/probe.ts', '../adapters/adapter-status.ts'],
  ['src/server/probe.ts', '../engine/request.ts'],
  ['src/server/probe.ts', '../gen/tessera/v1/GenerateRequest.ts'],
  ['src/parallel/wire.ts', '../gen/tessera/shard/v1/RunRequest.ts'],
  ['src/parallel/probe.ts', '../engine/executor.ts'],
  ['src/parallel/probe.ts', '../model/runner/model-runner.ts'],
  ['src/parallel/probe.ts', '../adapters/slot-decode-compeft.ts'],
  ['src/parallel/probe.ts', 'onnxruntime-node'],
  ['src/model/runner/probe.ts', '../../engine/executor.ts'],
  ['src/model/runner/probe.test.ts', '../../adapters/compeft/compeft-synthetic.ts'],
  ['src/model/probe.ts', 'onnxruntime-node'],
  ['src/model/probe.ts', '../../kernels/attention.ts'],
  ['src/adapters/probe.ts', '../model/model-config.ts'],
  ['src/adapters/probe.ts', '../model/checkpoint/safetensors-reader.ts'],
  ['src/engine/sampler/probe.ts', '../../util/seeded-random.ts'],
  ['src/engine/probe.ts', '../errors.ts'],
  ['src/loadgen/probe.ts', '../server/proto-loader.ts'],
  ['kernels/reference/probe.ts', '../../src/errors.ts'],
  ['kernels/reference/probe.ts', '../model-types.ts'],
  ['kernels/probe.test.ts', '../src/model/graph/onnx-serialize.ts'],
  ['src/cli/probe.ts', '../parallel/controller.ts'],
  ['src/cli/probe.ts', 'onnxruntime-node'],
];

describe('import layering (eslint no-restricted-imports)', () => {
  it.each(REFUSED)('%s may not import %s', async (file, specifier, because) => {
    expect(await restriction(file, specifier)).toMatch(because);
  });

  it.each(ALLOWED)('%s may import %s', async (file, specifier) => {
    expect(await restriction(file, specifier)).toBeNull();
  });
});
