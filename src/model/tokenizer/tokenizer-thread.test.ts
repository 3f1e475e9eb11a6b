import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TesseraError } from '../../errors.ts';
import { encodeChat } from './chat-template.ts';
import { generateTokenizer } from './generated-tokenizer.ts';
import { TokenizerThread } from './tokenizer-thread.ts';
import { loadTokenizer, type Tokenizer } from './tokenizer.ts';

let dir: string;
let tokenizer: Tokenizer;
let thread: TokenizerThread;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tokthread-'));
  const g = generateTokenizer({ numMerges: 300, modelMaxLengthTokens: 512 });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(g.tokenizerJson));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(g.tokenizerConfigJson));
  tokenizer = loadTokenizer(dir)!;
  thread = await TokenizerThread.start({ modelDir: dir, vocabSize: tokenizer.vocabSize });
}, 60_000);

afterAll(async () => {
  await thread?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function randomWords(bytes: number): string {
  let a = 99;
  const rnd = () => ((a = (a * 1103515245 + 12345) >>> 0) / 2 ** 32);
  let s = '';
  while (s.length < bytes) s += `${Array.from({ length: 3 + Math.floor(rnd() * 8) }, () => String.fromCharCode(97 + Math.floor(rnd() * 26))).join('')} `;
  return s.slice(0, bytes);
}

describe('tokenizer thread', () => {
  test('gives the ids the tokenizer gives on this thread, for text and chat, with and without special-token parsing', async () => {
    const text = 'hi <|im_end|> there é🙂';
    for (const parseSpecialTokens of [true, false]) {
      expect(await thread.encodeText(text, { parseSpecialTokens })).toEqual(tokenizer.encode(text, { specialTokens: parseSpecialTokens ? 'parse' : 'as-text' }));
      const messages = [{ role: 'user', content: text }];
      expect(await thread.encodeChat(messages, { parseSpecialTokens })).toEqual(encodeChat(tokenizer, messages, { parseSpecialTokens }));
    }
  });

  test('the event loop stays responsive while it tokenizes a long text (against the same work on this thread)', async () => {
    const text = randomWords(1_000_000);
    const t0 = performance.now();
    const here = tokenizer.encode(text, { specialTokens: 'as-text' });
    const onThisThreadMs = performance.now() - t0;
    let worstLagMs = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstLagMs = Math.max(worstLagMs, now - last);
      last = now;
    }, 5);
    const there = await thread.encodeText(text, { parseSpecialTokens: false });
    clearInterval(timer);
    expect(there).toEqual(here);
    console.info(`1 MB: ${onThisThreadMs.toFixed(0)} ms tokenizing on this thread; worst timer gap while the tokenizer thread did it ${worstLagMs.toFixed(1)} ms`);
    expect(worstLagMs).toBeLessThan(onThisThreadMs / 4);
  }, 60_000);

  test('refuses more than maxPending requests with QUEUE_FULL, and fails pending requests with DRAINING on close', async () => {
    const small = await TokenizerThread.start({ modelDir: dir, vocabSize: tokenizer.vocabSize, maxPending: 2 });
    const long = randomWords(200_000);
    const a = small.encodeText(long, { parseSpecialTokens: false });
    const b = small.encodeText(long, { parseSpecialTokens: false });
    for (const p of [a, b]) p.catch(() => {}); // rejected by close() before they are awaited below
    await expect(small.encodeText('x', { parseSpecialTokens: false })).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    await small.close();
    for (const p of [a, b]) await expect(p).rejects.toBeInstanceOf(TesseraError);
    await expect(small.encodeText('x', { parseSpecialTokens: false })).rejects.toMatchObject({ code: 'DRAINING' });
  }, 60_000);

  test('a broken tokenizer.json fails the start with CHECKPOINT_INVALID', async () => {
    const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tokthread-bad-'));
    try {
      fs.writeFileSync(path.join(bad, 'tokenizer.json'), '{"model": ');
      await expect(TokenizerThread.start({ modelDir: bad, vocabSize: 10 })).rejects.toMatchObject({ code: 'CHECKPOINT_INVALID' });
    } finally {
      fs.rmSync(bad, { recursive: true, force: true });
    }
  });
});
