type NumberArray = Float32Array | Int32Array | Uint8Array;

/** The parts one after another, in a new array of `Type` as long as all of them together. */
export function concatArrays<T extends NumberArray>(Type: new (length: number) => T, parts: readonly T[]): T {
  const out = new Type(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p as ArrayLike<number>, offset);
    offset += p.length;
  }
  return out;
}
