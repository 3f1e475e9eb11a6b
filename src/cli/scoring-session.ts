/**
 * A model served the way `tessera serve` serves it, for scoring fixed token windows: the worker-thread executor
 * (ThreadExecutor) and the adapter manager (PEFT directories and .cpeft files read, checked, cached and written into
 * device slots exactly as for LoadAdapter), driven by teacher forcing (src/engine/scoring) instead of the sampler.
 * Used by `tessera perplexity`, the trained-fixture test and the quantization and ComPEFT benchmarks.
 */
import { createAdapterManager, type AdapterManager } from '../adapters/adapter-manager.ts';
import { TesseraError } from '../errors.ts';
import type { ExecutorLayout } from '../engine/executor.ts';
import { teacherForcedNll, type ScoredWindow, type TeacherForcedOptions, type WindowNll } from '../engine/scoring/teacher-forced-loss.ts';
import { readManifest } from '../model/converted-model.ts';
import { ThreadExecutor } from '../parallel/thread-executor.ts';

export interface ScoringSessionOptions {
  /** A converted model directory. */
  modelDir: string;
  /** Device slots including slot 0 (base); default 8. */
  numAdapterSlots?: number;
  /** Default 64. */
  maxAdapterRank?: number;
  /** Default 256 MiB. */
  kvCacheBytes?: number;
  /** Directories adapter sources must lie in (as --adapter-root for the server). */
  adapterRoots?: string[];
  intraOpThreads?: number;
}

export interface ScoringSession {
  readonly layout: ExecutorLayout;
  readonly modelId: string;
  /**
   * Loads an adapter through the adapter manager, waits until it is resident and returns its device slot; the session
   * holds a reference on it (as a running request does), so it stays in that slot until unloadAdapter. `tenantId` scopes the id as the server does (null: shared).
   */
  loadAdapter(adapterId: string, source: string, tenantId?: string | null): Promise<number>;
  /** Drops the adapter and frees its slot. */
  unloadAdapter(adapterId: string, tenantId?: string | null): Promise<void>;
  /** Per-window next-token nll through the executor (see teacherForcedNll). */
  score(windows: readonly ScoredWindow[], opts?: Pick<TeacherForcedOptions, 'maxWindowsPerStep' | 'onLogits'>): Promise<WindowNll[]>;
  /** Idempotent. */
  shutdown(): Promise<void>;
}

const POLL_MS = 5;
const RESIDENT_TIMEOUT_MS = 60_000;

export async function openScoringSession(opts: ScoringSessionOptions): Promise<ScoringSession> {
  const manifest = readManifest(opts.modelDir);
  const numSlots = opts.numAdapterSlots ?? 8;
  const maxRank = opts.maxAdapterRank ?? 64;
  const executor = await ThreadExecutor.start({
    modelDir: opts.modelDir,
    kvCacheBytes: opts.kvCacheBytes ?? 256 * 1024 * 1024,
    numAdapterSlots: numSlots,
    maxAdapterRank: maxRank,
    ...(opts.intraOpThreads !== undefined ? { intraOpThreads: opts.intraOpThreads } : {}),
  });
  const adapters: AdapterManager = createAdapterManager({
    slots: executor,
    config: manifest.config,
    modelId: manifest.modelId,
    numSlots,
    maxRank,
    hostCacheBytes: 1 << 30,
    allowedRoots: opts.adapterRoots ?? [],
  });
  const held = new Map<string, number>(); // `${tenant}/${id}` -> slot acquired
  let nextSeqId = 1;
  let nextStepId = 1;
  let pendingRelease: number[] = [];
  let shutdown: Promise<void> | null = null;
  const keyOf = (id: string, tenant: string | null) => `${tenant ?? ''}/${id}`;

  return {
    layout: executor.layout,
    modelId: manifest.modelId,

    async loadAdapter(adapterId, source, tenantId = null) {
      await adapters.load({ adapterId, source, pin: false, tenantId });
      const deadline = Date.now() + RESIDENT_TIMEOUT_MS;
      for (;;) {
        const slot = adapters.acquire(adapterId, tenantId);
        if (typeof slot === 'number') {
          const key = keyOf(adapterId, tenantId);
          const before = held.get(key);
          if (before !== undefined) adapters.release(adapterId, before);
          held.set(key, slot);
          return slot;
        }
        if (slot !== 'pending') throw slot;
        if (Date.now() > deadline) throw new TesseraError('INTERNAL', `adapter ${adapterId} did not become resident within ${RESIDENT_TIMEOUT_MS} ms`);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    },

    async unloadAdapter(adapterId, tenantId = null) {
      const key = keyOf(adapterId, tenantId);
      const slot = held.get(key);
      if (slot !== undefined) adapters.release(adapterId, slot);
      held.delete(key);
      await adapters.unload({ adapterId, tenantId });
    },

    async score(windows, scoreOpts = {}) {
      const result = await teacherForcedNll(executor, windows, { ...scoreOpts, firstSeqId: nextSeqId, firstStepId: nextStepId, release: pendingRelease });
      nextSeqId = result.nextSeqId;
      nextStepId = result.nextStepId;
      pendingRelease = result.pendingRelease;
      return result.windows;
    },

    shutdown() {
      shutdown ??= (async () => {
        await adapters.shutdown();
        await executor.shutdown();
      })();
      return shutdown;
    },
  };
}
