import * as ort from 'onnxruntime-node';
import { OnnxGraph } from '../kernels/onnx-graph.ts';
import { serializeModel } from '../src/model/graph/onnx-serialize.ts';

// One layer's LoRA for 8 adapters, M=2 tokens each, R=16, small shapes; repeated L layers in one graph.
const N = Number(process.env.N ?? 8), M = Number(process.env.M ?? 2), R = Number(process.env.R ?? 16), H = 576, KV = 192, I = 1536, L = 30;
type Mod = { name: string; inF: number; outF: number; x: 'h' | 'o' | 'i'; r: number };
const separate: Mod[] = [
  { name: 'q', inF: H, outF: H, x: 'h', r: R }, { name: 'k', inF: H, outF: KV, x: 'h', r: R }, { name: 'v', inF: H, outF: KV, x: 'h', r: R },
  { name: 'o', inF: H, outF: H, x: 'o', r: R }, { name: 'gate', inF: H, outF: I, x: 'h', r: R }, { name: 'up', inF: H, outF: I, x: 'h', r: R }, { name: 'down', inF: I, outF: H, x: 'i', r: R },
];
const fused: Mod[] = [
  { name: 'qkv', inF: H, outF: H + 2 * KV, x: 'h', r: 3 * R }, { name: 'o', inF: H, outF: H, x: 'o', r: R }, { name: 'gate_up', inF: H, outF: 2 * I, x: 'h', r: 2 * R }, { name: 'down', inF: I, outF: H, x: 'i', r: R },
];
function build(mods: Mod[], half = false) {
  const g = new OnnxGraph('lora');
  const xs = { h: g.input('xh', 'float32', [N, M, H]), o: g.input('xo', 'float32', [N, M, H]), i: g.input('xi', 'float32', [N, M, I]) };
  const feeds: Record<string, ort.Tensor> = {
    xh: new ort.Tensor('float32', new Float32Array(N * M * H).fill(0.1), [N, M, H]),
    xo: new ort.Tensor('float32', new Float32Array(N * M * H).fill(0.1), [N, M, H]),
    xi: new ort.Tensor('float32', new Float32Array(N * M * I).fill(0.1), [N, M, I]),
  };
  for (let l = 0; l < L; l++) for (const m of mods) {
    let a: string, b: string;
    if (half) {
      a = g.op('Cast', [g.input(`a.${l}.${m.name}`, 'float16', [N, m.inF, m.r])], { attrs: { to: { i: 1 } } });
      b = g.op('Cast', [g.input(`b.${l}.${m.name}`, 'float16', [N, m.r, m.outF])], { attrs: { to: { i: 1 } } });
      feeds[`a.${l}.${m.name}`] = new ort.Tensor('float16', new Uint16Array(N * m.inF * m.r).fill(0x2000), [N, m.inF, m.r]);
      feeds[`b.${l}.${m.name}`] = new ort.Tensor('float16', new Uint16Array(N * m.r * m.outF).fill(0x2000), [N, m.r, m.outF]);
    } else {
    a = g.input(`a.${l}.${m.name}`, 'float32', [N, m.inF, m.r]);
    b = g.input(`b.${l}.${m.name}`, 'float32', [N, m.r, m.outF]);
    feeds[`a.${l}.${m.name}`] = new ort.Tensor('float32', new Float32Array(N * m.inF * m.r).fill(0.01), [N, m.inF, m.r]);
    feeds[`b.${l}.${m.name}`] = new ort.Tensor('float32', new Float32Array(N * m.r * m.outF).fill(0.01), [N, m.r, m.outF]);
    }
    const d = g.op('MatMul', [g.op('MatMul', [xs[m.x], a]), b]);
    g.output(d, 'float32', [N, M, m.outF]);
  }
  return { bytes: serializeModel(g, null), feeds };
}
async function time(name: string, mods: Mod[], half = false) {
  const { bytes, feeds } = build(mods, half);
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: Number(process.env.T ?? 2), graphOptimizationLevel: 'all' });
  for (let i = 0; i < 5; i++) await s.run(feeds);
  const t: number[] = [];
  for (let i = 0; i < 30; i++) { const t0 = performance.now(); await s.run(feeds); t.push(performance.now() - t0); }
  t.sort((x, y) => x - y);
  const mb = Object.values(feeds).reduce((a, f) => a + (f.data as Float32Array).byteLength, 0) / 2 ** 20;
  console.log(name, 'min', t[0].toFixed(2), 'median', t[15].toFixed(2), 'ms; feeds MiB', mb.toFixed(1), 'inputs', Object.keys(feeds).length);
  await s.release();
}
for (let round = 0; round < 3; round++) { await time('separate', separate);  }

