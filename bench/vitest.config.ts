// Unit tests of the bench harness: `npx vitest run -c bench/vitest.config.ts`. (The root config's include does not
// cover bench/; adding 'bench/**/*.test.ts' there would make this file unnecessary.)
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('.', import.meta.url).pathname,
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**', 'results/**', '.scratch/**'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
