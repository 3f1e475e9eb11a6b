/**
 * Generates the TypeScript types of the public API messages (src/gen/, git-ignored) with `proto-loader-gen-types`,
 * which ships with the pinned @grpc/proto-loader, from the same files and with the same load options the server
 * uses (proto-loader.ts), so the types describe exactly what handlers receive and send: `Foo__Output` is a decoded
 * message, `Foo` what may be encoded.
 *
 * Run by `npm ci`/`npm install` (the `prepare` script), `npm run typecheck` and scripts/test.sh; the server needs
 * nothing generated at run time (only `import type` reaches src/gen). test/proto/proto-types.test.ts fails when
 * src/gen is stale.
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROTO_LOAD_OPTIONS, PROTO_ROOT_DIR, PUBLIC_PROTO_FILES } from './proto-loader.ts';

export const GENERATED_TYPES_DIR = fileURLToPath(new URL('../gen', import.meta.url));

/** proto-loader-gen-types arguments matching PROTO_LOAD_OPTIONS (run in PROTO_ROOT_DIR: no absolute paths in the output). */
export function protoTypesArgs(outDir: string): string[] {
  const o = PROTO_LOAD_OPTIONS;
  const args = ['--grpcLib=@grpc/grpc-js', '--importFileExtension=.ts', `--outDir=${outDir}`, '--includeDirs=.'];
  if (o.keepCase) args.push('--keepCase');
  if (o.longs === String) args.push('--longs=String');
  if (o.enums === String) args.push('--enums=String');
  if (o.defaults) args.push('--defaults');
  if (o.oneofs) args.push('--oneofs');
  return [...args, ...PUBLIC_PROTO_FILES];
}

/** Writes the generated types into `outDir` (emptied first). */
export function generateProtoTypes(outDir = GENERATED_TYPES_DIR): void {
  outDir = path.resolve(outDir);
  const bin = createRequire(import.meta.url).resolve('@grpc/proto-loader/build/bin/proto-loader-gen-types.js');
  rmSync(outDir, { recursive: true, force: true });
  execFileSync(process.execPath, [bin, ...protoTypesArgs(outDir)], { cwd: PROTO_ROOT_DIR, stdio: ['ignore', 'ignore', 'inherit'] });
}
