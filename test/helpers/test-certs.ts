/**
 * Throw-away X.509 certificates for TLS tests, made with the `openssl` command line (node:crypto can read
 * certificates but not issue them). EC P-256 keys: fast to generate. Valid for one day.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertPair {
  certPath: string;
  keyPath: string;
  cert: Buffer;
  key: Buffer;
}

export interface TestCerts {
  /** The CA that signs the server and the trusted client certificate. */
  ca: CertPair;
  /** CN localhost, SAN IP:127.0.0.1 and DNS:localhost, signed by `ca`. */
  server: CertPair;
  /** Client-auth certificate signed by `ca`. */
  client: CertPair;
  /** A second, unrelated CA and a client certificate it signed (must be refused under mutual TLS). */
  rogueCa: CertPair;
  rogueClient: CertPair;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('the `openssl` command is not installed: TLS tests need it to issue certificates (apt-get install openssl)');
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

function pair(dir: string, name: string): CertPair {
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  return { certPath, keyPath, cert: readFileSync(certPath), key: readFileSync(keyPath) };
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCa(dir: string, name: string): CertPair {
  openssl(
    ['req', '-x509', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
  return pair(dir, name);
}

function makeLeaf(dir: string, name: string, ca: string, extensions: string): CertPair {
  openssl(['req', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  writeFileSync(join(dir, `${name}.ext`), `${extensions}\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`], dir);
  return pair(dir, name);
}

/** Issues a CA, a server and a client certificate, and a rogue CA with its own client, into `dir`. */
export function makeTestCerts(dir: string): TestCerts {
  const ca = makeCa(dir, 'tessera-test-ca');
  const server = makeLeaf(dir, 'localhost', 'tessera-test-ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth');
  const client = makeLeaf(dir, 'tenant-client', 'tessera-test-ca', 'extendedKeyUsage=clientAuth');
  const rogueCa = makeCa(dir, 'rogue-ca');
  const rogueClient = makeLeaf(dir, 'rogue-client', 'rogue-ca', 'extendedKeyUsage=clientAuth');
  return { ca, server, client, rogueCa, rogueClient };
}
