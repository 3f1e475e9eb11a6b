/**
 * The per-run LoRA inputs of the multi-LoRA graphs (kernels/multi-lora.ts) for a batch's rows: the distinct adapter
 * slots used, and a [used, rows, 1, 1] mask holding each row's adapter scale at its adapter's position.
 */
export function loraRowInputs(slots: readonly number[], scales: Float32Array): { used: BigInt64Array; mask: Float32Array; numUsed: number } {
  const used = [...new Set(slots.filter((s) => s !== 0))].sort((x, y) => x - y);
  const mask = new Float32Array(used.length * slots.length);
  slots.forEach((slot, row) => {
    const u = used.indexOf(slot);
    if (u >= 0) mask[u * slots.length + row] = scales[slot];
  });
  return { used: BigInt64Array.from(used, (s) => BigInt(s)), mask, numUsed: used.length };
}
