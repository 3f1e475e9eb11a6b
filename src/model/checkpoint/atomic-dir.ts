/** Creates a directory's contents at most once, atomically: build in a temporary sibling, then rename into place. */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';

/** A directory is complete once it exists: it only ever appears through the final rename. */
function isComplete(dir: string): boolean {
  return fs.existsSync(dir);
}

/**
 * Ensures `dir` exists with the contents `fill` writes. When `dir` already exists nothing runs. Otherwise `fill`
 * writes into a fresh temporary sibling that is renamed to `dir`; if another process got there first, its copy is
 * kept and ours removed. A failing `fill` leaves no trace.
 */
export async function ensureDirOnce(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  if (isComplete(dir)) return;
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmpDir = `${dir}.tmp-${process.pid}-${randomUUID()}`;
  fs.mkdirSync(tmpDir);
  try {
    await fill(tmpDir);
    try {
      fs.renameSync(tmpDir, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const lostRace = (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'EPERM') && isComplete(dir);
      if (!lostRace) throw err;
    }
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}
