// Prints, as JSON, the int8 kernel check of src/model/quantization/int8-kernel-check.ts on this CPU, with the CPU's
// kernel-selecting features. `node bin/run-ts.mjs scripts/int8-kernel-check.ts`; the tests also run it under valgrind,
// which shows ONNX Runtime an AVX2-only CPU.
import { cpuKernelFeatures } from '../src/model/cpu-features.ts';
import { checkInt8Kernels } from '../src/model/quantization/int8-kernel-check.ts';

console.log(JSON.stringify({ cpu: cpuKernelFeatures(), check: await checkInt8Kernels() }));
