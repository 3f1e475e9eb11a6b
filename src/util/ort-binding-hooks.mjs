// Module resolution hook (node:module register): `import 'onnxruntime-node'` resolves to the ONNX Runtime binding this
// process selected at start-up (src/util/ort-binding.ts), e.g. the CUDA build, instead of the CPU package.
let target = null;

export function initialize(data) {
  target = data.url;
}

export async function resolve(specifier, context, next) {
  if (specifier === 'onnxruntime-node' && target) return { url: target, shortCircuit: true };
  return next(specifier, context);
}
