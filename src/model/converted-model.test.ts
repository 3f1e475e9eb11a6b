import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, onTestFinished, test } from 'vitest';
import { TesseraError } from '../errors.ts';
import { MANIFEST_FILE, readManifest } from './converted-model.ts';
import { GRAPH_VERSION } from './graph/llama-graph.ts';

function dirWithManifest(manifest: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-manifest-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  return dir;
}

const BASE = { format: 'tessera-onnx', formatVersion: 1, config: { numLayers: 1 }, graphs: { base: 'model.onnx', lora: 'model-lora.onnx' }, weightsFile: 'weights.bin' };

describe('readManifest', () => {
  test('reads a manifest written by this graph version', () => {
    expect(readManifest(dirWithManifest({ ...BASE, graphVersion: GRAPH_VERSION })).graphVersion).toBe(GRAPH_VERSION);
  });

  test('refuses a model converted by another graph version (its graphs take other inputs) with what to do', () => {
    for (const graphVersion of [GRAPH_VERSION - 1, undefined]) {
      const dir = dirWithManifest({ ...BASE, graphVersion });
      expect(() => readManifest(dir)).toThrow(TesseraError);
      expect(() => readManifest(dir)).toThrow(/graph version .*convert the checkpoint again/);
    }
  });
});
