/**
 * Per-request seeded pseudo-random stream: xoshiro128** (Blackman & Vigna; the core of src/util/seeded-random.ts),
 * state seeded by splitmix32 over the two 32-bit halves of the seed. One stream per request, advanced once per sampled
 * token, so a request's draws never depend on what else is in the batch.
 */
import { xoshiro128ss } from '../../util/seeded-random.ts';

const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;

/** Serialisable state: the four 32-bit words. */
export type PrngState = [number, number, number, number];

export interface Prng {
  /** Uniform float in [0, 1) with 53 random bits; one call = one advance of the stream. */
  nextFloat(): number;
  state(): PrngState;
}

function splitmix32Step(x: number): [next: number, out: number] {
  const next = (x + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return [next, z >>> 0];
}

/** Seed must be a safe non-negative integer (validated upstream). */
export function createPrng(seed: number): Prng {
  const lo = seed % TWO_POW_32 >>> 0;
  const hi = Math.floor(seed / TWO_POW_32) >>> 0;
  let x = (lo ^ Math.imul(hi, 0x27d4eb2d)) | 0;
  const s = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    const [next, out] = splitmix32Step(x ^ (i === 2 ? hi : 0));
    x = next;
    s[i] = out;
  }
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1; // all-zero state is a fixed point
  return fromWords(s);
}

export function prngFromState(state: PrngState): Prng {
  return fromWords(Uint32Array.from(state));
}

function fromWords(s: Uint32Array): Prng {
  return {
    nextFloat(): number {
      const a = xoshiro128ss(s) >>> 5; // 27 bits
      const b = xoshiro128ss(s) >>> 6; // 26 bits
      return (a * 67108864 + b) / TWO_POW_53;
    },
    state: () => [s[0], s[1], s[2], s[3]],
  };
}

/** A fresh random seed for requests that did not give one. */
export function randomSeed(): number {
  return Math.floor(Math.random() * TWO_POW_32) * 2048 + Math.floor(Math.random() * 2048);
}
