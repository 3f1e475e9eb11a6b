import { closeSync, openSync, readSync } from 'node:fs';

/**
 * The dynamic-linking facts of a shared library, read from its ELF file (System V gABI, "Dynamic Section"): the
 * libraries it needs (DT_NEEDED), its own name (DT_SONAME) and where it asks the loader to look (DT_RUNPATH/DT_RPATH).
 * 64-bit little-endian only (x86-64, aarch64), which is what ONNX Runtime ships for Linux. Reads the headers and the
 * two sections it needs, never the whole file (a CUDA provider is 230 MB).
 */
export interface ElfDynamic {
  needed: string[];
  soname: string | null;
  runpath: string | null;
}

const SHT_DYNAMIC = 6;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_RPATH = 15n;
const DT_SONAME = 14n;
const DT_RUNPATH = 29n;

export function readElfDynamic(path: string): ElfDynamic {
  const fd = openSync(path, 'r');
  try {
    const read = (offset: number, length: number): Buffer => {
      const buf = Buffer.alloc(length);
      const got = readSync(fd, buf, 0, length, offset);
      if (got !== length) throw new Error(`${path}: not an ELF shared library (truncated at byte ${offset + got})`);
      return buf;
    };
    const ident = read(0, 64);
    if (ident.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${path}: not an ELF file`);
    if (ident[4] !== 2 || ident[5] !== 1) throw new Error(`${path}: only 64-bit little-endian ELF is supported`);
    const shoff = Number(ident.readBigUInt64LE(0x28));
    const shentsize = ident.readUInt16LE(0x3a);
    const shnum = ident.readUInt16LE(0x3c);
    if (shoff === 0 || shnum === 0 || shentsize < 64) throw new Error(`${path}: ELF file without section headers`);
    const sections = read(shoff, shnum * shentsize);
    const section = (i: number) => {
      const at = i * shentsize;
      return { type: sections.readUInt32LE(at + 4), offset: Number(sections.readBigUInt64LE(at + 0x18)), size: Number(sections.readBigUInt64LE(at + 0x20)), link: sections.readUInt32LE(at + 0x28) };
    };
    const out: ElfDynamic = { needed: [], soname: null, runpath: null };
    for (let i = 0; i < shnum; i++) {
      const dyn = section(i);
      if (dyn.type !== SHT_DYNAMIC) continue;
      if (dyn.link >= shnum) throw new Error(`${path}: dynamic section links to a missing string table`);
      const strtab = section(dyn.link);
      const strings = read(strtab.offset, strtab.size);
      const str = (at: number) => {
        const end = strings.indexOf(0, at);
        if (at >= strings.length || end < 0) throw new Error(`${path}: dynamic string out of range`);
        return strings.toString('utf8', at, end);
      };
      const entries = read(dyn.offset, dyn.size);
      for (let at = 0; at + 16 <= entries.length; at += 16) {
        const tag = entries.readBigInt64LE(at);
        const value = Number(entries.readBigUInt64LE(at + 8));
        if (tag === DT_NULL) break;
        if (tag === DT_NEEDED) out.needed.push(str(value));
        else if (tag === DT_SONAME) out.soname = str(value);
        else if (tag === DT_RUNPATH || (tag === DT_RPATH && out.runpath === null)) out.runpath = str(value);
      }
      return out;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}
