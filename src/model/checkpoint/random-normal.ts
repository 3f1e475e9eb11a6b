/**
 * Deterministic pseudo-random numbers for generated checkpoints. A stream is named by (seed, label): the label
 * (e.g. a tensor name) is hashed with 64-bit FNV-1a, mixed with the seed through SplitMix64, and the result seeds
 * xoshiro128** (32-bit words: fast without BigInt). Normals come from the Box–Muller transform (polar form for bulk fills).
 * Same seed and label => the same numbers on every run and platform (V8's Math.log/cos/sin are fdlibm ports).
 */

const MASK64 = (1n << 64n) - 1n;

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

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class RandomStream {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(seed: number, label: string) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer. Given: ${seed}`);
    const state = { s: (BigInt(seed) ^ fnv1a64(label)) & MASK64 };
    const a = splitMix64(state);
    const b = splitMix64(state);
    this.s0 = Number(a & 0xffffffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffffffffn);
    this.s3 = Number(b >> 32n);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** Next 32 random bits as an unsigned integer (xoshiro128**). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in the open interval (0, 1). */
  nextUniform(): number {
    return (this.nextUint32() + 0.5) / 4294967296;
  }

  /** Standard normal N(0, 1). */
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
