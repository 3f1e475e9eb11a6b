import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TesseraError } from '../errors.ts';
import { readElfDynamic } from '../util/elf-dynamic.ts';
import { useOrtBinding } from '../util/ort-binding.ts';

/**
 * `--device cuda`: the CUDA build of ONNX Runtime that `npm run install:cuda` puts in deploy/cuda-provider/ (an
 * onnxruntime-node core of exactly the provider's version, next to the CPU package, which stays as it is), the CUDA
 * libraries its provider needs, and the switch of this process's binding to it (src/util/ort-binding.ts). Everything
 * is checked here, at start-up, so a missing piece is one DEVICE_UNAVAILABLE line naming what is missing and where it
 * was looked for, not a native loader error at the first session.
 */
export const CUDA_PROVIDER_DIR = fileURLToPath(new URL('../../deploy/cuda-provider/', import.meta.url));
export const CUDA_BINDING_PACKAGE = 'onnxruntime-node-cuda';
/** Written by scripts/install-cuda.mjs next to the packages: which provider build went beside which core. */
export const CUDA_STAMP_FILE = '.tessera-cuda-provider.json';
const PROVIDER = 'libonnxruntime_providers_cuda.so';
const PROVIDER_BRIDGE = 'libonnxruntime_providers_shared.so';

/** Libraries every Linux process has; the provider's other needs are the CUDA ones. */
const SYSTEM_LIBRARIES = new Set(['libc.so.6', 'libm.so.6', 'libdl.so.2', 'librt.so.1', 'libpthread.so.0', 'libstdc++.so.6', 'libgcc_s.so.1', 'ld-linux-x86-64.so.2', 'ld-linux-aarch64.so.1']);
/** glibc's RTLD_NODELETE: a preloaded library stays mapped after node closes the handle of a non-addon. */
const RTLD_NODELETE = 0x1000;

export interface CudaBindingFiles {
  packageDir: string;
  /** The CommonJS entry `onnxruntime-node` resolves to once selected. */
  entryUrl: string;
  ortVersion: string;
  /** The provider library beside the core (ONNX Runtime loads it from its own directory). */
  provider: string;
}

export interface LoadedCudaLibraries {
  /** Each library the provider links against: where it was loaded from ('system' = the loader's own search). */
  loaded: Array<{ name: string; from: string }>;
  /** Optional libraries that could not be made available (cuDNN). */
  warnings: string[];
}

function unavailable(message: string): TesseraError {
  return new TesseraError('DEVICE_UNAVAILABLE', `--device cuda: ${message}`);
}

/** The installed CUDA build, or DEVICE_UNAVAILABLE saying what is missing and how to install it. */
export function locateCudaBinding(root = CUDA_PROVIDER_DIR): CudaBindingFiles {
  if (process.platform !== 'linux' || process.arch !== 'x64') throw unavailable(`the CUDA build of ONNX Runtime is installed for Linux x64 only; this is ${process.platform}/${process.arch}`);
  const packageDir = join(root, 'node_modules', CUDA_BINDING_PACKAGE);
  const manifest = join(packageDir, 'package.json');
  if (!existsSync(manifest)) throw unavailable(`the CUDA execution provider is not installed (no ${manifest}): run \`npm run install:cuda\` (docs/gpu.md)`);
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string; main?: string };
  const binDir = join(packageDir, 'bin', 'napi-v6', 'linux', 'x64');
  const missing = [PROVIDER, PROVIDER_BRIDGE].filter((f) => !existsSync(join(binDir, f)));
  if (missing.length > 0) throw unavailable(`${missing.join(' and ')} missing in ${binDir}: run \`npm run install:cuda\` (docs/gpu.md)`);
  const stampPath = join(root, 'node_modules', CUDA_STAMP_FILE);
  const stamp = existsSync(stampPath) ? (JSON.parse(readFileSync(stampPath, 'utf8')) as { ortVersion?: string; providerPackage?: string }) : null;
  if (stamp?.ortVersion !== pkg.version) {
    throw unavailable(`the CUDA provider in ${binDir} was built for ONNX Runtime ${stamp?.ortVersion ?? '(unknown: no install stamp)'} but the core there is ${pkg.version}; a provider must match its core exactly: run \`npm run install:cuda\``);
  }
  return { packageDir, entryUrl: pathToFileURL(join(packageDir, pkg.main ?? 'dist/index.js')).href, ortVersion: pkg.version, provider: join(binDir, PROVIDER) };
}

/**
 * `--cuda-lib-path` entries as directories: each entry may hold several paths separated by ':' (as LD_LIBRARY_PATH)
 * and `*` path segments (`/venv/lib/python3.12/site-packages/nvidia/*\/lib`); `unmatched` lists entries that name no
 * existing directory, for the error message.
 */
