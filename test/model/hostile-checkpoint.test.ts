/**
 * Hostile Hugging Face checkpoints: `tessera convert` (in-process through the CLI entry, and as a process for the
 * case that could block) and `tessera serve` must answer every bad config.json, tokenizer.json or weights file with one
 * CHECKPOINT_INVALID line naming the file, the field and the value: no stack trace, no hang, no allocation sized by a
 * hostile number. Then seeded fuzzing of config.json and tokenizer.json: every variant loads cleanly or is refused
 * with CHECKPOINT_INVALID, never another exception; a tokenizer that loads encodes text to ids inside the vocabulary.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { TesseraError } from '../../src/errors.ts';
import { checkCheckpointTensors, readHfConfig } from '../../src/model/checkpoint/checkpoint.ts';
import { makeModel } from '../../src/model/checkpoint/make-model.ts';
import { openCheckpointTensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import { loadTokenizer } from '../../src/model/tokenizer/tokenizer.ts';
import { seededRandom } from '../helpers/seeded-random.ts';
import { tempDir } from '../helpers/tiny-model.ts';

type Json = Record<string, unknown>;

let hfDir: string;
let work: string;

beforeAll(async () => {
  work = tempDir('hostile-ckpt');
  hfDir = (await makeModel({ preset: 'tiny', outDir: path.join(work, 'hf'), numAdapters: 0, seed: 0 })).outDir;
}, 60_000);

let caseCounter = 0;
/** A copy of the tiny checkpoint, changed by `edit`. */
function variant(edit: (dir: string) => void): string {
  const dir = path.join(work, `case-${caseCounter++}`);
  fs.cpSync(hfDir, dir, { recursive: true });
  edit(dir);
  return dir;
}
const editJson = (file: string, change: (j: Json) => void) => (dir: string) => {
  const j = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Json;
  change(j);
  fs.writeFileSync(path.join(dir, file), JSON.stringify(j));
};
const setConfig = (values: Json) => editJson('config.json', (j) => Object.assign(j, values));

/** Runs `tessera convert DIR` in-process; returns exit code and stderr. A thrown exception fails the test. */
async function convert(dir: string): Promise<{ code: number; err: string }> {
  let err = '';
  const code = await main(['convert', dir, '--quant', 'fp32', '--out', path.join(dir, 'out')], { out: () => {}, err: (s) => (err += s) });
  return { code, err };
}

