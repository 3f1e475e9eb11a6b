/**
 * Reading a checkpoint's small files (config.json, tokenizer.json, an index, a chat template) without trusting what
 * the path names: opened with O_NONBLOCK, so a FIFO or device put in place of the file cannot block the process, and
 * checked to be a regular file of bounded size on the descriptor before anything is read.
 */
import fs from 'node:fs';
import { TesseraError } from '../../errors.ts';

/** Largest JSON / template file read whole (big tokenizer.json files are a few tens of MiB). */
export const MAX_TEXT_FILE_BYTES = 256 * 1024 * 1024;

function invalid(message: string, cause?: unknown): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', message, cause === undefined ? undefined : { cause });
}

/** The text of `file` (UTF-8); CHECKPOINT_INVALID naming the file when it cannot be opened, is not regular, or too big. */
export function readRegularTextFile(file: string, maxBytes = MAX_TEXT_FILE_BYTES): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw invalid(`${file}: cannot open (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw invalid(`${file}: must be a regular file (found a ${kindOf(stat)})`);
    if (stat.size > maxBytes) throw invalid(`${file}: must be at most ${maxBytes} bytes. Given: ${stat.size} bytes`);
    const bytes = Buffer.alloc(stat.size);
    let filled = 0;
    while (filled < bytes.length) {
      const n = fs.readSync(fd, bytes, filled, bytes.length - filled, filled);
      if (n === 0) break;
      filled += n;
    }
    return bytes.toString('utf8', 0, filled);
  } finally {
    fs.closeSync(fd);
  }
}

/** Parses `file` as JSON; CHECKPOINT_INVALID naming the file and the parser's complaint (with its position). */
export function readJsonFile(file: string): unknown {
  const text = readRegularTextFile(file);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalid(`${file}: cannot read JSON (${(err as Error).message})`, err);
  }
}

/** Throws CHECKPOINT_INVALID unless `file` is a regular file (checked without opening it, e.g. before a copy). */
export function checkRegularFile(file: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    throw invalid(`${file}: cannot stat (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err);
  }
  if (!stat.isFile()) throw invalid(`${file}: must be a regular file (found a ${kindOf(stat)})`);
}

function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'directory';
  if (stat.isFIFO()) return 'FIFO';
  if (stat.isSocket()) return 'socket';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'device';
  return 'special file';
}
