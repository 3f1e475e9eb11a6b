/**
 * node-llama-cpp (llama.cpp's Node binding), the peer the `peer` bench case compares Tessera with. It lives in its own
 * package, bench/peer/ (package.json + package-lock.json, pinned exactly), because it ships ~600 MB of prebuilt
 * llama.cpp binaries that `npm ci` for the server must not pull: only the peer case installs it, from the npm registry
 * (`npm ci --ignore-scripts`: its postinstall step would try to download or build llama.cpp; the prebuilt binaries
 * come as its platform packages). It is loaded by path at run time and typed here by the few calls used, so the
 * project type-checks and its tests run whether or not the peer is installed.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const NODE_LLAMA_CPP_VERSION = '3.21.1';

/** bench/peer/, the peer's own package. */
export const PEER_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'peer');

const PACKAGE_DIR = path.join(PEER_DIR, 'node_modules', 'node-llama-cpp');

/** A token id of the model's vocabulary (node-llama-cpp brands it; the ids are plain numbers). */
export type LlamaToken = number;

export interface LlamaContextSequence {
  /** Feeds `tokens`, then yields one generated token per iteration (greedy at temperature 0) until the caller stops. */
  evaluate(tokens: LlamaToken[], options?: { temperature?: number; yieldEogToken?: boolean }): AsyncGenerator<LlamaToken, void, void>;
  /** Feeds the tokens; for items given with generateNext.probabilities, returns the next-token distribution after them. */
  controlledEvaluate(input: Array<LlamaToken | [LlamaToken, { generateNext: { probabilities: true } }]>): Promise<Array<{ next: { probabilities?: Map<LlamaToken, number> } } | undefined>>;
  clearHistory(): Promise<void>;
  dispose(): void;
}

export interface LlamaContext {
  getSequence(): LlamaContextSequence;
  dispose(): Promise<void>;
}

export interface LlamaContextOptions {
  /** Tokens per sequence. */
  contextSize: number;
  sequences: number;
  threads: number;
  batchSize?: number;
  /** GGML type name of the KV cache (default F16). */
  experimentalKvCacheKeyType?: string;
  experimentalKvCacheValueType?: string;
  /** Default 'auto' (on where supported: on the CPU it computes attention in F16 whatever the KV cache type). */
  flashAttention?: boolean;
}

export interface LlamaModel {
  createContext(options: LlamaContextOptions): Promise<LlamaContext>;
  dispose(): Promise<void>;
}

export interface Llama {
  loadModel(options: { modelPath: string; gpuLayers: number }): Promise<LlamaModel>;
  dispose(): Promise<void>;
  readonly buildType: string;
}

interface NodeLlamaCppModule {
  getLlama(options: { gpu: false; build: 'never'; logLevel: string; maxThreads?: number }): Promise<Llama>;
}

/** The installed version of node-llama-cpp under bench/peer, or null. */
export function installedPeerVersion(): string | null {
  try {
    return (JSON.parse(fs.readFileSync(path.join(PACKAGE_DIR, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return null;
  }
}

export function peerInstalled(): boolean {
  return installedPeerVersion() === NODE_LLAMA_CPP_VERSION;
}

/** `npm ci` in bench/peer (npm registry only, no install scripts), unless the pinned version is there already. */
export function ensurePeerInstalled(log: (message: string) => void): void {
  if (peerInstalled()) return;
  log(`installing node-llama-cpp ${NODE_LLAMA_CPP_VERSION} into ${PEER_DIR} (npm ci from its lockfile; ~600 MB of prebuilt llama.cpp binaries, once)`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const result = spawnSync(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: PEER_DIR, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0 || !peerInstalled()) {
    throw new Error(`could not install node-llama-cpp ${NODE_LLAMA_CPP_VERSION} in ${PEER_DIR} (npm ci exit ${result.status}${result.error ? `: ${result.error.message}` : ''})`);
  }
}

/** llama.cpp on the CPU through node-llama-cpp's prebuilt binary (never builds, never downloads). */
export async function loadLlama(options: { maxThreads: number; logLevel?: 'error' | 'warn' }): Promise<Llama> {
  if (!peerInstalled()) throw new Error(`node-llama-cpp ${NODE_LLAMA_CPP_VERSION} is not installed in ${PEER_DIR} (found ${installedPeerVersion() ?? 'none'})`);
  const entry = createRequire(path.join(PEER_DIR, 'package.json')).resolve('node-llama-cpp');
  const mod = (await import(pathToFileURL(entry).href)) as NodeLlamaCppModule;
  return mod.getLlama({ gpu: false, build: 'never', logLevel: options.logLevel ?? 'error', maxThreads: options.maxThreads });
}
