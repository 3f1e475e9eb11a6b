import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { gumbelNoise } from '../../../kernels/loop-sampling.ts';
import { toModelProto } from './onnx-proto.ts';

const GRAPH_ATTRIBUTE = 5;

/** Value names of the sampler's per-row inputs, as the graph holding the If node has them ([rows, 1] int64 each). */
export interface NoiseInputs {
  seed: string;
  position: string;
  /** [1, V] int64 0 .. V - 1 */
  vocabIndex: string;
}

/**
 * The branches of the If node in front of the in-graph sampler (device-KV tail and k-step loop alike): the Gumbel noise
 * [rows, V] of kernels/loop-sampling.ts when some row samples (the branch reads the outer scope's values), else a [1, 1]
 * zero that broadcasts (greedy rows only: no random stream computed).
 */
export function noiseIfBranches(
  inputs: NoiseInputs,
  names: { graph: string; prefix: string; zeroGraph: string; zeroPrefix: string; rowsDim: string },
  vocabSize: number,
): unknown[] {
  const noiseBranch = new OnnxGraph(names.graph);
  const drawn = gumbelNoise(noiseBranch, inputs.seed, inputs.position, inputs.vocabIndex, names.prefix);
  noiseBranch.node('Identity', [drawn], { outputs: [`${names.prefix}_noise`], hint: `${names.prefix}_noise_out` });
  noiseBranch.output(`${names.prefix}_noise`, 'float32', [names.rowsDim, vocabSize]);
  const zeroBranch = new OnnxGraph(names.zeroGraph);
  const z = names.zeroPrefix;
  zeroBranch.node('Identity', [zeroBranch.constFloat(`${z}_zero`, [0], [1, 1])], { outputs: [`${z}_noise`], hint: `${z}_noise_out` });
  zeroBranch.output(`${z}_noise`, 'float32', [1, 1]);
  return [
    { name: 'then_branch', type: GRAPH_ATTRIBUTE, g: toModelProto(noiseBranch).graph },
    { name: 'else_branch', type: GRAPH_ATTRIBUTE, g: toModelProto(zeroBranch).graph },
  ];
}
