/**
 * The per-run LoRA inputs of the multi-LoRA graphs (kernels/multi-lora.ts) for a batch of rows of `stepLength` tokens
 * each: the distinct adapter slots used, and a [used, rows * stepLength, 1] mask holding each token's adapter scale at
 * its adapter's position.
 */
export function loraRowInputs(slots: readonly number[], stepLength: number, scales: Float32Array): { used: BigInt64Array; mask: Float32Array; numUsed: number; numTokens: number } {
  const used = [...new Set(slots.filter((s) => s !== 0))].sort((x, y) => x - y);
  const numTokens = slots.length * stepLength;
  const mask = new Float32Array(used.length * numTokens);
  slots.forEach((slot, row) => {
    const u = used.indexOf(slot);
    if (u >= 0) mask.fill(scales[slot], u * numTokens + row * stepLength, u * numTokens + (row + 1) * stepLength);
  });
  return { used: BigInt64Array.from(used, (s) => BigInt(s)), mask, numUsed: used.length, numTokens };
}
