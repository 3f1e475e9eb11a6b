import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readElfDynamic } from './elf-dynamic.ts';

/** onnxruntime-node's own Linux x64 files: a real addon and a real shared library. */
const ortBin = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin/napi-v6/linux/x64');

describe.runIf(process.platform === 'linux' && process.arch === 'x64')('readElfDynamic (real ELF files)', () => {
  it('reads DT_NEEDED, DT_SONAME and DT_RUNPATH of ONNX Runtime and its Node addon', () => {
    const core = readElfDynamic(join(ortBin, 'libonnxruntime.so.1'));
    expect(core.soname).toBe('libonnxruntime.so.1');
    expect(core.needed).toContain('libc.so.6');
    const addon = readElfDynamic(join(ortBin, 'onnxruntime_binding.node'));
    expect(addon.needed).toContain('libonnxruntime.so.1');
    expect(addon.runpath).toMatch(/^\$ORIGIN/);
  });

  it('a dynamically linked executable needs libc', () => {
    expect(readElfDynamic(process.execPath).needed).toContain('libc.so.6');
  });

  it('garbage and truncated files are refused with the path named', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-elf-'));
    writeFileSync(join(dir, 'text.so'), 'not a library at all, but long enough to hold an ELF identification block......');
    expect(() => readElfDynamic(join(dir, 'text.so'))).toThrow(`${join(dir, 'text.so')}: not an ELF file`);
    writeFileSync(join(dir, 'cut.so'), readFileSync(join(ortBin, 'onnxruntime_binding.node')).subarray(0, 4096));
    expect(() => readElfDynamic(join(dir, 'cut.so'))).toThrow(/cut\.so: not an ELF shared library \(truncated at byte \d+\)/);
  });
});
