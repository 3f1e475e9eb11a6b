/**
 * Makes a copy of a CUDA shared library that compresses to a fraction of its size for one GPU architecture: in its
 * `.nv_fatbin` section every embedded image the chosen architecture can never load is overwritten with zeros (same
 * length, same headers, so every offset in the file stays valid). Kept: machine code (SASS) for exactly `--arch`, and
 * PTX for `--arch` or lower (the driver may compile that); zeroed: SASS for other architectures (SASS runs only on its
 * own major version) and PTX for newer ones. The driver picks an image by the headers, which are untouched, and never
 * reads the zeroed ones on that GPU. Used by scripts/device-check-pack.sh so ONNX Runtime's CUDA provider (230 MB,
 * SASS for sm_75/80/86/89/90/120) travels to a Hopper (sm_90) test machine within its transfer limit.
 *
 * The layout (no public specification; as documented by NVIDIA's fatbinary headers and the cuobjdump tools' output):
 * the section holds containers, each a 16-byte header {magic 0xBA55ED50 u32, version u16, header size u16, payload
 * size u64} followed by entries {kind u16 (1 PTX, 2 ELF/SASS), u16, header size u32, payload size u64, ..., at +28 the
 * architecture u32 (e.g. 90)} each followed by its payload. Anything that does not tile exactly is refused.
 */
const FATBIN_MAGIC = 0xba55ed50;
const KIND_PTX = 1;
const KIND_ELF = 2;

export interface FatbinSummary {
  /** Per `kind:arch`: images and payload bytes, kept or zeroed. */
  images: Record<string, { count: number; bytes: number; kept: boolean }>;
  zeroedBytes: number;
}

/** Zeroes, in place, every image of the `.nv_fatbin` section of `elf` that an sm_`arch` GPU cannot use. */
export function keepArch(elf: Buffer, arch: number): FatbinSummary {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const header = (i: number) => ({ name: elf.readUInt32LE(shoff + i * shentsize), offset: Number(elf.readBigUInt64LE(shoff + i * shentsize + 0x18)), size: Number(elf.readBigUInt64LE(shoff + i * shentsize + 0x20)) });
  const names = header(shstrndx);
  const nameOf = (at: number) => elf.toString('latin1', names.offset + at, elf.indexOf(0, names.offset + at));
  let section: { offset: number; size: number } | null = null;
  for (let i = 0; i < shnum; i++) if (nameOf(header(i).name) === '.nv_fatbin') section = header(i);
  if (!section) throw new Error('no .nv_fatbin section');
  const summary: FatbinSummary = { images: {}, zeroedBytes: 0 };
  const end = section.offset + section.size;
  let pos = section.offset;
  while (pos + 16 <= end) {
    if (elf.readUInt32LE(pos) !== FATBIN_MAGIC) {
      // Containers are 8-byte aligned; the gaps between them are padding.
      if (elf.readUInt32LE(pos) !== 0) throw new Error(`unexpected bytes at ${pos} in .nv_fatbin`);
      pos += 8;
      continue;
    }
    const containerHeader = elf.readUInt16LE(pos + 6);
    const containerEnd = pos + containerHeader + Number(elf.readBigUInt64LE(pos + 8));
    if (containerEnd > end) throw new Error(`fatbin container at ${pos} runs past its section`);
    let entry = pos + containerHeader;
    while (entry < containerEnd) {
      const kind = elf.readUInt16LE(entry);
      const headerSize = elf.readUInt32LE(entry + 4);
      const payload = Number(elf.readBigUInt64LE(entry + 8));
      const imageArch = elf.readUInt32LE(entry + 28);
      if (headerSize < 32 || entry + headerSize + payload > containerEnd) throw new Error(`fatbin entry at ${entry} does not fit its container`);
      const kept = kind === KIND_ELF ? imageArch === arch : kind === KIND_PTX ? imageArch <= arch : true;
      const key = `${kind === KIND_ELF ? 'sass' : kind === KIND_PTX ? 'ptx' : `kind${kind}`}:sm_${imageArch}`;
      const s = (summary.images[key] ??= { count: 0, bytes: 0, kept });
      s.count++;
      s.bytes += payload;
      if (!kept) {
        elf.fill(0, entry + headerSize, entry + headerSize + payload);
        summary.zeroedBytes += payload;
      }
      entry += headerSize + payload;
    }
    if (entry !== containerEnd) throw new Error(`fatbin container at ${pos} does not tile exactly`);
    pos = containerEnd;
  }
  return summary;
}
