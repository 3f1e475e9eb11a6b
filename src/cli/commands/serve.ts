import { TesseraError } from '../../errors.ts';
import { booleanFlags, loadServeConfig, SERVE_SETTINGS, serveHelp, type ServeConfig } from '../config.ts';
import { selectCudaBinding } from '../cuda-provider.ts';
import type { CommandIo } from '../main.ts';

/**
 * Splits `--name value` / `--name=value` pairs (repeatable) into name -> values; a flag in `booleans` may stand alone
 * (`--insecure` = true).
 */
export function splitFlags(argv: string[], booleans: ReadonlySet<string> = new Set()): Map<string, string[]> {
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new TesseraError('CONFIG_INVALID', `unexpected argument '${arg}' (settings are --name value)`);
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (booleans.has(name) && (i + 1 >= argv.length || argv[i + 1].startsWith('--'))) value = 'true';
    else {
      if (i + 1 >= argv.length) throw new TesseraError('CONFIG_INVALID', `--${name} needs a value`);
      value = argv[++i];
    }
    flags.set(name, [...(flags.get(name) ?? []), value]);
  }
  return flags;
}

/** `tessera serve`'s settings from its flags and environment (the config file is named by either). */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv = {}): ServeConfig {
  return loadServeConfig(splitFlags(argv, booleanFlags(SERVE_SETTINGS)), env);
}

/**
 * `tessera serve`: starts the server, prints `listening on HOST:PORT`, drains on SIGTERM/SIGINT and exits 0; a second
 * signal during the drain cancels what is still running, stops at once and exits 1.
 */
export async function runServe(argv: string[], io: CommandIo): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(`${serveHelp()}\n`);
    return 0;
  }
  const config = parseServeArgs(argv, process.env);
  // --device cuda: the CUDA build of ONNX Runtime and its libraries are checked, and this process switched to it,
  // before anything loads ONNX Runtime (the server and its worker threads are imported after this).
  const cuda = config.device === 'cuda' ? selectCudaBinding({ libPath: config.cudaLibPath, env: process.env }) : null;
  const { startServer } = await import('../serve.ts');
  const server = await startServer(config, {
    announce: (line) => io.out(`${line}\n`),
    ...(cuda ? { startupLog: { onnxRuntime: cuda.ortVersion, binding: cuda.packageDir, cudaLibraries: cuda.loaded, warnings: cuda.warnings } } : {}),
  });
  return await new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        // Cancels what the drain still waits for; the drain's promise then settles too, so both paths exit 1.
        server.logger.warn({ signal }, 'second signal: stopping now');
        void server.shutdown().then(() => resolve(1));
        return;
      }
      server.logger.info({ signal }, 'signal received: draining');
      void server.drain().then(
        () => resolve(signals > 1 ? 1 : 0),
        (err) => {
          server.logger.error({ err }, 'drain failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

