import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

const protoDir = fileURLToPath(new URL('../../proto', import.meta.url));
const buf = fileURLToPath(new URL('../../node_modules/.bin/buf', import.meta.url));

test('every proto (public tessera.v1 and internal tessera.shard.v1) is clean under buf lint (STANDARD rules, proto/buf.yaml)', () => {
  const result = spawnSync(buf, ['lint'], { cwd: protoDir, encoding: 'utf8' });
  expect(result.error).toBeUndefined();
  expect(`${result.stdout}${result.stderr}`).toBe('');
  expect(result.status).toBe(0);
});
