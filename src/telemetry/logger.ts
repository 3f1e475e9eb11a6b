/**
 * pino JSON logging: one root logger per process, one child per component ({ component: 'scheduler' }).
 * Levels come from the caller (the composition root reads TESSERA_LOG_LEVEL / TESSERA_TRACE); nothing here
 * reads the environment.
 */
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** Default 'info'. */
  level?: LevelWithSilent;
  /** Components whose child loggers log at 'trace' (e.g. from TESSERA_TRACE=scheduler,kv-cache). */
  traceComponents?: readonly string[];
  /** Where JSON lines go; default stdout. */
  destination?: DestinationStream;
  /** Fields on every line, e.g. { service: 'tessera' }. */
  base?: Record<string, unknown>;
}

const traceSets = new WeakMap<Logger, ReadonlySet<string>>();

export function createLogger(opts: LoggerOptions = {}): Logger {
  const logger = pino(
    {
      level: opts.level ?? 'info',
      base: opts.base ?? { service: 'tessera' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Errors logged as { err } keep their type, message and stack.
      serializers: { err: pino.stdSerializers.err },
    },
    opts.destination ?? pino.destination(1),
  );
  traceSets.set(logger, new Set(opts.traceComponents ?? []));
  return logger;
}

/** Child logger for one component; at 'trace' level when the component is in `traceComponents`. */
export function componentLogger(root: Logger, component: string): Logger {
  const traced = traceSets.get(root)?.has(component) ?? false;
  return traced ? root.child({ component }, { level: 'trace' }) : root.child({ component });
}
