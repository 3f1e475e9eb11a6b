import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, onTestFinished, test } from 'vitest';
import { TesseraError } from '../../errors.ts';
import { trainByteLevelBpe } from './bpe-trainer.ts';
import { BYTE_TO_CHAR, fromByteLevel, preTokenize, toByteLevel } from './byte-level.ts';
import { generateTokenizer } from './generated-tokenizer.ts';
import { loadTokenizer, renderChat } from './tokenizer.ts';

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tok-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeGenerated(dir: string, numMerges = 300, configPatch: Record<string, unknown> = {}): ReturnType<typeof generateTokenizer> {
  const g = generateTokenizer({ numMerges, modelMaxLengthTokens: 512 });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(g.tokenizerJson));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...g.tokenizerConfigJson, ...configPatch }));
  return g;
}

describe('byte-level alphabet', () => {
  test('256 distinct single printable characters; bytes round-trip', () => {
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
    for (const c of BYTE_TO_CHAR) expect(c).toMatch(/^[^\s\p{C}]$/u);
    expect(BYTE_TO_CHAR[0x41]).toBe('A');
    expect(BYTE_TO_CHAR[0x20]).toBe('Ġ'); // space is the 33rd non-visible byte: 256 + 32
    expect(BYTE_TO_CHAR[0x0a]).toBe('Ċ');
    const text = 'héllo 世界 🙂\n';
    expect(Buffer.from(fromByteLevel(toByteLevel(text))!).toString('utf8')).toBe(text);
    expect(fromByteLevel('a\u4e16')).toBeUndefined();
  });

  test('pre-tokenizer keeps a leading space with the word and splits digits from letters', () => {
    expect(preTokenize("Hello world, it's 42x!  ok")).toEqual(['Hello', ' world', ',', ' it', "'s", ' 42', 'x', '!', ' ', ' ok']);
    expect(preTokenize('').length).toBe(0);
  });
});

describe('BPE trainer', () => {
  test('merges the most frequent pair first and is deterministic', () => {
    const corpus = 'aaa aaa aaa abab abab b';
    const a = trainByteLevelBpe(corpus, 5);
    expect(a).toEqual(trainByteLevelBpe(corpus, 5));
    // Pre-tokens: "aaa" x1, "Ġaaa" x2, "abab" x1, "Ġabab" x1, "Ġb" x1; pair (a,a) occurs 6 times.
    expect(a.merges[0]).toEqual(['a', 'a']);
    expect(a.tokens.slice(256, 257)).toEqual(['aa']);
    expect(a.tokens.slice(0, 256)).toEqual(BYTE_TO_CHAR);
  });

  test('stops when no pairs are left', () => {
    const v = trainByteLevelBpe('ab ab', 50);
    // "ab" and "Ġab": merges (a,b) then (Ġ,ab) -> every pre-token is one symbol.
    expect(v.merges).toEqual([['a', 'b'], ['Ġ', 'ab']]);
  });
});

describe('loadTokenizer on a generated tokenizer', () => {
  test('round-trips arbitrary UTF-8 and compresses common words', () => {
    const dir = tempDir();
    const g = writeGenerated(dir);
    const tok = loadTokenizer(dir)!;
    expect(tok.vocabSize).toBe(g.vocabSize);
    expect(g.vocabSize).toBe(3 + 256 + 300);
    for (const text of ['héllo wörld 世界 🙂\n\tx', '', '   ', 'The keeper climbed the stairs.', '\u0000\u0001\u007f', 'a\r\nb']) {
      const ids = tok.encode(text);
      expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize)).toBe(true);
      expect(tok.decode(ids)).toBe(text);
    }
    const sentence = 'The keeper climbed the stairs every evening.';
    expect(tok.encode(sentence).length).toBeLessThan(new TextEncoder().encode(sentence).length / 2);
  });

  test('special tokens: ids, encoding inside text, skipping on decode', () => {
    const dir = tempDir();
    writeGenerated(dir);
    const tok = loadTokenizer(dir)!;
    expect(tok.bosTokenId).toBe(0);
    expect(tok.eosTokenIds).toEqual([0]);
    expect(tok.tokenToId('<|im_start|>')).toBe(1);
    expect(tok.tokenToId('<|im_end|>')).toBe(2);
    expect(tok.tokenToId('no such token')).toBeNull();
    const ids = tok.encode('<|im_start|>hi<|im_end|>');
    expect(ids[0]).toBe(1);
    expect(ids[ids.length - 1]).toBe(2);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('hi');
    // Ids past the tokenizer's vocabulary (a model's padding rows) decode to nothing.
    expect(tok.decode([...ids, tok.vocabSize + 5, -1])).toBe('<|im_start|>hi<|im_end|>');
    expect(tok.decode([tok.vocabSize])).toBe('');
  });

  test('renderChat applies the ChatML template', () => {
    const dir = tempDir();
    writeGenerated(dir);
    const tok = loadTokenizer(dir)!;
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi!' },
    ];
    expect(renderChat(tok, messages)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
    expect(renderChat(tok, messages, false)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n');
  });

  test('chat templates: named list, bos/eos variables, raise_exception, and none at all', () => {
    const dir = tempDir();
    const template = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'bad' %}{{ raise_exception('roles must alternate') }}{% endif %}{{ m['content'] }}{{ eos_token }}{% endfor %}";
    writeGenerated(dir, 300, { chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template }] });
    const tok = loadTokenizer(dir)!;
    expect(renderChat(tok, [{ role: 'user', content: 'a' }])).toBe('<|endoftext|>a<|endoftext|>');
    expect(() => renderChat(tok, [{ role: 'bad', content: 'a' }])).toThrow(/roles must alternate/);

    writeGenerated(dir, 300, { chat_template: null });
    const none = loadTokenizer(dir)!;
    expect(none.chatTemplate).toBeNull();
    expect(() => renderChat(none, [{ role: 'user', content: 'a' }])).toThrow(TesseraError);
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ messages[0].content }}!');
    expect(renderChat(loadTokenizer(dir)!, [{ role: 'user', content: 'a' }])).toBe('a!');
  });
});

describe('loadTokenizer errors', () => {
  test('no tokenizer.json -> null', () => {
    expect(loadTokenizer(tempDir())).toBeNull();
  });

  test('malformed files -> CHECKPOINT_INVALID naming the file', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{not json');
    expect(() => loadTokenizer(dir)).toThrow(/tokenizer\.json: cannot read JSON/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'Martian' } }));
    expect(() => loadTokenizer(dir)).toThrow(/tokenizer\.json/);
    writeGenerated(dir, 10, { eos_token: '<|nope|>' });
    expect(() => loadTokenizer(dir)).toThrow(/`eos_token` "<\|nope\|>" is not a token/);
    try {
      loadTokenizer(dir);
    } catch (err) {
      expect((err as TesseraError).code).toBe('CHECKPOINT_INVALID');
    }
  });
});
