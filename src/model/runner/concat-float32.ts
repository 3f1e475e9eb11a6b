/** Concatenates float32 parts into one array of `length` (the sum of the parts); a single part is returned as is. */
export function concatFloat32(parts: Float32Array[], length: number): Float32Array {
  if (parts.length === 1 && parts[0].length === length) return parts[0];
  const out = new Float32Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
