/**
 * Multi-tenant demo on the trained fixture (docs/adapters.md): the German, French and Spanish adapters served at once.
 *
 *   npx tsx tools/trained-fixtures/multi-tenant-demo.ts [--quant int4|int8|fp32] [--streams 16]
 *
 * 1. Held-out loss per tenant through the serving executor and adapter manager (openScoringSession), `streams`
 *    windows in flight per step with the tenants interleaved, and every window again alone: equal losses.
 * 2. The gRPC server (startServer, as `tessera serve`) with the adapters registered from the fixture's adapters/
 *    directory: `streams` greedy GenerateStream calls at once (held-out prompts, each tenant's adapter), and each call
 *    again alone: the same tokens, logprobs within 1e-4.
 * Prints markdown tables.
 */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { findTrainedFixture } from '../../bench/lib/trained-fixture.ts';
import { measureTenants } from '../../bench/lib/trained-tenants.ts';
import { machineInfo, describeMachine } from '../../bench/lib/machine-info.ts';
import { loadServeConfig } from '../../src/cli/config.ts';
import { resolveModelDir } from '../../src/cli/model-resolver.ts';
import { openScoringSession } from '../../src/cli/scoring-session.ts';
import { startServer } from '../../src/cli/serve.ts';
import { loadPublicApi } from '../../src/server/proto-loader.ts';

const ADAPTERS = ['de-r16', 'fr-r8', 'es-r16'];
const PROMPT_TOKENS = 64;
const NEW_TOKENS = 32;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

interface Generated {
  tokenIds: number[];
  logprobs: number[];
}

/* eslint-disable @typescript-eslint/no-explicit-any -- grpc-js clients from loadPackageDefinition are untyped */
function generate(client: any, adapterId: string, prompt: number[], requestId: string): Promise<Generated> {
  return new Promise((resolve, reject) => {
    const out: Generated = { tokenIds: [], logprobs: [] };
    const body = {
      request_id: requestId,
      adapter_id: adapterId,
      token_ids: { ids: prompt },
      sampling: { temperature: 0 },
      stopping: { max_new_tokens: NEW_TOKENS, ignore_eos: true },
      top_n_logprobs: 0,
    };
    const s = client.GenerateStream(body, new grpc.Metadata(), { deadline: Date.now() + 600_000 });
    s.on('data', (m: any) => {
      out.tokenIds.push(...m.token_ids);
      for (const lp of m.logprobs ?? []) out.logprobs.push(lp.logprob);
    });
    s.on('error', reject);
    s.on('status', (st: grpc.StatusObject) => (st.code === grpc.status.OK ? resolve(out) : reject(new Error(st.details))));
  });
}

