/**
 * Tessera as a user runs it, for benchmarks that compare it with another server: a `tessera serve` process on
 * 127.0.0.1 (any free port) over a converted model, driven over gRPC by the load generator's client, greedy streams
 * of exactly `outputTokens` tokens (ignore_eos).
 */
import { createGenerationClient, type GenerationClient } from '../../src/loadgen/generation-client.ts';
import { spawnServe, type ServeProcess } from '../../test/helpers/serve-process.ts';
import type { Generate } from './closed-loop.ts';

export interface TesseraServer {
  generate(outputTokens: number): Generate;
  /** The server's stderr so far (its JSON logs), for error messages. */
  stderr(): string;
  close(): Promise<void>;
}

/** `args`: more `tessera serve` flags. */
export async function startTesseraServer(modelDir: string, opts: { threads: number; args?: string[] }): Promise<TesseraServer> {
  const server: ServeProcess = await spawnServe(['--model', modelDir, '--host', '127.0.0.1', '--port', '0', '--threads', String(opts.threads), '--log-level', 'warn', ...(opts.args ?? [])], { timeoutMs: 300_000 });
  const killOnExit = () => server.kill(); // an interrupted bench (SIGINT -> process.exit) leaves no server behind
  process.once('exit', killOnExit);
  const client: GenerationClient = createGenerationClient({ target: `${server.host}:${server.port}` });
  let requestId = 0;
  return {
    generate: (outputTokens) => async (prompt) => {
      const call = client.start({ requestId: `peer-${requestId++}`, adapterId: '', promptTokenIds: prompt, maxNewTokens: outputTokens, temperature: 0, seed: 1 }, { stream: true, timeoutMs: 600_000 });
      const r = await call.done;
      if (r.status !== 'OK' || r.firstTokenMs === null || r.outputTokens !== outputTokens) {
        throw new Error(`tessera request ${r.requestId}: ${r.status} ${r.details} (${r.outputTokens} of ${outputTokens} tokens); server stderr:\n${server.stderr().slice(-2000)}`);
      }
      return { startMs: r.startMs, firstTokenMs: r.firstTokenMs, endMs: r.endMs, outputTokens: r.outputTokens };
    },
    stderr: () => server.stderr(),
    async close() {
      client.close();
      server.child.kill('SIGTERM');
      const timer = setTimeout(() => server.kill(), 30_000);
      await server.exited;
      clearTimeout(timer);
      process.off('exit', killOnExit);
    },
  };
}
