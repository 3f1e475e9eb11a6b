import { cpuKernelFeatures } from '../../model/cpu-features.ts';
import { booleanFlags, loadWorkerConfig, WORKER_SETTINGS, workerHelp, type WorkerConfig } from '../config.ts';
import type { CommandIo } from '../main.ts';
import { shardServerSecurity } from '../shard-security.ts';
import { splitFlags } from './serve.ts';

/** Parses `tessera worker` arguments into its settings (flag > environment > config file > default). */
export function parseWorkerArgs(argv: string[], env: NodeJS.ProcessEnv = {}): WorkerConfig {
  return loadWorkerConfig(splitFlags(argv, booleanFlags(WORKER_SETTINGS)), env);
}

/** `tessera worker`: runs until SIGINT/SIGTERM; prints `listening HOST:PORT` once bound. */
export async function runWorker(argv: string[], io: CommandIo): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(`${workerHelp()}\n`);
    return 0;
  }
  const config = parseWorkerArgs(argv, process.env);
  const log = (line: string) => io.err(`tessera worker: ${line}\n`);
  const security = shardServerSecurity(config, (line) => log(`warning: ${line}`));
  // The shard server (and with it ONNX Runtime) loads only once the settings are known to be valid.
  const { startShardServer } = await import('../../parallel/shard-server.ts');
  const server = await startShardServer({ listen: config.listen, ...security, leaseMs: config.leaseMs, log });
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
