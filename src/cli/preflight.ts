/**
 * Checks of `tessera serve` settings that name files and directories, run before anything slow (model generation,
 * conversion, worker start): a wrong path fails in a second with one line naming the flag, not after minutes with a
 * stack trace.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { TesseraError } from '../errors.ts';
import type { ServeConfig } from './config.ts';

function check(flag: string, path: string, kind: 'directory' | 'file'): void {
  let isKind: boolean;
  try {
    const st = statSync(path);
    isKind = kind === 'directory' ? st.isDirectory() : st.isFile();
    accessSync(path, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TesseraError('CONFIG_INVALID', `--${flag} ${path}: ${code === 'ENOENT' ? `no such ${kind}` : code === 'EACCES' ? 'not readable' : (err as Error).message}`);
  }
  if (!isKind) throw new TesseraError('CONFIG_INVALID', `--${flag} ${path}: not a ${kind}`);
}

export function preflightServeConfig(config: ServeConfig): void {
  for (const dir of config.adaptersDir) check('adapters-dir', dir, 'directory');
  for (const dir of config.adapterRoots) check('adapter-root', dir, 'directory');
  if (config.apiKeysFile) check('api-keys', config.apiKeysFile, 'file');
  if (config.tlsCert) check('tls-cert', config.tlsCert, 'file');
  if (config.tlsKey) check('tls-key', config.tlsKey, 'file');
  if (config.tlsClientCa) check('tls-client-ca', config.tlsClientCa, 'file');
  if ((config.tlsCert === null) !== (config.tlsKey === null)) {
    throw new TesseraError('CONFIG_INVALID', `--tls-cert and --tls-key go together. Given: ${config.tlsCert ? '--tls-cert only' : '--tls-key only'}`);
  }
}
