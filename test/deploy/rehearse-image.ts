/**
 * Replays deploy/docker/Dockerfile.cpu without a container engine, as far as that is possible:
 *   1. the `deps` stage: copy what it copies into a clean folder and run its `npm ci` line with its ENV (needs the npm
 *      registry, so this is a script for CI or a person, not part of the offline test suite);
 *   2. the runtime stage: copy the sources it copies, filtered by Dockerfile.cpu.dockerignore;
 *   3. start the image's ENTRYPOINT + CMD with the image's ENV (through tini when the host has it) on a tiny model,
 *      wait for `listening on`, check grpc.health.v1 and /metrics, send SIGTERM and expect a drained exit 0.
 * Not replayed: the base image (host Node and libc instead of node:20-bookworm-slim), the non-root user and the
 * read-only root file system, and the fixed ports (the script picks free ones so it cannot clash with other servers).
 *
 *   node bin/run-ts.mjs test/deploy/rehearse-image.ts [--keep]
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { contextCopies, execForm, parseDockerfile, stageEnv } from './dockerfile.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DOCKERFILE = join(ROOT, 'deploy/docker/Dockerfile.cpu');

function log(line: string): void {
  process.stderr.write(`[rehearse] ${line}\n`);
}

/** .dockerignore patterns (`**`, `*`, `!` re-include; last match wins) as a predicate on context-relative paths. */
function dockerignore(path: string): (rel: string) => boolean {
  const rules = readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const glob = negate ? l.slice(1) : l;
    const re = glob.split('/').map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*'))).join('/').replace(/\.\*\//g, '(?:.*/)?');
    return { negate, re: new RegExp(`^${re}(?:/.*)?$`) };
  });
  return (rel) => {
    let ignored = false;
    for (const r of rules) if (r.re.test(rel)) ignored = !r.negate;
    return ignored;
  };
}

function copyContext(sources: string[], dest: string, ignored: (rel: string) => boolean): number {
  let files = 0;
  const walk = (rel: string, to: string) => {
    const abs = join(ROOT, rel);
    if (statSync(abs).isDirectory()) {
      for (const name of readdirSync(abs)) walk(join(rel, name), join(to, name));
    } else if (!ignored(rel)) {
      mkdirSync(dirname(to), { recursive: true });
      cpSync(abs, to);
      files++;
    }
  };
  for (const src of sources) walk(src, sources.length > 1 || dest.endsWith('/') ? join(dest, src) : dest);
  return files;
}

function run(cmd: string, cwd: string, env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync('/bin/sh', ['-c', cmd], { cwd, env, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`\`${cmd}\` exited ${r.status}`);
  return (performance.now() - t0) / 1000;
}

async function healthCheck(app: string, port: number): Promise<string> {
  const script = join(app, '.rehearse-health.mjs');
  writeFileSync(script, `import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { protoPath } from 'grpc-health-check';
const pkg = grpc.loadPackageDefinition(loader.loadSync(protoPath, { keepCase: true, enums: String, defaults: true }));
const client = new pkg.grpc.health.v1.Health('127.0.0.1:${port}', grpc.credentials.createInsecure());
client.Check({ service: '' }, { deadline: Date.now() + 5000 }, (err, res) => { console.log(err ? 'ERROR ' + err.details : res.status); client.close(); });
`);
  const r = spawnSync(process.execPath, [script], { cwd: app, encoding: 'utf8' });
  return r.stdout.trim() || r.stderr.trim();
}

async function main(): Promise<void> {
  const keep = process.argv.includes('--keep');
  const df = parseDockerfile(DOCKERFILE);
  const deps = df.stages.find((s) => s.name === 'deps')!;
  const runtime = df.stages.at(-1)!;
  const work = mkdtempSync(join(tmpdir(), 'tessera-image-'));
  const app = join(work, 'app');
  mkdirSync(app);
  const report: Record<string, unknown> = { dockerfile: relative(ROOT, DOCKERFILE), work };
  try {
    // 1. deps stage
    for (const { sources, dest } of contextCopies(deps)) copyContext(sources, join(app, dest), () => false);
    const npmCi = deps.instructions.find((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args))!.args.replace(/--mount=\S+\s*/g, '');
    log(`deps: ${npmCi}`);
    report.npmCiSeconds = run(npmCi, app, { ...process.env, ...stageEnv(deps) });
    const installed = readdirSync(join(app, 'node_modules'));
    for (const dev of ['vitest', 'typescript', 'eslint', 'kubernetes-models']) if (installed.includes(dev)) throw new Error(`dev dependency ${dev} was installed`);
    if (!installed.includes('tsx')) throw new Error('tsx (runtime dependency) is missing');
    report.nodeModulesMiB = Number(spawnSync('du', ['-sm', join(app, 'node_modules')], { encoding: 'utf8' }).stdout.split('\t')[0]);

    // 2. runtime stage sources
    const ignored = dockerignore(`${DOCKERFILE}.dockerignore`);
    let files = 0;
    for (const { sources, dest } of contextCopies(runtime)) files += copyContext(sources, join(app, dest === './' ? '' : dest), ignored);
    report.sourceFiles = files;

    // 3. start as the image does, on a tiny model
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: work, ...stageEnv(runtime), TESSERA_CACHE_DIR: join(work, 'cache') };
    const model = join(work, 'model');
    run(`node bin/tessera.mjs make-model --preset tiny --out ${model}`, app, env);
    const entrypoint = execForm(runtime, 'ENTRYPOINT')!.map((a) => a.replace('/app/', `${app}/`));
    const tini = existsSync(entrypoint[0]);
    const argv = [...(tini ? entrypoint : entrypoint.slice(2)), ...execForm(runtime, 'CMD')!, '--model', model, '--port', '0', '--metrics-port', '0', '--host', '127.0.0.1', '--metrics-host', '127.0.0.1'];
    report.tini = tini;
    log(`start: ${argv.join(' ')}`);
    const t0 = performance.now();
    const child = spawn(argv[0], argv.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 240_000;
    while (!/listening on \S+:(\d+)/.test(stdout)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start:\n${stderr.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    report.startSeconds = (performance.now() - t0) / 1000;
    const port = Number(/listening on \S+:(\d+)/.exec(stdout)![1]);
    const metricsPort = Number(/"metricsPort":(\d+)/.exec(stderr)?.[1]);
    report.health = await healthCheck(app, port);
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    report.metricsStatus = metrics.status;
    const t1 = performance.now();
    child.kill('SIGTERM');
    report.exitCode = await exited;
    report.drainSeconds = (performance.now() - t1) / 1000;
    report.drained = /draining/.test(stderr) && /"stopped"|stopped/.test(stderr);
    const ok = report.health === 'SERVING' && report.metricsStatus === 200 && report.exitCode === 0 && report.drained === true;
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (!ok) {
      log(stderr.slice(-3000));
      process.exitCode = 1;
    }
  } finally {
    if (!keep) rmSync(work, { recursive: true, force: true });
  }
}

await main();
