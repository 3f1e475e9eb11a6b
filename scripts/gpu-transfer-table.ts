// Prints docs/gpu.md's table of PCIe bytes per generated token (src/model/runner/transfer-bytes.ts):
//   npx tsx scripts/gpu-transfer-table.ts
import { transferBytesPerToken, type TransferDesign, type TransferShape } from '../src/model/runner/transfer-bytes.ts';

const shapes: Record<string, TransferShape> = {
  'small (SmolLM-135M: 30 layers, 9 heads / 3 kv, head 64, hidden 576, MLP 1536, vocab 49152)': { numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64, hiddenSize: 576, intermediateSize: 1536, vocabSize: 49152 },
  '7B (Mistral-7B: 32 layers, 32 heads / 8 kv, head 128, hidden 4096, MLP 14336, vocab 32000)': { numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, hiddenSize: 4096, intermediateSize: 14336, vocabSize: 32000 },
};
const designs: Array<[string, TransferDesign, number]> = [
  ['(a) host KV, 1 step per run (ModelRunner on CUDA)', 'host-kv-per-step', 1],
  ['(b) Loop, k = 4 steps per run', 'loop-k-steps', 4],
  ['(b) Loop, k = 16 steps per run', 'loop-k-steps', 16],
  ['(c) device KV, logits back (DeviceKvRunner on WebGPU)', 'device-kv', 1],
  ['(c) device KV + in-graph sampling', 'device-kv-sampled', 1],
];
const fmt = (bytes: number) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : bytes >= 1e3 ? `${(bytes / 1e3).toFixed(1)} kB` : `${bytes.toFixed(0)} B`);
for (const [name, shape] of Object.entries(shapes)) {
  console.log(`\n**${name}**, 16 streams x 1024 context, fp32 KV\n`);
  console.log('| design | up per token | down per token | total, base | total, 8 adapters r16 |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [label, design, k] of designs) {
    const c = { streams: 16, contextTokens: 1024, stepsPerRun: k };
    const b = transferBytesPerToken(shape, c, design);
    const a = transferBytesPerToken(shape, { ...c, adapterSlots: 8, maxAdapterRank: 16 }, design);
    console.log(`| ${label} | ${fmt(b.upBytes)} | ${fmt(b.downBytes)} | ${fmt(b.upBytes + b.downBytes)} | ${fmt(a.upBytes + a.downBytes)} |`);
  }
}
