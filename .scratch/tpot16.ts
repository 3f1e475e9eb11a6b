import { BenchModels, defaultBenchCacheDir } from '../bench/lib/bench-models.ts';
import { INT4 } from '../bench/lib/quant-variants.ts';
import { drive } from '../bench/cases/engine.ts';
import { ThreadExecutor } from '../src/parallel/thread-executor.ts';
import { startTesseraServer } from '../bench/lib/tessera-server.ts';
import { runClosedLoop, requestLatencies } from '../bench/lib/closed-loop.ts';
import { benchPrompts } from '../bench/lib/model-runs.ts';

const models = new BenchModels({ cacheDir: defaultBenchCacheDir(), log: console.log });
const model = await models.converted('small', INT4);
const executor = await ThreadExecutor.start({ modelDir: model.dir, kvCacheBytes: 1 << 30, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 8, intraOpThreads: 2 });
await drive(executor, { promptTokens: 32, outputTokens: 8 }, 16, 16);
for (let r = 0; r < 2; r++) {
  const st = await drive(executor, { promptTokens: 32, outputTokens: 64 }, 16, 16);
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  console.log('in-process engine: tok/s', (st.generatedTokens / st.wallMs * 1000).toFixed(0), 'TPOT p50', sorted(st.tpotMs)[8].toFixed(1), 'TTFT p50', sorted(st.ttftMs)[8].toFixed(0), 'step ms', st.stepMs.toFixed(1), 'overhead/step', st.overheadMsPerStep.toFixed(2), 'steps', st.steps);
}
await executor.shutdown();
const server = await startTesseraServer(model.dir, { threads: 2 });
const vocab = model.manifest.config.vocabSize;
await runClosedLoop(benchPrompts({ numPrompts: 16, lengthTokens: 32, vocabSize: 49152, seed: 99 }), 16, server.generate(8));
for (let r = 0; r < 2; r++) {
  const res = await runClosedLoop(benchPrompts({ numPrompts: 16, lengthTokens: 32, vocabSize: 49152, seed: 1 + r }), 16, server.generate(64));
  const l = requestLatencies(res.requests);
  console.log('gRPC serve: tok/s', res.tokensPerS.toFixed(0), 'TPOT p50', l.tpotMs!.p50.toFixed(1), 'TTFT p50', l.ttftMs!.p50.toFixed(0), vocab);
}
await server.close();
models.cleanup();
