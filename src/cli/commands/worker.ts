import { cpuKernelFeatures } from '../../model/cpu-features.ts';
import { startShardServer } from '../../parallel/shard-server.ts';
import { stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';

export const workerSpec: CommandSpec = {
  name: 'worker',
  usage: 'tessera worker --listen HOST:PORT',
  summary: 'Serves one model shard to a controller over tessera.shard.v1 (the controller sends the model directory and the shard position).',
  options: {
    listen: { type: 'string', description: 'address to listen on (port 0 picks a free port, printed on start)', default: '127.0.0.1:0' },
  },
};

/** Runs until SIGINT/SIGTERM; prints `listening HOST:PORT` once bound. */
export async function runWorker(args: ParsedArgs, io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const server = await startShardServer({ listen: stringOpt(args, 'listen')! });
  io.out(`listening ${server.address}\n`);
  const cpu = cpuKernelFeatures();
  io.out(`cpu ${cpu.model}: int8 kernels ${cpu.int8Class} (${cpu.flags.join(' ')})\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.shutdown();
  return 0;
}