// A fused across modules that share an input (q|k|v, gate|up), B separate.
function buildFusedA() {
  const g = new OnnxGraph('lora');
  const feeds: Record<string, ort.Tensor> = {};
  const inp = (name: string, dims: number[]) => { feeds[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b)).fill(0.01), dims); return g.input(name, 'float32', dims); };
  const xs = { h: inp('xh', [N, M, H]), o: inp('xo', [N, M, H]), i: inp('xi', [N, M, I]) };
  const groups: Array<{ x: 'h' | 'o' | 'i'; inF: number; outs: Array<[string, number]> }> = [
    { x: 'h', inF: H, outs: [['q', H], ['k', KV], ['v', KV]] }, { x: 'o', inF: H, outs: [['o', H]] }, { x: 'h', inF: H, outs: [['gate', I], ['up', I]] }, { x: 'i', inF: I, outs: [['down', H]] },
  ];
  for (let l = 0; l < L; l++) for (const [gi, grp] of groups.entries()) {
    const a = inp(`a.${l}.${gi}`, [N, grp.inF, R * grp.outs.length]);
    const xa = g.op('MatMul', [xs[grp.x], a]);
    const parts = grp.outs.length === 1 ? [xa] : g.node('Split', [xa, g.constInt64(`split${grp.outs.length}`, grp.outs.map(() => R))], { attrs: { axis: { i: -1 } }, outputs: grp.outs.length });
    grp.outs.forEach(([name, outF], k) => {
      const d = g.op('MatMul', [parts[k], inp(`b.${l}.${name}`, [N, R, outF])]);
      g.output(d, 'float32', [N, M, outF]);
    });
  }
  return { bytes: serializeModel(g, null), feeds };
}
{
  const { bytes, feeds } = buildFusedA();
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: Number(process.env.T ?? 2), graphOptimizationLevel: 'all' });
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) await s.run(feeds);
    const t: number[] = [];
    for (let i = 0; i < 30; i++) { const t0 = performance.now(); await s.run(feeds); t.push(performance.now() - t0); }
    t.sort((x, y) => x - y);
    console.log('fused A', 'min', t[0].toFixed(2), 'median', t[15].toFixed(2), 'inputs', Object.keys(feeds).length);
    await time('separate', separate);
  }
}

// Transposed: the factors as the GEMMs' A operand (read in place), the tokens as the small B operand.
function buildTransposed() {
  const g = new OnnxGraph('lora');
  const feeds: Record<string, ort.Tensor> = {};
  const inp = (name: string, dims: number[]) => { feeds[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b)).fill(0.01), dims); return g.input(name, 'float32', dims); };
  const xs = { h: inp('xh', [N, M, H]), o: inp('xo', [N, M, H]), i: inp('xi', [N, M, I]) };
  const xt = Object.fromEntries(Object.entries(xs).map(([k, x]) => [k, g.op('Transpose', [x], { attrs: { perm: { ints: [0, 2, 1] } } })])) as Record<'h' | 'o' | 'i', string>;
  for (let l = 0; l < L; l++) for (const m of separate) {
    const xaT = g.op('MatMul', [inp(`a.${l}.${m.name}`, [N, R, m.inF]), xt[m.x]]);
    const dT = g.op('MatMul', [inp(`b.${l}.${m.name}`, [N, m.outF, R]), xaT]);
    g.output(g.op('Transpose', [dT], { attrs: { perm: { ints: [0, 2, 1] } } }), 'float32', [N, M, m.outF]);
  }
  return { bytes: serializeModel(g, null), feeds };
}
{
  const { bytes, feeds } = buildTransposed();
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: Number(process.env.T ?? 2), graphOptimizationLevel: 'all' });
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) await s.run(feeds);
    const t: number[] = [];
    for (let i = 0; i < 30; i++) { const t0 = performance.now(); await s.run(feeds); t.push(performance.now() - t0); }
    t.sort((x, y) => x - y);
    console.log('transposed', 'min', t[0].toFixed(2), 'median', t[15].toFixed(2), 'inputs', Object.keys(feeds).length);
  }
}
