import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../../errors.ts';
import type { ModelConfig } from '../../model/model-config.ts';
import { compressLoraTensors } from './compeft-codec.ts';
import { decodeTensorInto, decodeToPeftLike } from './compeft-decode.ts';
import { parseCompeft } from './compeft-reader.ts';
import { SeededRandom } from '../../util/seeded-random.ts';
import { SMALL_TEST_CONFIG, syntheticLoraTensors } from './compeft-synthetic.ts';
import { writeCompeft } from './compeft-writer.ts';

const TINY: ModelConfig = { ...SMALL_TEST_CONFIG, hiddenSize: 24, intermediateSize: 40, numHeads: 2, numKvHeads: 1, headDim: 12, numLayers: 2 };
const RANK = 4;

function goodFile(density = 0.15): Uint8Array {
  const tensors = syntheticLoraTensors({ config: TINY, rank: RANK, seed: 8, targets: ['q_proj', 'v_proj', 'down_proj'] });
  const c = compressLoraTensors(tensors, { density });
  return writeCompeft({ baseModel: 'tiny', numLayers: 2, rank: RANK, loraAlpha: 8, scale: 2, density, alpha: 'auto' }, c.tensors);
}

interface Parts {
  header: Record<string, unknown> & { tensors: Array<Record<string, unknown>> };
  data: Uint8Array;
}

function split(bytes: Uint8Array): Parts {
  const len = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + len))), data: bytes.slice(16 + len + 4) };
}

/** Re-assembles a file with valid header length and CRCs, so the checks behind the checksums are reached. */
function seal(parts: Parts, opts: { fixPayloadCrcs?: boolean; version?: number } = {}): Uint8Array {
  if ((opts.fixPayloadCrcs ?? true) && Array.isArray(parts.header.tensors)) {
    for (const t of parts.header.tensors) {
      if (typeof t.offset === 'number' && typeof t.length === 'number' && t.offset + t.length <= parts.data.length) {
        t.crc32 = crc32(parts.data.subarray(t.offset, t.offset + t.length));
      }
    }
  }
  const json = new TextEncoder().encode(JSON.stringify(parts.header));
  const out = new Uint8Array(20 + json.length + parts.data.length);
  const view = new DataView(out.buffer);
  out.set([0x89, 0x43, 0x50, 0x45, 0x46, 0x54, 0x0d, 0x0a]);
  view.setUint16(8, opts.version ?? 1, true);
  view.setUint16(10, 0, true);
  view.setUint32(12, json.length, true);
  out.set(json, 16);
  view.setUint32(16 + json.length, crc32(out.subarray(0, 16 + json.length)), true);
  out.set(parts.data, 20 + json.length);
  return out;
}

function expectInvalid(bytes: Uint8Array, message: RegExp): void {
  let caught: unknown;
  try {
    parseCompeft(bytes, { source: 'evil.cpeft' });
  } catch (err) {
    caught = err;
  }
  expect(isTesseraError(caught), `expected COMPEFT_INVALID, got ${String(caught)}`).toBe(true);
  expect((caught as { code: string }).code).toBe('COMPEFT_INVALID');
  expect((caught as Error).message).toMatch(/^evil\.cpeft: /);
  expect((caught as Error).message).toMatch(message);
}

function edit(fn: (p: Parts) => void, opts?: { fixPayloadCrcs?: boolean; version?: number }): Uint8Array {
  const p = split(goodFile());
  fn(p);
  return seal(p, opts);
}

