/**
 * Append-only bit stream, least significant bit first: stream bit t lives in byte t >> 3 at bit position t & 7.
 * Used by the ComPEFT encoder for Rice-coded gaps, bitmaps and sign bits.
 */
export class BitWriter {
  private bytes: Uint8Array;
  private numBytes = 0;
  /** Pending bits not yet flushed to `bytes` (fewer than 8 between calls). */
  private acc = 0;
  private accBits = 0;

  constructor(initialCapacityBytes = 1024) {
    this.bytes = new Uint8Array(Math.max(16, initialCapacityBytes));
  }

  /** Number of bits written so far. */
  get lengthBits(): number {
    return this.numBytes * 8 + this.accBits;
  }

  /** Writes the low `numBits` bits of `value` (0 <= numBits <= 24), least significant first. */
  writeBits(value: number, numBits: number): void {
    if (numBits === 0) return;
    this.acc |= (value & ((1 << numBits) - 1)) << this.accBits;
    this.accBits += numBits;
    while (this.accBits >= 8) {
      this.pushByte(this.acc & 0xff);
      this.acc >>>= 8;
      this.accBits -= 8;
    }
  }

  writeBit(bit: 0 | 1 | boolean): void {
    this.writeBits(bit ? 1 : 0, 1);
  }

  /** Unary code of q: q one-bits followed by a zero bit. */
  writeUnary(q: number): void {
    let left = q;
    while (left >= 24) {
      this.writeBits(0xffffff, 24);
      left -= 24;
    }
    this.writeBits((1 << left) - 1, left + 1);
  }

  /** Pads with zero bits to the next byte boundary and returns the bytes written (a copy). */
  finish(): Uint8Array {
    if (this.accBits > 0) {
      this.pushByte(this.acc & 0xff);
      this.acc = 0;
      this.accBits = 0;
    }
    return this.bytes.slice(0, this.numBytes);
  }

  private pushByte(byte: number): void {
    if (this.numBytes === this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes[this.numBytes++] = byte;
  }
}
