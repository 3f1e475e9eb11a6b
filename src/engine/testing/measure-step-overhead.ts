/**
 * Engine overhead per step (schedule + sample + update, no model): `npx tsx src/engine/testing/measure-step-overhead.ts`.
 * 16 sequences decoding, vocab 49152, logits precomputed (the executor's work is not counted). Prints JSON.
 */
import type { StepPlan, StepResult } from '../executor.ts';
import type { SamplingParams } from '../request.ts';
import { createPrng } from '../sampler/prng.ts';
import { createScheduler } from '../scheduler/scheduler.ts';
import { createSequence } from '../sequence.ts';
import { createManualClock } from './manual-clock.ts';
import { createRequests } from './create-requests.ts';

const vocabSize = 49_152;
const numSequences = 16;
const steps = 200;
const layout = { vocabSize, maxContextTokens: 4096, numKvBlocks: 4096, blockSizeTokens: 16, numAdapterSlots: 1 };
const prng = createPrng(1);
const logits = Float32Array.from({ length: numSequences * vocabSize }, () => (prng.nextFloat() - 0.5) * 24);

function measure(name: string, sampling: Partial<SamplingParams>, topNLogprobs: number): Record<string, unknown> {
  const scheduler = createScheduler({ layout, clock: createManualClock(), maxRunningSequences: numSequences });
  const reqs = createRequests(numSequences, { vocabSize, promptTokens: 32, maxNewTokens: 4000, sampling, topNLogprobs });
  for (const request of reqs) {
    scheduler.enqueue(createSequence({ request, arrivalMs: 0, detokenizer: null, eosTokenIds: new Set(), emit: () => {} }));
  }
  const resultFor = (plan: StepPlan): StepResult => ({
    stepId: plan.stepId,
    outcomes: plan.sequences.map((s, i) => ({ kind: 'logits' as const, seqId: s.seqId, logitsRow: i })),
    logits,
    vocabSize,
    runtimeMs: 0,
  });
  const times: number[] = [];
  for (let i = 0; i < steps + 20; i++) {
    const t0 = performance.now();
    const plan = scheduler.schedule();
    const result = resultFor(plan);
    scheduler.update(plan, result);
    if (i >= 20) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const pick = (q: number): number => Number(times[Math.floor(q * (times.length - 1))].toFixed(3));
  return { name, numSequences, vocabSize, medianMs: pick(0.5), p90Ms: pick(0.9), minMs: pick(0) };
}

const rows = [
  measure('greedy, logprob only', {}, 0),
  measure('greedy, top-5 logprobs', {}, 5),
  measure('temperature 0.8 + top-p 0.9, top-5', { temperature: 0.8, topP: 0.9 }, 5),
  measure('temperature 0.8 + top-k 50 + penalties', { temperature: 0.8, topK: 50, repetitionPenalty: 1.1, frequencyPenalty: 0.3 }, 0),
];
console.log(JSON.stringify(rows, null, 1));
