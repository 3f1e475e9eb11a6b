import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import type { CaseResultFile } from './bench-case.ts';
import { markers } from './doc-markers.ts';
import { renderSummary, updateDocs } from './docs-report.ts';
import { machineInfo } from './machine-info.ts';
import { readResults, resultsDir, writeResult } from './result-files.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-docs-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function result(name: string, value: string): CaseResultFile {
  return {
    case: name,
    description: `${name} case`,
    mode: 'full',
    command: `npm run bench -- --full --only ${name}`,
    machine: machineInfo(),
    startedAt: '2030-01-02T03:04:05.000Z',
    durationMs: 1234,
    tables: [{ title: `${name} table`, columns: ['variant', 'ms'], rows: [['a', 1.5], ['b|c', null]], notes: ['a note'] }],
    summary: [{ metric: `${name} metric`, value }],
    data: {},
  };
}

describe('result files and docs sections', () => {
  test('results round-trip through files; quick and full results live apart', () => {
    const benchDir = path.join(root, 'bench');
    expect(resultsDir(benchDir, 'full')).toBe(path.join(benchDir, 'results'));
    expect(resultsDir(benchDir, 'quick')).toBe(path.join(benchDir, 'results', 'quick'));
    writeResult(resultsDir(benchDir, 'full'), result('zeta', '1 x'));
    writeResult(resultsDir(benchDir, 'full'), result('alpha', '2 x'));
    writeResult(resultsDir(benchDir, 'quick'), result('quick-only', '3 x'));
    const read = readResults(resultsDir(benchDir, 'full'));
    expect(read.map((r) => r.case)).toEqual(['alpha', 'zeta']);
    expect(read[0]).toEqual(result('alpha', '2 x'));
    fs.writeFileSync(path.join(resultsDir(benchDir, 'full'), 'broken.json'), '{"case": 1}');
    expect(() => readResults(resultsDir(benchDir, 'full'))).toThrow(/broken.json: not a bench result/);
  });

  test('updateDocs rewrites the generated sections and keeps the hand-written text', () => {
    const docs = path.join(root, 'docs');
    fs.mkdirSync(docs, { recursive: true });
    const { start, end } = markers('alpha-tables');
    fs.writeFileSync(path.join(docs, 'alpha.md'), `# Alpha\n\nIntro.\n\n${start}\nstale\n${end}\n\nDiscussion stays.\n`);
    const results = [result('alpha', '2 x faster'), result('zeta', '1 x')];
    const updates = updateDocs(docs, results);
    expect(updates.map((u) => path.basename(u.file))).toEqual(['benchmarks.md', 'alpha.md']); // no zeta.md: not created

    const alpha = fs.readFileSync(path.join(docs, 'alpha.md'), 'utf8');
    expect(alpha.startsWith('# Alpha\n\nIntro.\n\n')).toBe(true);
    expect(alpha.endsWith('\n\nDiscussion stays.\n')).toBe(true);
    expect(alpha).not.toContain('stale');
    expect(alpha).toContain('| variant | ms |');
    expect(alpha).toContain('| b\\|c | - |');
    expect(alpha).toContain('npm run bench -- --full --only alpha');

    const summary = fs.readFileSync(path.join(docs, 'benchmarks.md'), 'utf8');
    expect(summary).toContain('| alpha | alpha metric | 2 x faster | 2030-01-02 |');
    expect(summary).toContain('| zeta | zeta metric | 1 x | 2030-01-02 |');
    expect(updateDocs(docs, results).every((u) => !u.changed)).toBe(true); // stable: a second run changes nothing
  });

  test('a case that names another page gets its section there, after the hand-written text', () => {
    const docs = path.join(root, 'docs-page');
    fs.mkdirSync(docs, { recursive: true });
    fs.writeFileSync(path.join(docs, 'engine.md'), '# Engine\n\nHand-written.\n');
    const updates = updateDocs(docs, [{ ...result('omega', '3 x'), docsPage: 'engine.md' }]);
    expect(updates.map((u) => path.basename(u.file))).toEqual(['benchmarks.md', 'engine.md']);
    const engine = fs.readFileSync(path.join(docs, 'engine.md'), 'utf8');
    expect(engine.startsWith('# Engine\n\nHand-written.\n\n<!-- bench:omega-tables:start -->\n**omega table**')).toBe(true);
    expect(fs.existsSync(path.join(docs, 'omega.md'))).toBe(false);
  });

  test('an empty result set says how to produce results', () => {
    expect(renderSummary([])).toMatch(/npm run bench -- --full/);
  });
});
