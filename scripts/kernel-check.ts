// Prints, as JSON, the quantized-kernel checks of src/model/quantization/kernel-check.ts on this CPU, with the CPU's
// kernel-selecting features. `node bin/run-ts.mjs scripts/kernel-check.ts`; the tests also run it under valgrind,
// which shows ONNX Runtime an AVX2-only CPU.
import { cpuKernelFeatures } from '../src/model/cpu-features.ts';
import { checkInt8Kernels, singleRowPathDiffers } from '../src/model/quantization/kernel-check.ts';

console.log(JSON.stringify({ cpu: cpuKernelFeatures(), check: await checkInt8Kernels(), singleRowPathDiffers: { int4: await singleRowPathDiffers(4), int8: await singleRowPathDiffers(8) } }));
