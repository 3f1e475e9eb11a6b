import { expect, test } from 'vitest';
import { once } from 'node:events';
import { startTsWorker } from './ts-worker.ts';
test('a worker thread runs a TypeScript module', async () => {
  const w = startTsWorker(new URL('./testing-echo-worker.ts', import.meta.url), { n: 21 });
  const [msg] = await once(w, 'message');
  expect(msg).toEqual({ doubled: 42 });
  await w.terminate();
});
