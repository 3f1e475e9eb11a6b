/**
 * Training text from Debian's man page packages: every man page a package installs (as `dpkg -L` lists it), gunzipped,
 * converted to text (man-text.ts), split into train and held-out pages. The split is by page name without the
 * language directory ("man7/signal.7"), so a page held out in one language is held out in all of them: a translation
 * of a training page never sits in another language's held-out text.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { isManLink, manToText } from './man-text.ts';

export interface CorpusFile {
  path: string;
  /** sha256 of the installed .gz file. */
  sha256: string;
  split: 'train' | 'heldout';
  /** Characters of text it gave. */
  textChars: number;
}

export interface Corpus {
  domain: string;
  debianPackage: string;
  packageVersion: string;
  files: CorpusFile[];
  /** Pages' texts joined by `separator`. */
  train: string[];
  heldout: string[];
}

/** A page shorter than this (after conversion) is skipped: stubs and near-empty translations. */
const MIN_PAGE_CHARS = 200;

/** Pages whose name hashes below this share of 2^32 are held out. */
const HELDOUT_SHARE = 0.1;

/** "/usr/share/man/de/man7/signal.7.gz" -> "man7/signal.7". */
export function pageKey(file: string): string {
  const m = /\/(man[^/]+)\/([^/]+?)(\.gz)?$/.exec(file);
  return m ? `${m[1]}/${m[2]}` : file;
}

export function isHeldOut(key: string): boolean {
  const h = createHash('sha256').update(key).digest().readUInt32BE(0);
  return h < HELDOUT_SHARE * 2 ** 32;
}

export function packageVersion(pkg: string): string {
  return execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8' }).trim();
}

export function readCorpus(domain: string, debianPackage: string): Corpus {
  const listed = execFileSync('dpkg', ['-L', debianPackage], { encoding: 'utf8' })
    .split('\n')
    .filter((f) => /^\/usr\/share\/man\/([^/]+\/)?man[^/]+\/[^/]+\.gz$/.test(f))
    .sort();
  const decoder = new TextDecoder('utf-8');
  const files: CorpusFile[] = [];
  const train: string[] = [];
  const heldout: string[] = [];
  for (const file of listed) {
    const stat = fs.lstatSync(file, { throwIfNoEntry: false });
    if (!stat?.isFile()) continue; // symlinked aliases
    const gz = fs.readFileSync(file);
    const source = decoder.decode(gunzipSync(gz));
    if (isManLink(source)) continue;
    const text = manToText(source);
    if (text.length < MIN_PAGE_CHARS) continue;
    const split = isHeldOut(pageKey(file)) ? 'heldout' : 'train';
    files.push({ path: file, sha256: createHash('sha256').update(gz).digest('hex'), split, textChars: text.length });
    (split === 'train' ? train : heldout).push(text);
  }
  return { domain, debianPackage, packageVersion: packageVersion(debianPackage), files, train, heldout };
}