async function main(): Promise<void> {
  const fixture = findTrainedFixture();
  if (!fixture) throw new Error('no trained fixture: run `npm run fixtures:trained` first');
  const quant = arg('quant', 'int4') as 'int4' | 'int8' | 'fp32';
  const streams = Number(arg('streams', '16'));
  const modelDir = await resolveModelDir({ model: fixture.baseDir, quant, log: (m) => process.stderr.write(`${m}\n`) });
  console.log(`Trained fixture ${fixture.manifest.key} (${fixture.manifest.config._name_or_path as string}), ${quant}; ${describeMachine(machineInfo())}\n`);

  // 1. held-out loss through the serving executor and adapter manager
  const session = await openScoringSession({ modelDir, numAdapterSlots: ADAPTERS.length + 1, maxAdapterRank: 16, adapterRoots: [path.join(fixture.dir, 'adapters')] });
  let r;
  try {
    r = await measureTenants(session, fixture, ADAPTERS, { streams, windowsPerTenant: fixture.manifest.heldout.windowsPerDomain });
  } finally {
    await session.shutdown();
  }
  console.log(`| tenant | adapter | windows | base loss | loss, ${streams} streams | loss, alone | max abs nll diff |`);
  console.log('|---|---|---|---|---|---|---|');
  for (const t of r.tenants) console.log(`| ${t.tenant} | ${t.adapter} | ${t.windows} | ${t.baseLoss.toFixed(4)} | ${t.batchedLoss.toFixed(6)} | ${t.aloneLoss.toFixed(6)} | ${t.maxAbsNllDiff.toExponential(2)} |`);
  console.log(`\n${r.predictions} predictions: ${streams} streams ${(r.batchedMs / 1000).toFixed(1)} s (${((r.predictions * 1000) / r.batchedMs).toFixed(0)} tokens/s), one at a time ${(r.aloneMs / 1000).toFixed(1)} s (${((r.predictions * 1000) / r.aloneMs).toFixed(0)} tokens/s)\n`);

  // 2. the gRPC server
  const config = loadServeConfig(
    new Map<string, string[]>([
      ['model', [modelDir]],
      ['host', ['127.0.0.1']],
      ['port', ['0']],
      ['log-level', ['warn']],
      ['kv-cache-bytes', [String(256 << 20)]],
      ['adapter-slots', [String(ADAPTERS.length)]],
      ['max-adapter-rank', ['16']],
      ['adapters-dir', [path.join(fixture.dir, 'adapters')]],
    ]),
    {},
  );
  const server = await startServer(config);
  const api = grpc.loadPackageDefinition(loadPublicApi().packageDefinition) as any;
  const client = new api.tessera.v1.Generation(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  try {
    const calls = Array.from({ length: streams }, (_, i) => {
      const adapter = ADAPTERS[i % ADAPTERS.length];
      const domain = fixture.manifest.adapters.find((a) => a.name === adapter)!.domain;
      return { adapter, prompt: fixture.heldout(domain).windows[Math.floor(i / ADAPTERS.length)].slice(0, PROMPT_TOKENS) };
    });
    await generate(client, calls[0].adapter, calls[0].prompt, 'warm-up');
    let t0 = performance.now();
    const alone: Generated[] = [];
    for (const [i, c] of calls.entries()) alone.push(await generate(client, c.adapter, c.prompt, `alone-${i}`));
    const aloneMs = performance.now() - t0;
    t0 = performance.now();
    const together = await Promise.all(calls.map((c, i) => generate(client, c.adapter, c.prompt, `together-${i}`)));
    const togetherMs = performance.now() - t0;
    console.log(`| tenant | adapter | calls | same tokens | max abs logprob diff | mean logprob of the continuation |`);
    console.log('|---|---|---|---|---|---|');
    for (const adapter of ADAPTERS) {
      const idx = calls.flatMap((c, i) => (c.adapter === adapter ? [i] : []));
      const same = idx.filter((i) => together[i].tokenIds.join() === alone[i].tokenIds.join()).length;
      let diff = 0;
      let sum = 0;
      let n = 0;
      for (const i of idx) {
        together[i].logprobs.forEach((lp, k) => (diff = Math.max(diff, Math.abs(lp - alone[i].logprobs[k]))));
        for (const lp of together[i].logprobs) {
          sum += lp;
          n++;
        }
      }
      const domain = fixture.manifest.adapters.find((a) => a.name === adapter)!.domain;
      console.log(`| ${domain} | ${adapter} | ${idx.length} | ${same}/${idx.length} | ${diff.toExponential(2)} | ${(sum / n).toFixed(4)} |`);
    }
    const tokens = streams * NEW_TOKENS;
    console.log(`\n${streams} GenerateStream calls of ${PROMPT_TOKENS} prompt + ${NEW_TOKENS} greedy tokens: one at a time ${(aloneMs / 1000).toFixed(1)} s (${((tokens * 1000) / aloneMs).toFixed(0)} tokens/s), all at once ${(togetherMs / 1000).toFixed(1)} s (${((tokens * 1000) / togetherMs).toFixed(0)} tokens/s)`);
  } finally {
    client.close();
    await server.shutdown();
  }
}
/* eslint-enable @typescript-eslint/no-explicit-any */

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
