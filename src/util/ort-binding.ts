import { readFileSync } from 'node:fs';
import { register } from 'node:module';

/**
 * Which ONNX Runtime Node binding this process uses. One process can hold one ONNX Runtime core: two builds of
 * `libonnxruntime.so.1` share a soname, so the second addon binds to the first core and fails (`version
 * VERS_1.29.0 not found`). The CPU package (`onnxruntime-node`) is the default; `--device cuda` selects the CUDA build
 * once, at start-up, before anything loads ONNX Runtime: every `import 'onnxruntime-node'` of this thread and of the
 * worker threads started after it (src/util/ts-worker.ts passes the choice on) then resolves to that build.
 */
let selectedUrl: string | null = null;

/** Makes `onnxruntime-node` resolve to the CommonJS entry at `entryUrl` in this thread (and threads started later). */
export function useOrtBinding(entryUrl: string): void {
  if (selectedUrl === entryUrl) return;
  if (selectedUrl !== null) throw new Error(`an ONNX Runtime binding is already selected (${selectedUrl})`);
  if (onnxRuntimeLoaded()) throw new Error('ONNX Runtime is already loaded in this process: select the binding before anything imports onnxruntime-node');
  register(new URL('./ort-binding-hooks.mjs', import.meta.url), { data: { url: entryUrl } });
  selectedUrl = entryUrl;
}

/** The entry URL worker threads must resolve `onnxruntime-node` to; null = the default package. */
export function selectedOrtBinding(): string | null {
  return selectedUrl;
}

/** Whether an ONNX Runtime core is mapped into this process (Linux: /proc/self/maps; elsewhere: unknown, false). */
export function onnxRuntimeLoaded(): boolean {
  try {
    return /libonnxruntime\.so/.test(readFileSync('/proc/self/maps', 'utf8'));
  } catch {
    return false;
  }
}
