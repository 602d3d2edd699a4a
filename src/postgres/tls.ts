/**
 * TLS for every PostgreSQL connection floe opens (sources and their replication connections, the
 * control plane, the state store), from the URL as libpq reads it: `sslmode` disable, require
 * (encrypted, server not checked; with `sslrootcert` the CA is checked), verify-ca (CA checked) or
 * verify-full (CA and host name checked), and `sslrootcert` / `sslcert` / `sslkey` files. node-postgres
 * treats require and verify-ca as verify-full unless told to follow libpq (`uselibpqcompat`), which this
 * adds. `prefer` and `allow` are refused: floe cannot fall back to a plain connection.
 */
import { existsSync } from 'node:fs';
import { FloeError } from '../errors.js';

const MODES = new Set(['disable', 'require', 'verify-ca', 'verify-full']);
const FILES = ['sslrootcert', 'sslcert', 'sslkey'] as const;

/** The URL node-postgres should be given for `url`; unchanged when it sets no sslmode. */
export function withTls(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url; // pg reports an unparseable URL itself
  }
  const mode = u.searchParams.get('sslmode');
  if (mode === null) return url;
  if (!MODES.has(mode)) {
    throw new FloeError('config', `sslmode=${mode} is not supported`, {
      hint: 'use sslmode=require (encrypted), verify-full (encrypted; the server is checked against sslrootcert) or disable; floe never falls back to an unencrypted connection',
    });
  }
  for (const key of FILES) {
    const path = u.searchParams.get(key);
    if (path !== null && !existsSync(path)) {
      throw new FloeError('config', `${key} file ${path} does not exist`, {
        hint: `point ${key} in the connection URL at a readable PEM file`,
      });
    }
  }
  if (mode === 'verify-ca' && !u.searchParams.has('sslrootcert')) {
    throw new FloeError('config', 'sslmode=verify-ca needs sslrootcert', { hint: 'add sslrootcert=/path/to/ca.crt to the connection URL' });
  }
  if (!u.searchParams.has('uselibpqcompat')) u.searchParams.set('uselibpqcompat', 'true');
  return u.toString();
}

const CA_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** A hint for a TLS failure of a PostgreSQL connection, or undefined when the error is not one. */
export function tlsHint(code: string, message: string): string | undefined {
  if (CA_CODES.has(code)) {
    return "the server's certificate is not signed by a CA floe trusts: set sslrootcert to the CA that signed it (or sslmode=require to encrypt without checking)";
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return "the server's certificate does not name the host in the URL: connect by a name it lists, or use sslmode=verify-ca to check only the CA";
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return "renew the server's certificate";
  if (/does not support SSL/i.test(message)) return 'turn on ssl in the server (ssl = on), or use sslmode=disable';
  return undefined;
}
