/**
 * One tenant's hostile adapter must not touch anyone else's output (the hostile-probe finding: an adapter with +Inf or
 * 1e30 in every lora_B, used once and unloaded, made every later request of every tenant emit token 0 until restart).
 * Through the whole server (startServer, real worker, int4 and fp32):
 *   - non-finite factors are refused by LoadAdapter with ADAPTER_INVALID (FAILED_PRECONDITION), naming tensor and index;
 *   - a finite but huge adapter (every B = 1e30) loads and runs, its requests sharing steps with other tenants';
 *   - the requests that ran beside it, and after it was unloaded every request, give tokens and logprobs bit-identical
 *     to a fresh server's.
 */
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { openSafetensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import { writeSafetensors } from '../../src/model/checkpoint/safetensors-writer.ts';
import { AdaptersClient, connect, GenerationClient, startTestServer, statusOf, unary, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

interface Reply {
  token_ids: number[];
  logprobs: Array<{ token_id: number; logprob: number; top: Array<{ token_id: number; logprob: number }> }>;
}

const PROMPTS = [[5, 9, 33, 7], [100, 3, 250, 41, 8, 19, 77], [12, 12, 60]];

function request(prompt: number[], adapterId = ''): object {
  return { token_ids: { ids: prompt }, adapter_id: adapterId, sampling: { temperature: 0 }, stopping: { max_new_tokens: 10, ignore_eos: true }, top_n_logprobs: 5 };
}

/** A copy of a PEFT adapter directory with every lora_B value replaced by `value`. */
async function withEveryB(from: string, to: string, value: number): Promise<void> {
  cpSync(from, to, { recursive: true });
  const file = join(to, 'adapter_model.safetensors');
  const src = openSafetensors(file);
  const tensors = src.names().map((name) => {
    const t = src.readFloat32(name);
    return { name, shape: t.shape, dtype: 'F32' as const, data: name.includes('lora_B') ? new Float32Array(t.data.length).fill(value) : t.data };
  });
  src.close();
  await writeSafetensors(file, tensors);
}

for (const quant of ['int4', 'fp32'] as const) {
  describe(`a hostile adapter does not reach other requests (tiny ${quant}, whole server)`, async () => {
    const { hf, convertedDir } = await tinyModel({ quant, numAdapters: 2 });
    const root = tempDir('hostile');
    const shared = join(root, 'shared');
    const uploads = join(root, 'uploads');
    mkdirSync(shared);
    mkdirSync(uploads);
    cpSync(hf.adapterDirs[0], join(shared, 'friendly'), { recursive: true });
    await withEveryB(hf.adapterDirs[1], join(uploads, 'inf'), Number.POSITIVE_INFINITY);
    await withEveryB(hf.adapterDirs[1], join(uploads, 'nan'), Number.NaN);
    await withEveryB(hf.adapterDirs[1], join(uploads, 'huge'), 1e30);
    const flags = { model: convertedDir, 'adapters-dir': [shared], 'adapter-root': [uploads], 'adapter-slots': 3, 'max-adapter-rank': 8 };

    const servers: RunningServer[] = [];
    const clients: grpc.Client[] = [];
    afterAll(async () => {
      for (const c of clients) c.close();
      for (const s of servers) await s.shutdown();
    });
    const start = async () => {
      const server = await startTestServer(flags);
      servers.push(server);
      return { gen: connect(GenerationClient, server.port, { closeWith: clients }) as DynamicClient, admin: connect(AdaptersClient, server.port, { closeWith: clients }) as DynamicClient };
    };
    /** Every prompt on the base model and on the friendly adapter, one request at a time. */
    const answers = async (gen: DynamicClient) => {
      const out: Reply[] = [];
      for (const p of PROMPTS) for (const adapter of ['', 'friendly']) out.push(await unary<Reply>(gen, 'Generate', request(p, adapter)));
      return out.map((r) => ({ token_ids: r.token_ids, logprobs: r.logprobs }));
    };

    test('refused at load when non-finite; when huge, confined to its own requests, before and after it is unloaded', async () => {
      const fresh = await start();
      const reference = await answers(fresh.gen);
      expect(reference[0].token_ids).not.toEqual(reference[1].token_ids); // the friendly adapter changes the answer

      const probed = await start();
      for (const [id, value] of [['inf', 'Infinity'], ['nan', 'NaN']]) {
        const refused = await statusOf(unary(probed.admin, 'LoadAdapter', { adapter_id: id, source: join(uploads, id) }));
        expect(refused).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, errorCode: 'ADAPTER_INVALID' });
        expect(refused.details).toContain('lora_B');
        expect(refused.details).toContain(`(${value}) at index 0`);
      }
      await unary(probed.admin, 'LoadAdapter', { adapter_id: 'huge', source: join(uploads, 'huge') });
      // The huge adapter's requests share steps with everyone else's.
      const [beside, hostile] = await Promise.all([
        Promise.all(PROMPTS.flatMap((p) => ['', 'friendly'].map((adapter) => unary<Reply>(probed.gen, 'Generate', request(p, adapter))))),
        Promise.all(PROMPTS.map((p) => unary<Reply>(probed.gen, 'Generate', request(p, 'huge')))),
      ]);
      expect(hostile).toHaveLength(PROMPTS.length);
      // bit for bit: the CPU serving path computes a row the same whatever shares its steps
      expect(beside.map((r) => ({ token_ids: r.token_ids, logprobs: r.logprobs }))).toEqual(reference);
      await unary(probed.admin, 'UnloadAdapter', { adapter_id: 'huge' });
      expect(await answers(probed.gen)).toEqual(reference);
    });
  });
}
