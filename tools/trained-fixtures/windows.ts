/** Held-out windows: fixed token spans the trainer and Tessera both score. */

/** `count` windows of `length` tokens spread evenly over the stream (non-overlapping when it is long enough). */
export function evenWindows(stream: number[], count: number, length: number): number[][] {
  if (stream.length < length) throw new Error(`held-out stream of ${stream.length} tokens is shorter than one window (${length})`);
  const stride = count > 1 ? (stream.length - length) / (count - 1) : 0;
  return Array.from({ length: count }, (_, i) => {
    const start = Math.floor(i * stride);
    return stream.slice(start, start + length);
  });
}
