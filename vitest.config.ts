import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'kernels/**/*.test.ts', 'test/**/*.test.ts', 'bench/**/*.test.ts', 'tools/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'bench/results/**'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // Two cores on CI: ORT sessions already use both; more test files in parallel only thrash.
    maxWorkers: 2,
    globalSetup: ['test/helpers/global-setup.ts'],
  },
});
