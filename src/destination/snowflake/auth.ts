/**
 * Key-pair authentication for Snowflake (snowflake-api.md §2): an RS256 JWT whose issuer names the account,
 * the user and the SHA-256 fingerprint of the public key Snowflake has on file for that user.
 *
 * The private key lives only in a node:crypto `KeyObject`: it is never written anywhere, and no error or
 * log line built here contains key material or a token.
 */
import { createHash, createPrivateKey, createPublicKey, createSign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FloeError } from '../../errors.js';

/** Snowflake caps a key-pair JWT at one hour after `iat`, whatever `exp` says; stay a minute under. */
const DEFAULT_LIFETIME_SECONDS = 59 * 60;
/** Re-mint well before expiry so a token never expires between being read and being checked. */
const DEFAULT_REFRESH_AFTER_SECONDS = 50 * 60;
const MIN_MODULUS_BITS = 2048;

/**
 * Reads a PEM private key (PKCS#8, encrypted with `passphrase` or not, or PKCS#1 "RSA PRIVATE KEY").
 * `source` names the key in errors (a file name; never the content).
 */
export function loadPrivateKey(pem: string | Buffer, passphrase?: string, source = 'the private key'): KeyObject {
  const text = typeof pem === 'string' ? pem : pem.toString('utf8');
  const encrypted = /-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text) || /Proc-Type:\s*4,ENCRYPTED/.test(text);
  if (encrypted && !passphrase) {
    throw new FloeError('config', `${source} is encrypted and no passphrase was given`, {
      hint: 'set private_key_passphrase in the destination URL or FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE',
    });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(passphrase ? { key: text, format: 'pem', passphrase } : { key: text, format: 'pem' });
  } catch (err) {
    // OpenSSL's message can be opaque but never carries the key; still, only its code is kept.
    const code = (err as { code?: string }).code;
    if (encrypted) {
      throw new FloeError('config', `${source} could not be decrypted: wrong passphrase?`, {
        hint: 'check private_key_passphrase (or FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE)',
        cause: code ? new Error(code) : undefined,
      });
    }
    throw new FloeError('config', `${source} is not a PEM private key`, {
      hint: 'give a PKCS#8 key ("BEGIN PRIVATE KEY" or "BEGIN ENCRYPTED PRIVATE KEY"), e.g. from openssl pkcs8 -topk8',
      cause: code ? new Error(code) : undefined,
    });
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new FloeError('config', `${source} is a ${key.asymmetricKeyType ?? 'non-RSA'} key; Snowflake key-pair authentication needs RSA`, {
      hint: 'generate one with: openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt',
    });
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_MODULUS_BITS) {
    throw new FloeError('config', `${source} is a ${bits}-bit RSA key; Snowflake needs at least ${MIN_MODULUS_BITS} bits`);
  }
  return key;
}

/** Reads and loads a private key file; errors name the file, never its content. */
export function loadPrivateKeyFile(path: string, passphrase?: string): KeyObject {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new FloeError('config', `the private key file ${path} could not be read: ${(err as { code?: string }).code ?? 'error'}`, {
      hint: 'check private_key_file in the destination URL',
    });
  }
  try {
    return loadPrivateKey(pem, passphrase, `the private key file ${path}`);
  } finally {
    pem.fill(0); // the PEM text is not needed once parsed
  }
}

/** `SHA256:` + base64(sha256(DER SubjectPublicKeyInfo)): Snowflake's RSA_PUBLIC_KEY_FP (§2.2). */
export function publicKeyFingerprint(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return 'SHA256:' + createHash('sha256').update(der).digest('base64');
}

/**
 * The account part of the JWT claims (§2.3, §2.6): upper case, without region, cloud or domain.
 * - `myorg-myaccount` (preferred form) stays `MYORG-MYACCOUNT`;
 * - a URL or host (`https://myorg-myaccount.snowflakecomputing.com`) is reduced to its first label;
 * - a legacy locator with region (`xy12345.us-east-2.aws`, `xy12345.us-east-1`) keeps only the locator;
 * - the SQL form `myorg.myaccount` becomes `MYORG-MYACCOUNT` (a period would invalidate the JWT).
 * The doc sample's "cut at the first `-`" branch is deliberately not copied: it breaks org-form names.
 */
