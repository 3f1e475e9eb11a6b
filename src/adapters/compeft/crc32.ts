/**
 * CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF), the checksum zlib,
 * PNG and gzip use. Table-driven, one byte per step. Check value: crc32("123456789") = 0xCBF43926.
 */

const CRC32_POLYNOMIAL_REFLECTED = 0xedb88320;

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let reg = byte;
    for (let bit = 0; bit < 8; bit++) {
      reg = reg & 1 ? (reg >>> 1) ^ CRC32_POLYNOMIAL_REFLECTED : reg >>> 1;
    }
    table[byte] = reg >>> 0;
  }
  return table;
}

const TABLE = buildTable();

/** CRC-32 of bytes[start, end). Returns an unsigned 32-bit integer. */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let reg = 0xffffffff;
  for (let i = start; i < end; i++) {
    reg = TABLE[(reg ^ bytes[i]) & 0xff] ^ (reg >>> 8);
  }
  return (reg ^ 0xffffffff) >>> 0;
}
