// The WebGPU suite: `npm run test:webgpu` (scripts/test-webgpu.sh installs Mesa's lavapipe, then runs this config with
// TESSERA_TEST_DEVICE=webgpu). The default config also picks these files up, but there the WebGPU cases are skipped
// and only their CPU-EP variants run.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/webgpu/**/*.test.ts'],
    // Shader compilation on lavapipe dominates: a first fp32 run takes about a minute on 2 cores.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // One WebGPU device per process; two processes would only share the same 2 CPU cores that lavapipe renders on.
    maxWorkers: 1,
  },
});
