/**
 * Child process of cuda-device.test.ts: switches this process to the CUDA build of ONNX Runtime the way `--device cuda`
 * does (without its CUDA library check, so it runs on a machine without a GPU), then drives the CPU provider through
 * a real shard worker thread and prints which ONNX Runtime cores are mapped and the greedy tokens.
 *   node bin/run-ts.mjs test/integration/cuda-binding-main.ts MODEL_DIR [cuda|cpu]
 */
import { readFileSync } from 'node:fs';
import { locateCudaBinding } from '../../src/cli/cuda-provider.ts';
import { ShardController } from '../../src/parallel/controller.ts';
import { useOrtBinding } from '../../src/util/ort-binding.ts';
import { driveGreedy } from '../parallel/shard-driver.ts';

const [modelDir, binding] = process.argv.slice(2);
if (binding === 'cuda') useOrtBinding(locateCudaBinding().entryUrl);
const controller = await ShardController.start({ modelDir, device: 'cpu', kvCacheBytes: 2 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 16, intraOpThreads: 1 });
const run = await driveGreedy(controller, [[3, 17, 42, 5, 99, 7], [5, 6, 7]], [0, 0], 4, 8);
await controller.shutdown();
const cores = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.split(/\s+/).at(-1)!).filter((p) => p.endsWith('libonnxruntime.so.1')))];
process.stdout.write(`${JSON.stringify({ cores, tokens: [...run.tokens.entries()], logits: run.logits.map((m) => [...m.entries()].map(([k, v]) => [k, Array.from(v)])) })}\n`);
