/**
 * The project's one seeded pseudo-random generator: generated checkpoints and adapters, synthetic test data, the load
 * generator's workloads and the benchmarks all draw from it, so the same seed gives the same numbers on every run
 * and platform (V8's Math.log/cos/sin are fdlibm ports). Not cryptographic.
 *
 * Core: xoshiro128** (Blackman & Vigna), 32-bit words, fast without BigInt; the sampler's per-request stream
 * (src/engine/sampler/prng.ts) steps the same core from its own seeding. A SeededRandom stream is named by
 * (seed, label): the label (e.g. a tensor name) is hashed with 64-bit FNV-1a, mixed with the seed through SplitMix64,
 * and the result seeds the core, so streams with different labels are independent.
 *
 * Normals: the Box–Muller transform (nextNormal, one value per call with a spare), and Marsaglia's polar method for
 * bulk fills (fillNormal).
 */

const MASK64 = (1n << 64n) - 1n;
const TWO_POW_32 = 4294967296;

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Advances the xoshiro128** state `s` (four 32-bit words, not all zero) in place; returns the next 32 random bits. */
export function xoshiro128ss(s: Uint32Array): number {
  const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
  const t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

function fnv1a64(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & MASK64;
  }
  return h;
}

/** One SplitMix64 step: advances `state` and returns the mixed output. */
function splitMix64(state: { s: bigint }): bigint {
  state.s = (state.s + 0x9e3779b97f4a7c15n) & MASK64;
  let z = state.s;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

export class SeededRandom {
  private readonly s = new Uint32Array(4);
  private spare: number | null = null;

  /** `seed`: a non-negative safe integer; `label` names an independent stream for the same seed. */
  constructor(seed: number, label = '') {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer. Given: ${seed}`);
    const state = { s: (BigInt(seed) ^ fnv1a64(label)) & MASK64 };
    const a = splitMix64(state);
    const b = splitMix64(state);
    this.s[0] = Number(a & 0xffffffffn);
    this.s[1] = Number(a >> 32n);
    this.s[2] = Number(b & 0xffffffffn);
    this.s[3] = Number(b >> 32n);
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1; // the all-zero state is a fixed point
  }

  /** Next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    return xoshiro128ss(this.s);
  }

  /** Uniform in the open interval (0, 1): never 0, so log() of it is finite. */
  nextUniform(): number {
    return (this.nextUint32() + 0.5) / TWO_POW_32;
  }

  /** Integer uniform in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.nextUniform() * n);
  }

  /** Standard normal N(0, 1) (Box–Muller: two values per pair of uniforms, the second kept for the next call). */
  nextNormal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.nextUniform()));
    const theta = 2 * Math.PI * this.nextUniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /**
   * Fills `out` with mean + std * N(0, 1), two values per accepted point of Marsaglia's polar method (the
   * Box–Muller transform without sin/cos: draw (u, v) uniform in the square, keep points inside the unit disc).
   * Independent of nextNormal's spare value.
   */
  fillNormal(out: Float32Array, std: number, mean = 0): Float32Array {
    const scale = 1 / 2147483648; // maps a signed 32-bit integer into [-1, 1)
    let i = 0;
    while (i < out.length) {
      const u = (this.nextUint32() | 0) * scale;
      const v = (this.nextUint32() | 0) * scale;
      const r2 = u * u + v * v;
      if (r2 >= 1 || r2 === 0) continue;
      const f = std * Math.sqrt((-2 * Math.log(r2)) / r2);
      out[i++] = mean + u * f;
      if (i < out.length) out[i++] = mean + v * f;
    }
    return out;
  }
}

/** `count` samples of N(0, std²) from the stream (seed, label). */
export function seededNormals(count: number, seed: number, std = 1, label = 'normals'): Float32Array {
  return new SeededRandom(seed, label).fillNormal(new Float32Array(count), std);
}
