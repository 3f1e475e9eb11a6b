/**
 * Cross-language: a Python client (Debian's python3-grpcio and python3-grpc-tools, stubs generated from our protos
 * at test time) calls health, reflection and GenerateStream against the running server, and gets the same greedy
 * tokens as a Node client. A missing Python or grpc_tools makes this test FAIL with the reason (it never skips):
 * scripts/test.sh installs them.
 */
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { describe, expect, it, onTestFinished } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import { PROTO_ROOT_DIR } from '../../src/server/proto-loader.ts';
import { bearer, connect, GenerationClient, startTestServer, unary } from '../helpers/test-server.ts';
import { tempDir } from '../helpers/tiny-model.ts';

/** Debian's interpreter, where apt installs python3-grpcio; `python3` on PATH may be another one without it. */
const PYTHON = process.env.TESSERA_TEST_PYTHON ?? '/usr/bin/python3';
const SCRIPT = join(process.cwd(), 'test/integration/python/tessera_client_check.py');

function runPython(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Asynchronous on purpose: the server answers from this same event loop.
    execFile(PYTHON, [SCRIPT, ...args], { timeout: 90_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr: err && typeof err.code !== 'number' ? `${stderr}\n${err.message}` : stderr });
    });
  });
}

describe('Python client built from the protos', () => {
  it('calls health, reflection and GenerateStream and gets the same greedy tokens as the Node client', async () => {
    expect(existsSync(PYTHON), `${PYTHON} not found: install python3, python3-grpcio and python3-grpc-tools (scripts/test.sh does with apt-get)`).toBe(true);
    const key = generateApiKey();
    const keyFile = join(tempDir('py-keys'), 'keys.json');
    writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(key), tenant: 'py' }] }));
    const server = await startTestServer({ 'api-keys': keyFile });
    onTestFinished(() => server.shutdown());

    const maxNewTokens = 10;
    const result = await runPython([
      '--target', `127.0.0.1:${server.port}`,
      '--proto-dir', PROTO_ROOT_DIR,
      '--health-proto-dir', dirname(dirname(dirname(healthProtoPath))), // .../proto/health/v1/health.proto -> .../proto
      '--reflection-proto-dir', join(process.cwd(), 'node_modules/@grpc/reflection/build/proto'),
      '--api-key', key,
      '--text', 'hello from python',
      '--max-new-tokens', String(maxNewTokens),
    ]);
    expect(result.code, `the Python client failed (exit ${result.code}):\n${result.stderr}`).toBe(0);
    const report = JSON.parse(result.stdout);

    expect(report.health).toEqual({ '<server>': 'SERVING', 'tessera.v1.Generation': 'SERVING' });
    expect(report.services).toEqual(expect.arrayContaining(['tessera.v1.Generation', 'tessera.v1.Adapters', 'grpc.health.v1.Health']));
    expect(report.generation_methods).toEqual(['Generate', 'GenerateStream', 'Tokenize', 'GetModelInfo']);
    expect(report.stream.request_ids).toEqual(['python-1']);
    expect(report.stream.finish_reason).toBe('FINISH_REASON_LENGTH');
    expect(report.stream.token_ids).toHaveLength(maxNewTokens);
    expect(report.stream.usage.generated_tokens).toBe(maxNewTokens);
    expect(report.error).toMatchObject({ code: 'INVALID_ARGUMENT', error_code: 'INVALID_ARGUMENT', details: expect.stringContaining('`sampling.top_p`') });

    const clients: grpc.Client[] = [];
    onTestFinished(() => clients.forEach((c) => c.close()));
    const node = await unary(connect(GenerationClient, server.port, { closeWith: clients }), 'Generate', {
      text: 'hello from python',
      sampling: { temperature: 0 },
      stopping: { max_new_tokens: maxNewTokens, ignore_eos: true },
    }, bearer(key));
    expect(report.stream.token_ids).toEqual(node.token_ids);
    expect(report.stream.text).toBe(node.text);
    expect(report.stream.usage.prompt_tokens).toBe(node.usage.prompt_tokens);
  });
});