describe('hostile checkpoints: one CHECKPOINT_INVALID line naming file, field and value', () => {
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    ['hidden_size 1e9', setConfig({ hidden_size: 1e9 }), /config\.json: `hidden_size` must be a positive integer <= 65536\. Given: 1000000000$/],
    ['vocab_size 2e9', setConfig({ vocab_size: 2e9 }), /config\.json: `vocab_size` .* Given: 2000000000$/],
    ['max_position_embeddings 1e12', setConfig({ max_position_embeddings: 1e12 }), /config\.json: `max_position_embeddings` .* Given: 1000000000000$/],
    ['intermediate_size 1e12 (hung at 100% CPU)', setConfig({ intermediate_size: 1e12 }), /config\.json: `intermediate_size` .* Given: 1000000000000$/],
    ['num_hidden_layers 1e6', setConfig({ num_hidden_layers: 1e6 }), /config\.json: `num_hidden_layers` .* Given: 1000000$/],
    ['head_dim 32 (tensors are for 16)', setConfig({ head_dim: 32 }), /model\.safetensors: tensor "model\.layers\.0\.self_attn\.q_proj\.weight" has shape \[64,64\], expected \[128,64\] from config\.json$/],
    ['head_dim odd', setConfig({ head_dim: 15 }), /`head_dim` must be even.* Given: 15$/],
    ['hidden_size 128 (mismatched widths)', setConfig({ hidden_size: 128 }), /tensor "model\.embed_tokens\.weight" has shape \[576,64\], expected \[576,128\]/],
    ['num_key_value_heads 1 (mismatched k_proj)', setConfig({ num_key_value_heads: 1 }), /tensor "model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[32,64\], expected \[16,64\]/],
    ['eos_token_id 1e9', setConfig({ eos_token_id: 1e9 }), /config\.json: `eos_token_id` must be < vocab_size \(576\)\. Given: 1000000000$/],
    ['eos_token_id list with one past the vocabulary', setConfig({ eos_token_id: [0, 576] }), /`eos_token_id` must be < vocab_size \(576\)\. Given: \[0,576\]$/],
    ['bos_token_id past the vocabulary', setConfig({ bos_token_id: 600 }), /`bos_token_id` must be < vocab_size \(576\)\. Given: 600$/],
    ['rms_norm_eps 1e300', setConfig({ rms_norm_eps: 1e300 }), /`rms_norm_eps` .* Given: 1e\+300$/],
    ['rope_theta 1e308 (not a float32)', setConfig({ rope_theta: 1e308 }), /`rope_theta` .*float32.* Given: 1e\+308$/],
    ['config.json not JSON', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "llama",'), /config\.json: cannot read JSON \(.*position/],
    ['config.json a directory', (d) => (fs.rmSync(path.join(d, 'config.json')), fs.mkdirSync(path.join(d, 'config.json'))), /config\.json: must be a regular file \(found a directory\)$/],
    ['tokenizer.json corrupt', (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"model": 5'), /tokenizer\.json: cannot read JSON/],
    ['tokenizer.json model not an object', editJson('tokenizer.json', (j) => (j.model = 5)), /tokenizer\.json: `model` must be an object\. Given: 5$/],
    ['tokenizer vocab id past the vocabulary', editJson('tokenizer.json', (j) => { ((j.model as Json).vocab as Json).a = 1e9; }), /tokenizer\.json: `model\.vocab\["a"\]` must be < vocab_size \(576\) of config\.json\. Given: 1000000000$/],
    ['added token id past the vocabulary', editJson('tokenizer.json', (j) => { (j.added_tokens as Json[])[2].id = 100000; }), /tokenizer\.json: `added_tokens\[2\]\.id` must be < vocab_size \(576\) of config\.json\. Given: 100000$/],
    ['added token without content', editJson('tokenizer.json', (j) => { (j.added_tokens as Json[])[1].content = ''; }), /`added_tokens\[1\]\.content` must be a non-empty string/],
    ['eos_token not a token', editJson('tokenizer_config.json', (j) => (j.eos_token = 'no-such-token')), /tokenizer_config\.json: `eos_token` "no-such-token" is not a token/],
    ['generation_config eos past the vocabulary', (d) => fs.writeFileSync(path.join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [0, 9999] })), /generation_config\.json: `eos_token_id` must be < vocab_size \(576\).* Given: \[0,9999\]$/],
    ['special_tokens_map.json a FIFO', (d) => spawnSync('mkfifo', [path.join(d, 'special_tokens_map.json')]), /special_tokens_map\.json: must be a regular file \(found a FIFO\)$/],
  ];

  test.each(cases)('convert: %s', async (_name, edit, expected) => {
    const { code, err } = await convert(variant(edit));
    expect(code).toBe(1);
    const lines = err.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^tessera convert: /);
    expect(lines[0]).toMatch(expected);
  });

  test('convert and serve as processes: a FIFO as model.safetensors or config.json does not block', () => {
    const fifoWeights = variant((d) => (fs.rmSync(path.join(d, 'model.safetensors')), spawnSync('mkfifo', [path.join(d, 'model.safetensors')])));
    const fifoConfig = variant((d) => (fs.rmSync(path.join(d, 'config.json')), spawnSync('mkfifo', [path.join(d, 'config.json')])));
    const run = (args: string[]) => spawnSync(process.execPath, ['bin/tessera.mjs', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TESSERA_CACHE_DIR: path.join(work, 'cache') } });
    const convertFifo = run(['convert', fifoWeights, '--quant', 'fp32', '--out', path.join(work, 'fifo-out')]);
    expect({ status: convertFifo.status, signal: convertFifo.signal, stderr: convertFifo.stderr.trim() }).toEqual({
      status: 1,
      signal: null,
      stderr: `tessera convert: safetensors file ${fifoWeights}/model.safetensors: not a regular file`,
    });
    const serveFifo = run(['serve', '--model', fifoConfig, '--port', '0', '--log-level', 'silent']);
    expect({ status: serveFifo.status, signal: serveFifo.signal, stderr: serveFifo.stderr.trim() }).toEqual({
      status: 1,
      signal: null,
      stderr: `tessera serve: ${fifoConfig}/config.json: must be a regular file (found a FIFO)`,
    });
    const badTokenizer = variant(editJson('tokenizer.json', (j) => { (j.added_tokens as Json[])[2].id = 100000; }));
    const serveBad = run(['serve', '--model', badTokenizer, '--port', '0', '--log-level', 'silent']);
    expect({ status: serveBad.status, stderr: serveBad.stderr.trim() }).toEqual({
      status: 1,
      stderr: `tessera serve: ${badTokenizer}/tokenizer.json: \`added_tokens[2].id\` must be < vocab_size (576) of config.json. Given: 100000`,
    });
  }, 120_000);
});

const HOSTILE_VALUES: unknown[] = [
  0, -1, 1, 2, 3, 7, 15, 16, 17, 64, 575, 576, 577, 1e9, 2 ** 31, 2 ** 53, 1e12, 1e300, -1e300, 1e-300, 0.5, 1.5, -0,
  null, true, false, '', 'llama', 'silu', '64', [], [0], [1e9], {}, { rope_type: 'yarn' }, { rope_type: 'default', rope_theta: -1 },
];

