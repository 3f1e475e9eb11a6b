import type { Executor, SequenceWork, StepPlan, StepResult } from '../../src/engine/executor.ts';

/** Greedy decoding driven straight through an Executor: returns every step's logits rows and each sequence's tokens. */
export interface DriveResult {
  /** Per step, per seqId: that row's logits. */
  logits: Array<Map<number, Float32Array>>;
  tokens: Map<number, number[]>;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/**
 * Prefills `prompts` (sequence i uses adapter slot `slots[i]` and KV blocks [4i, 4i + 4)), the last prompt one step
 * late so a step mixes decode and prefill rows, then decodes `decodeSteps` steps greedily.
 */
export async function driveGreedy(executor: Executor, prompts: number[][], slots: number[], decodeSteps: number, blockSizeTokens: number): Promise<DriveResult> {
  const tokens = new Map<number, number[]>();
  const position = new Map<number, number>();
  const logits: DriveResult['logits'] = [];
  const table = (i: number) => Array.from({ length: 4 }, (_, k) => 4 * i + k);
  let stepId = 0;
  const late = prompts.length - 1;
  for (let step = 0; step <= decodeSteps; step++) {
    const sequences: SequenceWork[] = [];
    prompts.forEach((prompt, i) => {
      const started = tokens.has(i);
      if (!started && (step === 0 ? i !== late : i === late && step === 1)) {
        sequences.push({ seqId: i, tokenIds: prompt, startPosition: 0, blockTable: table(i), adapterSlot: slots[i], sampleNext: true });
      } else if (started) {
        const out = tokens.get(i)!;
        sequences.push({ seqId: i, tokenIds: [out[out.length - 1]], startPosition: position.get(i)!, blockTable: table(i), adapterSlot: slots[i], sampleNext: true });
      }
    });
    void blockSizeTokens;
    const plan: StepPlan = { stepId: ++stepId, sequences };
    const result: StepResult = await executor.execute(plan);
    const rows = new Map<number, Float32Array>();
    for (const o of result.outcomes) {
      if (o.error) throw new Error(`seq ${o.seqId}: ${o.error}`);
      const row = result.logits.slice(o.logitsRow * result.vocabSize, (o.logitsRow + 1) * result.vocabSize);
      rows.set(o.seqId, row);
      const seq = sequences.find((s) => s.seqId === o.seqId)!;
      position.set(o.seqId, seq.startPosition + seq.tokenIds.length);
      tokens.set(o.seqId, [...(tokens.get(o.seqId) ?? []), argmax(row)]);
    }
    logits.push(rows);
  }
  return { logits, tokens };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
