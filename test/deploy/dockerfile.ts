/**
 * Reads a Dockerfile into stages of instructions (continuation lines joined, comments and parser directives dropped),
 * enough for tests and the image rehearsal to check and replay what the image does.
 */
import { readFileSync } from 'node:fs';

export interface Instruction {
  keyword: string; // upper case: FROM, RUN, COPY, ENV, ...
  args: string;
  line: number;
}

export interface Stage {
  name: string | null;
  base: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  globalArgs: Map<string, string>;
  stages: Stage[];
}

export function parseDockerfile(path: string): Dockerfile {
  const lines = readFileSync(path, 'utf8').split('\n');
  const instructions: Instruction[] = [];
  let pending = '';
  let startLine = 0;
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) return;
    if (pending !== '' && line.startsWith('#')) return; // comment lines inside a continued instruction
    if (pending === '') startLine = i + 1;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const text = (pending + line).trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/s.exec(text)!;
    instructions.push({ keyword: m[1].toUpperCase(), args: m[2].replace(/\s+/g, ' ').trim(), line: startLine });
  });
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`${path}:${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ name: m[2] ?? null, base: expandArgs(m[1], globalArgs), instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`${path}:${ins.line}: ${ins.keyword} before FROM`);
      const [name, value = ''] = ins.args.split('=');
      globalArgs.set(name, value);
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

function expandArgs(text: string, args: Map<string, string>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => args.get((a ?? b)!) ?? '');
}

/** ENV key=value pairs of a stage (the `ENV a=1 b=2` form only). */
export function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
  }
  return env;
}

/** JSON (exec) form of ENTRYPOINT/CMD, or null when written in shell form. */
export function execForm(stage: Stage, keyword: 'ENTRYPOINT' | 'CMD'): string[] | null {
  const ins = stage.instructions.filter((i) => i.keyword === keyword).at(-1);
  if (!ins) return null;
  try {
    const v = JSON.parse(ins.args) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
  } catch {
    return null;
  }
}

/** COPY instructions that read the build context (not --from another stage): sources and destination. */
export function contextCopies(stage: Stage): Array<{ sources: string[]; dest: string }> {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY' && !/--from=/.test(i.args))
    .map((i) => {
      const parts = i.args.split(' ').filter((p) => !p.startsWith('--'));
      return { sources: parts.slice(0, -1), dest: parts.at(-1)! };
    });
}
