/** Engine-side state of one request, from submit to finish. */
import type { GenerationEvent, ValidGenerateRequest } from './request.ts';
import type { Detokenizer } from './output/incremental-detokenizer.ts';
import { createSequenceOutput, type SequenceOutput } from './output/sequence-output.ts';
import { createPenaltyState } from './sampler/penalties.ts';
import { createPrng, randomSeed } from './sampler/prng.ts';
import type { SamplingState } from './sampler/sampler.ts';

export type SequencePhase = 'waiting' | 'running' | 'finished';

export interface Sequence {
  readonly request: ValidGenerateRequest;
  /** Engine clock at submit. */
  readonly arrivalMs: number;
  phase: SequencePhase;
  /** Prompt then generated ids. Positions [0, numComputed) are in the KV cache. */
  readonly tokenIds: number[];
  numComputed: number;
  /** Executor sequence id of the current residency (a new one after each admission), -1 while waiting. */
  seqId: number;
  /** Admission counter value of the current residency (higher = admitted more recently). */
  admittedOrder: number;
  /** KV blocks of the current residency, covering positions [0, blockTable.length * blockSizeTokens). */
  blockTable: number[];
  /** Device slot of the adapter (0 = base) while an adapter reference is held. */
  adapterSlot: number;
  adapterHeld: boolean;
  numPreemptions: number;
  /** The request's seed, or the random one drawn for it: seeds the host PRNG and the executor's in-graph stream. */
  readonly seed: number;
  readonly sampling: SamplingState;
  readonly output: SequenceOutput;
}

/** Tokens still to be fed to the model: 1 for a decode, more for a (re)prefill. */
export function numPendingTokens(seq: Sequence): number {
  return seq.tokenIds.length - seq.numComputed;
}

export interface CreateSequenceOptions {
  request: ValidGenerateRequest;
  arrivalMs: number;
  detokenizer: Detokenizer | null;
  eosTokenIds: ReadonlySet<number>;
  emit(event: GenerationEvent): void;
}

export function createSequence(opts: CreateSequenceOptions): Sequence {
  const { request } = opts;
  const seed = request.sampling.seed ?? randomSeed();
  const sampling: SamplingState = {
    params: request.sampling,
    prng: createPrng(seed),
    penalties: createPenaltyState(request.sampling, request.promptTokenIds),
    topNLogprobs: request.topNLogprobs,
  };
  return {
    request,
    arrivalMs: opts.arrivalMs,
    phase: 'waiting',
    tokenIds: request.promptTokenIds.slice(),
    numComputed: 0,
    seqId: -1,
    admittedOrder: -1,
    blockTable: [],
    adapterSlot: 0,
    adapterHeld: false,
    numPreemptions: 0,
    seed,
    sampling,
    output: createSequenceOutput({ request, detokenizer: opts.detokenizer, eosTokenIds: opts.eosTokenIds, emit: opts.emit }),
  };
}
