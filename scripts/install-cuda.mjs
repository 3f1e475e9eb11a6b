#!/usr/bin/env node
// `npm run install:cuda`: ONNX Runtime's CUDA execution provider for `tessera serve --device cuda`, from the npm
// registry alone, into deploy/cuda-provider/node_modules (the CPU install and its onnxruntime-node stay as they are):
//   1. `npm ci` there: onnxruntime-node-cuda = onnxruntime-node@<the provider's ONNX Runtime version>, from its lockfile,
//      install scripts off (onnxruntime-node's would download CUDA 12 files from NuGet);
//   2. `npm pack` of the provider package named in deploy/cuda-provider/package.json (tesseraCudaProvider), checked
//      against the pinned sha512, and its two provider libraries extracted beside that core, where ONNX Runtime looks;
//   3. the other platforms' binaries of the core removed (--keep-all-platforms keeps them), an install stamp written.
// Plain JavaScript with no dependencies, so the GPU image's dependency stage can run it. Linux x64 only.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../deploy/cuda-provider/', import.meta.url));
const keepAllPlatforms = process.argv.includes('--keep-all-platforms');
const started = performance.now();
const step = (msg) => process.stderr.write(`[install:cuda ${((performance.now() - started) / 1000).toFixed(1)} s] ${msg}\n`);
const fail = (msg) => {
  process.stderr.write(`install:cuda: ${msg}\n`);
  process.exit(1);
};

if (process.platform !== 'linux' || process.arch !== 'x64') fail(`the CUDA provider is packaged for Linux x64 only; this is ${process.platform}/${process.arch}`);
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const provider = manifest.tesseraCudaProvider;
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

step(`npm ci in ${root} (onnxruntime-node ${provider.ortVersion} as onnxruntime-node-cuda)`);
execFileSync(npm, ['ci', '--prefix', root, '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { stdio: ['ignore', 'inherit', 'inherit'] });
const core = join(root, 'node_modules', 'onnxruntime-node-cuda');
const coreVersion = JSON.parse(readFileSync(join(core, 'package.json'), 'utf8')).version;
if (coreVersion !== provider.ortVersion) fail(`onnxruntime-node-cuda is ${coreVersion}, the provider is built for ONNX Runtime ${provider.ortVersion}: they must match exactly (deploy/cuda-provider/package.json)`);

const spec = `${provider.package}@${provider.version}`;
const scratch = mkdtempSync(join(tmpdir(), 'tessera-cuda-provider-'));
try {
  step(`npm pack ${spec}`);
  const packed = JSON.parse(execFileSync(npm, ['pack', spec, '--json', '--pack-destination', scratch, '--loglevel=error'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 }))[0];
  const tarball = join(scratch, packed.filename);
  const digest = await new Promise((resolve, reject) => {
    const hash = createHash('sha512');
    createReadStream(tarball).on('data', (d) => hash.update(d)).on('error', reject).on('end', () => resolve(`sha512-${hash.digest('base64')}`));
  });
  if (digest !== provider.integrity) fail(`${spec}: integrity ${digest} is not the pinned ${provider.integrity}`);
  step(`${spec}: ${(statSync(tarball).size / 1e6).toFixed(1)} MB, integrity matches the pin; extracting ${provider.files.length} files`);
  execFileSync('tar', ['--no-same-owner', '-xzf', tarball, '-C', scratch, ...provider.files], { stdio: ['ignore', 'inherit', 'inherit'] });
  const bin = join(core, 'bin', 'napi-v6', 'linux', 'x64');
  for (const file of provider.files) renameSync(join(scratch, file), join(bin, file.slice(file.lastIndexOf('/') + 1)));
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

if (!keepAllPlatforms) {
  const napi = join(core, 'bin', 'napi-v6');
  for (const platform of readdirSync(napi)) {
    if (platform !== 'linux') rmSync(join(napi, platform), { recursive: true, force: true });
  }
  for (const arch of readdirSync(join(napi, 'linux'))) if (arch !== 'x64') rmSync(join(napi, 'linux', arch), { recursive: true, force: true });
}
writeFileSync(join(root, 'node_modules', '.tessera-cuda-provider.json'), `${JSON.stringify({ ortVersion: provider.ortVersion, providerPackage: spec, integrity: provider.integrity }, null, 2)}\n`);

const du = (p) => (statSync(p).isDirectory() ? readdirSync(p).reduce((a, n) => a + du(join(p, n)), 0) : statSync(p).size);
step(`done: ${(du(join(root, 'node_modules')) / 1e6).toFixed(0)} MB in ${join(root, 'node_modules')}`);
if (!existsSync('/proc/driver/nvidia/version')) step('no NVIDIA driver on this machine: `tessera serve --device cuda` will say which CUDA libraries it cannot find (docs/gpu.md)');
process.stderr.write('next: tessera serve --device cuda [--cuda-lib-path DIR]\n');