describe('fuzz: config.json and tokenizer.json', () => {
  test('random config.json values: loads, or CHECKPOINT_INVALID naming config.json or the mismatched tensor', () => {
    const random = seededRandom(19);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
    const base = JSON.parse(fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8')) as Json;
    const keys = [...Object.keys(base), 'rope_parameters', 'sliding_window', 'use_sliding_window', 'unknown_key'];
    const tensors = openCheckpointTensors(hfDir);
    const dir = path.join(work, 'fuzz-config');
    fs.mkdirSync(dir);
    const outcomes = new Map<string, number>();
    try {
      for (let i = 0; i < 600; i++) {
        const config: Json = { ...base };
        for (let k = 0; k < 1 + Math.floor(random() * 3); k++) {
          const key = pick(keys);
          if (random() < 0.1) delete config[key];
          else config[key] = pick(HOSTILE_VALUES);
        }
        fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
        let outcome = 'ok';
        try {
          checkCheckpointTensors(readHfConfig(dir).config, tensors);
        } catch (err) {
          expect({ config, err }).toMatchObject({ config, err: expect.any(TesseraError) });
          expect({ config, code: (err as TesseraError).code }).toEqual({ config, code: 'CHECKPOINT_INVALID' });
          expect((err as Error).message).toMatch(/config\.json: |model\.safetensors: tensor "|checkpoint is missing tensor "/);
          outcome = (err as Error).message.includes('config.json: `') ? `config: ${(err as Error).message.split('`')[1]}` : 'tensor shape';
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    } finally {
      tensors.close();
    }
    console.info('config fuzz outcomes:', Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])));
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(10);
    expect(outcomes.size).toBeGreaterThan(8);
  });

  test('random tokenizer.json edits and truncations: loads and encodes inside the vocabulary, or CHECKPOINT_INVALID', () => {
    const random = seededRandom(23);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
    const text = fs.readFileSync(path.join(hfDir, 'tokenizer.json'), 'utf8');
    const dir = path.join(work, 'fuzz-tokenizer');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(hfDir, 'tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
    const samples = ['hello world', '<|im_start|>user\nhi<|im_end|>', 'é🙂 123 \u0000', ''];
    /** Paths to every value of a JSON tree (arrays sampled), so edits reach vocab ids, merges, added tokens, types. */
    const pathsOf = (node: unknown, at: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> => {
      out.push(at);
      if (Array.isArray(node)) for (let i = 0; i < node.length; i += Math.max(1, Math.floor(node.length / 8))) pathsOf(node[i], [...at, i], out);
      else if (typeof node === 'object' && node !== null) for (const [k, v] of Object.entries(node).slice(0, 40)) pathsOf(v, [...at, k], out);
      return out;
    };
    const paths = pathsOf(JSON.parse(text)).filter((p) => p.length > 0);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      let body: string;
      if (random() < 0.25) body = text.slice(0, Math.floor(random() * text.length));
      else {
        const json = JSON.parse(text) as Json;
        for (let k = 0; k < 1 + Math.floor(random() * 2); k++) {
          const p = pick(paths);
          let parent: Record<string | number, unknown> = json;
          for (const step of p.slice(0, -1)) parent = parent?.[step] as Record<string | number, unknown>;
          if (parent !== null && typeof parent === 'object') parent[p[p.length - 1]] = pick([...HOSTILE_VALUES, 'Martian', 'BPE', 'Unigram', '<|im_end|>', { type: 'Sequence' }]);
        }
        body = JSON.stringify(json);
      }
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), body);
      let outcome = 'ok';
      try {
        const tokenizer = loadTokenizer(dir, { vocabSize: 576 })!;
        for (const sample of samples) {
          const ids = tokenizer.encode(sample);
          expect({ sample, body: body.slice(0, 200), bad: ids.filter((id) => !(Number.isSafeInteger(id) && id >= 0 && id < 576)) }).toMatchObject({ bad: [] });
          tokenizer.decode(ids);
        }
      } catch (err) {
        if (!(err instanceof TesseraError)) throw new Error(`not a TesseraError for tokenizer.json ${body.slice(0, 300)}`, { cause: err });
        expect(err.code).toBe('CHECKPOINT_INVALID');
        expect(err.message).toMatch(/tokenizer(_config)?\.json/);
        outcome = err.message.replace(/.*tokenizer(_config)?\.json: /, '').slice(0, 40);
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    console.info('tokenizer fuzz outcomes:', Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1]).slice(0, 12)));
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(10);
    expect(outcomes.size).toBeGreaterThan(5);
  });
});
