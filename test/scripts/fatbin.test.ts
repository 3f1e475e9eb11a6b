import { describe, expect, it } from 'vitest';
import { keepArch } from '../../scripts/lib/fatbin.ts';

/** One fatbin image: {kind, header size 64, payload size, arch at +28} followed by its payload bytes. */
function image(kind: number, arch: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(64);
  h.writeUInt16LE(kind, 0);
  h.writeUInt32LE(64, 4);
  h.writeBigUInt64LE(BigInt(payload.length), 8);
  h.writeUInt32LE(arch, 28);
  return Buffer.concat([h, payload]);
}

/** A minimal ELF64 file whose only sections are .shstrtab and .nv_fatbin holding `fatbin`. */
function elfWith(fatbin: Buffer): Buffer {
  const names = Buffer.from('\0.shstrtab\0.nv_fatbin\0');
  const dataAt = 64;
  const fatbinAt = dataAt + names.length + ((8 - (names.length % 8)) % 8);
  const shoff = fatbinAt + fatbin.length + ((8 - (fatbin.length % 8)) % 8);
  const out = Buffer.alloc(shoff + 3 * 64);
  out.writeUInt32BE(0x7f454c46, 0);
  out[4] = 2;
  out[5] = 1;
  out.writeBigUInt64LE(BigInt(shoff), 0x28);
  out.writeUInt16LE(64, 0x3a);
  out.writeUInt16LE(3, 0x3c);
  out.writeUInt16LE(1, 0x3e);
  names.copy(out, dataAt);
  fatbin.copy(out, fatbinAt);
  const section = (i: number, name: number, offset: number, size: number) => {
    out.writeUInt32LE(name, shoff + i * 64);
    out.writeBigUInt64LE(BigInt(offset), shoff + i * 64 + 0x18);
    out.writeBigUInt64LE(BigInt(size), shoff + i * 64 + 0x20);
  };
  section(1, 1, dataAt, names.length);
  section(2, 11, fatbinAt, fatbin.length);
  return out;
}

function container(images: Buffer[]): Buffer {
  const body = Buffer.concat(images);
  const h = Buffer.alloc(16);
  h.writeUInt32LE(0xba55ed50, 0);
  h.writeUInt16LE(1, 4);
  h.writeUInt16LE(16, 6);
  h.writeBigUInt64LE(BigInt(body.length), 8);
  return Buffer.concat([h, body]);
}

describe('keepArch: zero the fatbin images a GPU architecture cannot use', () => {
  it('keeps SASS for exactly the architecture and PTX up to it; zeroes the rest, headers and length untouched', () => {
    const sass80 = Buffer.alloc(40, 0x80);
    const sass90 = Buffer.alloc(48, 0x90);
    const ptx75 = Buffer.alloc(24, 0x75);
    const ptx120 = Buffer.alloc(16, 0x12);
    const fatbin = Buffer.concat([container([image(2, 80, sass80), image(2, 90, sass90)]), Buffer.alloc(8), container([image(1, 75, ptx75), image(1, 120, ptx120)])]);
    const elf = elfWith(fatbin);
    const before = Buffer.from(elf);
    const summary = keepArch(elf, 90);
    expect(summary.images).toEqual({
      'sass:sm_80': { count: 1, bytes: 40, kept: false },
      'sass:sm_90': { count: 1, bytes: 48, kept: true },
      'ptx:sm_75': { count: 1, bytes: 24, kept: true },
      'ptx:sm_120': { count: 1, bytes: 16, kept: false },
    });
    expect(summary.zeroedBytes).toBe(56);
    expect(elf.length).toBe(before.length);
    expect(elf.indexOf(sass80)).toBe(-1);
    expect(elf.indexOf(sass90)).toBeGreaterThan(0);
    expect(elf.indexOf(ptx75)).toBeGreaterThan(0);
    expect(elf.indexOf(ptx120)).toBe(-1);
    // Only payload bytes changed.
    let changed = 0;
    for (let i = 0; i < elf.length; i++) if (elf[i] !== before[i]) changed++;
    expect(changed).toBe(56);
  });

  it('refuses what it does not understand instead of writing a broken library', () => {
    const overrun = container([image(2, 80, Buffer.alloc(8))]);
    overrun.writeBigUInt64LE(100n, 16 + 8); // the image claims more bytes than its container holds
    expect(() => keepArch(elfWith(overrun), 90)).toThrow(/does not fit its container/);
    expect(() => keepArch(elfWith(Buffer.from('garbage!garbage!garbage!')), 90)).toThrow(/unexpected bytes/);
    expect(() => keepArch(Buffer.alloc(128), 90)).toThrow('not a 64-bit little-endian ELF file');
  });
});
