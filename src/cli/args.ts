import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TesseraError } from '../errors.ts';
import { didYouMean } from './did-you-mean.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** Shown in --help. */
  description: string;
  short?: string;
  default?: string | boolean;
  multiple?: boolean;
}

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  positionals?: { min: number; max: number };
}

export type ParsedArgs = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };

/** Parses argv for one command; unknown flags and missing positionals are CONFIG_INVALID errors naming the flag. */
export function parseCommandArgs(spec: CommandSpec, argv: string[]): ParsedArgs | 'help' {
  if (argv.includes('--help') || argv.includes('-h')) return 'help';
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}), ...(o.default !== undefined ? { default: o.default } : {}) };
  }
  for (const arg of argv) {
    if (arg === '--') break;
    const name = /^--([^=]+)/.exec(arg)?.[1];
    if (name !== undefined && !(name in spec.options)) {
      throw new TesseraError('CONFIG_INVALID', `unknown option --${name}${didYouMean(name, Object.keys(spec.options), (n) => `--${n}`)}; tessera ${spec.name} --help lists them`);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new TesseraError('CONFIG_INVALID', `${spec.name}: ${(err as Error).message}`);
  }
  const min = spec.positionals?.min ?? 0;
  const max = spec.positionals?.max ?? 0;
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    throw new TesseraError('CONFIG_INVALID', `${spec.name}: expected ${min === max ? min : `${min}-${max}`} positional argument(s), got ${parsed.positionals.length}. Usage: ${spec.usage}`);
  }
  return parsed as ParsedArgs;
}

export function helpText(spec: CommandSpec): string {
  const rows = Object.entries(spec.options).map(([name, o]) => [
    `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ' VALUE' : ''}`,
    `${o.description}${o.default !== undefined ? ` (default: ${o.default})` : ''}`,
  ]);
  const width = Math.max(0, ...rows.map(([flag]) => flag.length)) + 2;
  return [`usage: ${spec.usage}`, '', spec.summary, '', 'options:', ...rows.map(([flag, doc]) => `  ${flag.padEnd(width)}${doc}`)].join('\n');
}

export function stringOpt(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function intOpt(args: ParsedArgs, name: string, bounds: { min: number; max: number }): number | undefined {
  const raw = stringOpt(args, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < bounds.min || n > bounds.max) {
    throw new TesseraError('CONFIG_INVALID', `--${name} must be an integer >= ${bounds.min} and <= ${bounds.max}. Given: ${raw}`);
  }
  return n;
}

export function floatOpt(args: ParsedArgs, name: string, bounds: { min: number; max: number }): number | undefined {
  const raw = stringOpt(args, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < bounds.min || n > bounds.max) {
    throw new TesseraError('CONFIG_INVALID', `--${name} must be a number >= ${bounds.min} and <= ${bounds.max}. Given: ${raw}`);
  }
  return n;
}

export function choiceOpt<T extends string>(args: ParsedArgs, name: string, choices: readonly T[]): T | undefined {
  const raw = stringOpt(args, name);
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) {
    throw new TesseraError('CONFIG_INVALID', `--${name} must be one of ${choices.join(', ')}. Given: ${raw}`);
  }
  return raw as T;
}
