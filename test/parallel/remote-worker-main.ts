/** A remote shard worker process for tests: `node bin/run-ts.mjs test/parallel/remote-worker-main.ts HOST:PORT`. */
import { startShardServer } from '../../src/parallel/shard-server.ts';

const server = await startShardServer({ listen: process.argv[2] ?? '127.0.0.1:0' });
process.stdout.write(`listening ${server.address}\n`);
process.once('SIGTERM', () => void server.shutdown().then(() => process.exit(0)));
