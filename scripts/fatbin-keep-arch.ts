/**
 * `node bin/run-ts.mjs scripts/fatbin-keep-arch.ts IN.so OUT.so [--arch 90]`: a copy of a CUDA shared library whose
 * fatbin images for other GPU architectures are zeroed (scripts/lib/fatbin.ts), printed summary as JSON.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { keepArch } from './lib/fatbin.ts';

const [input, output] = process.argv.slice(2);
const at = process.argv.indexOf('--arch');
const arch = at >= 0 ? Number(process.argv[at + 1]) : 90;
if (!input || !output || !Number.isInteger(arch)) {
  console.error('usage: fatbin-keep-arch.ts IN.so OUT.so [--arch 90]');
  process.exit(2);
}
const elf = readFileSync(input);
const summary = keepArch(elf, arch);
writeFileSync(output, elf, { mode: 0o755 });
console.log(JSON.stringify({ input, output, arch, ...summary }));