export function expandLibPath(entries: readonly string[]): { dirs: string[]; unmatched: string[] } {
  const dirs: string[] = [];
  const unmatched: string[] = [];
  for (const entry of entries.flatMap((e) => e.split(':')).filter((e) => e !== '')) {
    let matches = [entry.startsWith(sep) ? sep : '.'];
    for (const segment of entry.split(sep).filter((s) => s !== '')) {
      const pattern = segment.includes('*') ? new RegExp(`^${segment.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`) : null;
      matches = matches.flatMap((base) => {
        if (!pattern) return [join(base, segment)];
        try {
          return readdirSync(base).filter((name) => pattern.test(name)).sort().map((name) => join(base, name));
        } catch {
          return [];
        }
      });
    }
    const found = matches.filter((m) => isDirectory(m));
    if (found.length === 0) unmatched.push(entry);
    for (const d of found) if (!dirs.includes(d)) dirs.push(d);
  }
  return { dirs, unmatched };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The first `dir/name` that exists. */
export function findLibrary(name: string, dirs: readonly string[]): string | null {
  for (const dir of dirs) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

/** dlopen with RTLD_GLOBAL | RTLD_NODELETE; null when loaded, else the loader's message. */
function preload(pathOrName: string): string | null {
  try {
    process.dlopen({ exports: {} }, pathOrName, 2 /* RTLD_NOW */ | 0x100 /* RTLD_GLOBAL */ | RTLD_NODELETE);
    return null;
  } catch (err) {
    const message = (err as Error).message;
    // Loaded fine; it just is not a Node addon.
    return message.includes('did not self-register') ? null : message;
  }
}

/**
 * Makes the libraries `provider` links against loadable before ONNX Runtime loads it: each one found in `libPath` is
 * loaded from there by its full path (its own needs from `libPath` first), so the provider's reference by name binds
 * to it; the others must be found by the system loader (LD_LIBRARY_PATH as the process started, /etc/ld.so.cache, the
 * default directories). cuDNN is optional for this provider build (opened by name `libcudnn.so` when an operator
 * needs it): a warning when absent. Throws DEVICE_UNAVAILABLE naming every missing library and where it looked.
 */
export function loadCudaLibraries(options: { provider: string; libPath: readonly string[]; ldLibraryPath?: string; ortVersion: string }): LoadedCudaLibraries {
  const { dirs, unmatched } = expandLibPath(options.libPath);
  const loaded: LoadedCudaLibraries['loaded'] = [];
  const failed: Array<{ name: string; why: string }> = [];
  const done = new Set<string>();
  const load = (name: string, stack: string[] = []): void => {
    if (done.has(name) || stack.includes(name)) return;
    const path = findLibrary(name, dirs);
    if (path) for (const dep of readElfDynamic(path).needed) if (!SYSTEM_LIBRARIES.has(dep) && findLibrary(dep, dirs)) load(dep, [...stack, name]);
    done.add(name);
    const error = preload(path ?? name);
    if (error === null) loaded.push({ name, from: path ?? 'system' });
    else failed.push({ name, why: /cannot open shared object file/.test(error) && !path ? 'not found' : error });
  };
  const needed = readElfDynamic(options.provider).needed.filter((n) => !SYSTEM_LIBRARIES.has(n));
  for (const name of needed) load(name);
  if (failed.length > 0) {
    const notFound = failed.filter((f) => f.why === 'not found').map((f) => f.name);
    const broken = failed.filter((f) => f.why !== 'not found').map((f) => `${f.name} (${f.why})`);
    const cudaMajor = /^libcudart\.so\.(\d+)$/.exec(needed.find((n) => n.startsWith('libcudart.so.')) ?? '')?.[1] ?? '?';
    const looked = [
      `--cuda-lib-path ${options.libPath.length === 0 ? '(none)' : `${options.libPath.join(',')}${dirs.length > 0 ? ` = ${dirs.join(':')}` : ''}${unmatched.length > 0 ? ` (no such directory: ${unmatched.join(', ')})` : ''}`}`,
      `LD_LIBRARY_PATH ${options.ldLibraryPath ? options.ldLibraryPath : '(unset)'}`,
      'the system library path (/etc/ld.so.cache, /lib, /usr/lib)',
    ];
    const parts = [...(notFound.length > 0 ? [`${notFound.join(', ')} not found`] : []), ...(broken.length > 0 ? [`failed to load ${broken.join('; ')}`] : [])];
    throw unavailable(
      `the CUDA provider of ONNX Runtime ${options.ortVersion} cannot load: ${parts.join('; ')} (looked in ${looked.join('; ')}). ` +
        `It needs the CUDA ${cudaMajor} libraries (${needed.filter((n) => n !== 'libcuda.so.1').join(', ')}) and the NVIDIA driver's libcuda.so.1: install them, or point --cuda-lib-path at them, e.g. a Python environment's site-packages/nvidia/*/lib (docs/gpu.md)`,
    );
  }
  const warnings: string[] = [];
  if (preload('libcudnn.so') !== null) {
    const versioned = dirs.map((d) => (existsSync(d) ? readdirSync(d).filter((f) => /^libcudnn\.so\.\d+$/.test(f)).map((f) => join(d, f)) : [])).flat();
    for (const path of versioned) preload(path);
    warnings.push(
      `cuDNN is not loadable as libcudnn.so (the name this provider opens it by)${versioned.length > 0 ? `; found ${versioned.join(', ')}: add a directory holding a libcudnn.so link to it to LD_LIBRARY_PATH` : ''}; operators that need cuDNN will fail, the others run without it`,
    );
  }
  return { loaded, warnings };
}

/** Checks the CUDA build and its libraries and switches this process's ONNX Runtime binding to it. */
export function selectCudaBinding(options: { libPath: readonly string[]; env: NodeJS.ProcessEnv; root?: string }): CudaBindingFiles & LoadedCudaLibraries {
  const files = locateCudaBinding(options.root);
  const libraries = loadCudaLibraries({ provider: files.provider, libPath: options.libPath, ldLibraryPath: options.env.LD_LIBRARY_PATH, ortVersion: files.ortVersion });
  useOrtBinding(files.entryUrl);
  return { ...files, ...libraries };
}