describe('hostile .cpeft files', () => {
  it('the unmodified re-sealed file parses (so every failure below is caused by its one edit)', () => {
    const bytes = edit(() => {});
    expect(bytes).toEqual(goodFile());
    expect(parseCompeft(bytes).header.tensors.length).toBe(12);
  });

  it('bad magic', () => {
    const b = goodFile();
    b[1] = 0x58;
    expectInvalid(b, /bad magic/);
    expectInvalid(new TextEncoder().encode('{"not":"a cpeft file at all, just json"}'), /bad magic/);
  });

  it('too short to hold a preamble', () => expectInvalid(goodFile().subarray(0, 10), /shorter than the 20-byte minimum/));

  it('unknown major version', () => {
    expectInvalid(edit(() => {}, { version: 2 }), /unsupported format major version 2; this reader supports version 1\.x/);
  });

  it('header length past the end of the file', () => {
    const b = goodFile();
    new DataView(b.buffer).setUint32(12, 0xfffffff0, true);
    expectInvalid(b, /header length 4294967280 runs past the end/);
  });

  it('wrong header checksum', () => {
    const b = goodFile();
    b[40] ^= 0x01;
    expectInvalid(b, /header checksum mismatch/);
  });

  it('wrong payload checksum', () => {
    const b = goodFile();
    b[b.length - 3] ^= 0x10;
    expectInvalid(b, /payload checksum mismatch/);
  });

  it('truncated payload', () => {
    const b = goodFile();
    expectInvalid(b.subarray(0, b.length - 5), /dataLength/);
    // Header and lengths consistent with the truncation, but the tensor's bits run out.
    expectInvalid(
      edit((p) => {
        const last = p.header.tensors[p.header.tensors.length - 1];
        const cut = 3;
        last.length = (last.length as number) - cut;
        p.data = p.data.subarray(0, p.data.length - cut);
        p.header.dataLength = p.data.length;
      }),
      /payload is \d+ bytes|positions end|bitmap is|padding/,
    );
  });

  it('header that is not JSON, or not the expected shape', () => {
    const notJson = split(goodFile());
    const json = new TextEncoder().encode('{"tensors": [');
    const raw = new Uint8Array(20 + json.length + notJson.data.length);
    raw.set(goodFile().subarray(0, 12));
    new DataView(raw.buffer).setUint32(12, json.length, true);
    raw.set(json, 16);
    new DataView(raw.buffer).setUint32(16 + json.length, crc32(raw.subarray(0, 16 + json.length)), true);
    expectInvalid(raw, /not valid UTF-8 JSON/);
    expectInvalid(edit((p) => ((p as { header: unknown }).header = [1, 2, 3])), /header must be a JSON object/);
    expectInvalid(edit((p) => (p.header.rank = 'sixteen')), /`rank` must be an integer/);
    expectInvalid(edit((p) => (p.header.targets = ['lm_head'])), /`targets` must be distinct names/);
    expectInvalid(edit((p) => (p.header.alpha = -1)), /`alpha` must be "auto"/);
    expectInvalid(edit((p) => (p.header.tensors[3] = 'x' as unknown as Record<string, unknown>)), /tensors\[3\] must be a JSON object/);
    expectInvalid(edit((p) => (p.header.tensors[0].kind = 'C')), /`kind` must be "A" or "B"/);
    expectInvalid(edit((p) => (p.header.tensors[0].shape = [4])), /`shape` must be \[rows, cols\]/);
    expectInvalid(edit((p) => (p.header.tensors[0].scale = null)), /`scale` must be a finite number/);
    expectInvalid(edit((p) => (p.header.tensors[0].scale = 1e300)), /`scale` must fit in float32/);
    expectInvalid(edit((p) => (p.header.tensors[1].layer = 2)), /`layer` must be an integer >= 0 and <= 1/);
    expectInvalid(edit((p) => (p.header.tensors[0].encoding = 'zip')), /`encoding` must be "rice" or "bitmap"/);
    expectInvalid(edit((p) => p.header.tensors.splice(1, 1)), /offset|has A but no B/);
    expectInvalid(edit((p) => (p.header.tensors[2] = { ...p.header.tensors[0], offset: p.header.tensors[2].offset })), /appears twice|checksum|bits|nnz|payload/);
    expectInvalid(edit((p) => (p.header.formatVersion = '1.7')), /does not match the binary version/);
  });

  it('huge counts: nnz or shapes that would allocate gigabytes are refused from the header alone', () => {
    expectInvalid(edit((p) => (p.header.tensors[0].shape = [RANK, 1e9])), /must be an integer >= 1 and <= 1048576/);
    expectInvalid(
      edit((p) => {
        p.header.rank = 512;
        p.header.tensors[0].shape = [512, 1 << 20];
      }),
      /has 536870912 elements, more than the limit 268435456/,
    );
    expectInvalid(edit((p) => (p.header.tensors[0].shape = [RANK + 1, 24])), /must equal the header rank/);
    expectInvalid(edit((p) => (p.header.tensors[0].nnz = 1e12)), /`nnz` must be an integer >= 0 and <= 96/);
    expectInvalid(edit((p) => (p.header.rank = 1e6)), /`rank` must be an integer >= 1 and <= 4096/);
    expectInvalid(edit((p) => (p.header.numLayers = 1e9)), /`numLayers`/);
    // nnz inside the shape but more entries than the payload can possibly hold.
    expectInvalid(edit((p) => (p.header.tensors[0].nnz = 90)), /payload is \d+ bytes; rice with nnz 90/);
    expectInvalid(edit((p) => (p.header.tensors[0].length = 1e15)), /`length` must be an integer/);
    expectInvalid(edit((p) => (p.header.tensors[0].offset = -4)), /`offset` must be an integer >= 0/);
  });

  it('positions out of range: gaps that run past the tensor end', () => {
    // Rewrite tensor 0's positions so the last gap runs past the end (valid CRC, valid lengths).
    expectInvalid(
      edit((p) => {
        const t = p.header.tensors[0];
        const nnz = t.nnz as number;
        const rows = (t.shape as number[])[0];
        const cols = (t.shape as number[])[1];
        t.riceK = 0;
        // nnz - 1 gaps of 0 then one gap of rows * cols (unary, k = 0): lands past the end.
        const bits = nnz - 1 + rows * cols + 1;
        const posBytes = new Uint8Array(Math.ceil(bits / 8));
        for (let b = nnz - 1; b < nnz - 1 + rows * cols; b++) posBytes[b >> 3] |= 1 << (b & 7);
        const signs = p.data.subarray((t.offset as number) + (t.length as number) - Math.ceil(nnz / 8), (t.offset as number) + (t.length as number));
        const payload = new Uint8Array([...posBytes, ...signs]);
        const rest = p.data.subarray((t.offset as number) + (t.length as number));
        const delta = payload.length - (t.length as number);
        t.length = payload.length;
        for (const u of p.header.tensors.slice(1)) u.offset = (u.offset as number) + delta;
        p.data = new Uint8Array([...payload, ...rest]);
        p.header.dataLength = p.data.length;
      }),
      /runs past the tensor's 96 elements|lands at index/,
    );
    // A bitmap that marks bits beyond rows * cols (in the padding of its last byte).
    const bitmapFile = split(goodFile(0.9));
    const t = bitmapFile.header.tensors.find((u) => u.encoding === 'bitmap' && ((u.shape as number[])[0] * (u.shape as number[])[1]) % 8 !== 0);
    if (t) {
      const n = (t.shape as number[])[0] * (t.shape as number[])[1];
      bitmapFile.data[(t.offset as number) + (n >> 3)] |= 0x80;
      expectInvalid(seal(bitmapFile), /past the tensor's|more than nnz/);
    }
    // nnz that disagrees with the bitmap's population count.
    const p2 = split(goodFile(0.9));
    const u = p2.header.tensors.find((v) => v.encoding === 'bitmap')!;
    u.nnz = (u.nnz as number) - 8;
    u.length = (u.length as number) - 1;
    expectInvalid(seal(p2), /offset|bitmap marks/);
  });

  it('a decoder given an unverified file still never writes outside the tensor region', () => {
    const p = split(goodFile());
    const t = p.header.tensors[0];
    const start = t.offset as number;
    for (let i = 0; i < (t.length as number) - Math.ceil((t.nnz as number) / 8); i++) p.data[start + i] = 0xff;
    const file = parseCompeft(seal(p), { verifyPayloads: false });
    const rows = (t.shape as number[])[0];
    const cols = (t.shape as number[])[1];
    const dest = new Float32Array(rows * cols + 10).fill(5);
    expect(() => decodeTensorInto(file, 0, dest, 5, { row: cols, col: 1 })).toThrow(/COMPEFT|past the tensor/);
    for (let i = 0; i < 5; i++) expect(dest[i]).toBe(5);
    for (let i = rows * cols + 5; i < dest.length; i++) expect(dest[i]).toBe(5);
  });

  it('decodeToPeftLike refuses to allocate past its budget', () => {
    const file = parseCompeft(goodFile());
    expect(() => decodeToPeftLike(file, { maxDenseBytes: 1000 })).toThrow(/maxDenseBytes/);
  });

  it('fuzz: random byte flips and truncations give COMPEFT_INVALID or a valid file, never anything else', () => {
    const base = goodFile();
    const rng = new SeededRandom(1234);
    let invalid = 0;
    let valid = 0;
    const check = (bytes: Uint8Array): void => {
      try {
        const file = parseCompeft(bytes);
        const dense = decodeToPeftLike(file);
        expect(dense.layers.length).toBe(file.header.numLayers);
        valid++;
      } catch (err) {
        if (!isTesseraError(err) || err.code !== 'COMPEFT_INVALID') throw err;
        invalid++;
      }
    };
    for (let trial = 0; trial < 2500; trial++) {
      const mode = trial % 3;
      if (mode === 0) {
        check(base.subarray(0, rng.nextUint32() % base.length));
      } else {
        const b = base.slice();
        const flips = 1 + (rng.nextUint32() % 4);
        for (let f = 0; f < flips; f++) b[rng.nextUint32() % b.length] ^= 1 << (rng.nextUint32() % 8);
        check(b);
      }
    }
    // Structural fuzz behind valid checksums: mutate header numbers and payload bytes, then re-seal.
    const numericKeys = ['nnz', 'riceK', 'offset', 'length', 'layer', 'scale'];
    for (let trial = 0; trial < 1500; trial++) {
      const p = split(base);
      const t = p.header.tensors[rng.nextUint32() % p.header.tensors.length];
      if (trial % 2 === 0) {
        const key = numericKeys[rng.nextUint32() % numericKeys.length];
        const choices = [0, 1, -1, 2 ** 31, 2 ** 53, 0.5, (t[key] as number) + 1, (t[key] as number) - 1, null, 'x'];
        t[key] = choices[rng.nextUint32() % choices.length];
      } else {
        const start = t.offset as number;
        const len = t.length as number;
        if (len > 0) p.data[start + (rng.nextUint32() % len)] ^= 1 << (rng.nextUint32() % 8);
      }
      check(seal(p));
    }
    expect(invalid).toBeGreaterThan(3000);
    expect(valid).toBeGreaterThan(0); // truncation at full length never happens, but some payload flips stay well-formed
  });
});