export function jwtAccount(account: string): string {
  let s = account.trim().replace(/^[a-z]+:\/\//i, '');
  s = s.replace(/[/:].*$/, ''); // path or port of a URL
  s = s.replace(/\.snowflakecomputing\.(com|cn)$/i, '').replace(/\.privatelink$/i, '');
  const parts = s.split('.').filter((p) => p !== '');
  if (parts.length === 0) throw new FloeError('config', `"${account}" is not a Snowflake account identifier`);
  let id: string;
  if (parts.length >= 3)
    id = parts[0]!; // locator.region.cloud
  else if (parts.length === 2 && /^[a-z]{2,}(-[a-z]+)+-?\d+$/i.test(parts[1]!))
    id = parts[0]!; // locator.region (AWS)
  else id = parts.join('-'); // orgname.account_name
  return id.toUpperCase();
}

export interface KeyPairAuthOptions {
  readonly account: string;
  readonly user: string;
  readonly privateKey: KeyObject;
  /** Token lifetime (Default: 3540 s; Snowflake honours at most 3600 s). */
  readonly lifetimeSeconds?: number;
  /** Age at which a cached token is replaced (Default: 3000 s). */
  readonly refreshAfterSeconds?: number;
  /** Clock in ms since the epoch, for tests (Default: Date.now). */
  readonly now?: () => number;
}

const b64url = (data: string | Buffer): string => Buffer.from(data).toString('base64url');

/** Mints and caches the key-pair JWT for one Snowflake user. */
export class KeyPairAuth {
  readonly fingerprint: string;
  /** `ACCOUNT.USER`, the JWT subject. */
  readonly subject: string;
  readonly #key: KeyObject;
  readonly #lifetime: number;
  readonly #refreshAfter: number;
  readonly #now: () => number;
  #cached: { token: string; issuedAt: number } | undefined;

  constructor(o: KeyPairAuthOptions) {
    if (!o.user.trim()) throw new FloeError('config', 'the Snowflake user name is empty');
    this.#key = o.privateKey;
    this.fingerprint = publicKeyFingerprint(o.privateKey);
    this.subject = `${jwtAccount(o.account)}.${o.user.trim().toUpperCase()}`;
    this.#lifetime = Math.min(o.lifetimeSeconds ?? DEFAULT_LIFETIME_SECONDS, 3600);
    this.#refreshAfter = Math.min(o.refreshAfterSeconds ?? DEFAULT_REFRESH_AFTER_SECONDS, this.#lifetime - 1);
    this.#now = o.now ?? Date.now;
  }

  /** The cached JWT, re-minted once it is older than the refresh age. */
  token(): string {
    const now = Math.floor(this.#now() / 1000);
    if (this.#cached && now - this.#cached.issuedAt < this.#refreshAfter && now >= this.#cached.issuedAt) return this.#cached.token;
    const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
    const payload = b64url(
      JSON.stringify({ iss: `${this.subject}.${this.fingerprint}`, sub: this.subject, iat: now, exp: now + this.#lifetime }),
    );
    const signature = createSign('RSA-SHA256').update(`${header}.${payload}`).sign(this.#key).toString('base64url');
    this.#cached = { token: `${header}.${payload}.${signature}`, issuedAt: now };
    return this.#cached.token;
  }

  /** Forgets the cached token (after a 401), so the next call mints a fresh one. */
  invalidate(): void {
    this.#cached = undefined;
  }

  /** Never show the key or a token when the object is logged or inspected. */
  toJSON(): { subject: string; fingerprint: string } {
    return { subject: this.subject, fingerprint: this.fingerprint };
  }
}
