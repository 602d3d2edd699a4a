/**
 * Secret references: the control-plane tables never hold a password, passphrase or key in plain text
 * (predecessor defect 8). A stored value is one of
 *
 *   env:NAME        the worker's environment variable NAME
 *   file:/path      the contents of a file (surrounding whitespace trimmed), e.g. a mounted Kubernetes secret
 *   enc:v1:<b64>    AES-256-GCM ciphertext under the operator key FLOE_SECRET_KEY (`floe secret encrypt`)
 *
 * Resolution happens in the worker, at pipeline start, so rotating a secret needs no table change.
 * Error messages name the reference (an env var name or a path is not secret), never a value.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { FloeError } from '../errors.js';

export type SecretRef =
  | { readonly kind: 'env'; readonly name: string }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'enc'; readonly payload: string };

export type Environment = Readonly<Record<string, string | undefined>>;

export const SECRET_KEY_ENV = 'FLOE_SECRET_KEY';
const ENC_PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
// Binds ciphertexts to their purpose: a blob encrypted by another tool under the same key is refused.
const AAD = Buffer.from('floe secret v1');

const REFERENCE_HINT = 'use env:NAME, file:/absolute/path or enc:v1:... (from `floe secret encrypt`)';

/** Parses a stored reference; undefined when the text is not a reference (e.g. a plain-text password). */
export function parseSecretRef(text: string): SecretRef | undefined {
  if (text.startsWith('env:')) {
    const name = text.slice(4);
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? { kind: 'env', name } : undefined;
  }
  if (text.startsWith('file:')) {
    const path = text.slice(5);
    return isAbsolute(path) ? { kind: 'file', path } : undefined;
  }
  if (text.startsWith(ENC_PREFIX)) {
    const payload = text.slice(ENC_PREFIX.length);
    return /^[A-Za-z0-9+/]+={0,2}$/.test(payload) ? { kind: 'enc', payload } : undefined;
  }
  return undefined;
}

/**
 * Checks that `text` is a well-formed reference. `what` names the setting in the error
 * ("source app password"); the text itself is never echoed, since it may be a pasted password.
 */
export function checkSecretRef(text: string, what: string): SecretRef {
  const ref = parseSecretRef(text);
  if (!ref) {
    throw new FloeError('config', `${what} is not a secret reference (plain-text secrets are not stored)`, { hint: REFERENCE_HINT });
  }
  return ref;
}

/** Resolves a reference to the secret it names, in the worker's environment. */
export function resolveSecret(text: string, what: string, env: Environment = process.env): string {
  const ref = checkSecretRef(text, what);
  switch (ref.kind) {
    case 'env': {
      const value = env[ref.name];
      if (value === undefined || value === '') {
        throw new FloeError('config', `${what}: environment variable ${ref.name} is not set`, {
          hint: `set ${ref.name} in the environment of every floe worker`,
        });
      }
      return value;
    }
    case 'file': {
      let value: string;
      try {
        value = readFileSync(ref.path, 'utf8').trim();
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'unreadable';
        throw new FloeError('config', `${what}: cannot read secret file ${ref.path} (${code})`, {
          hint: 'check that the file exists on every floe worker and is readable by its user',
        });
      }
      if (value === '') throw new FloeError('config', `${what}: secret file ${ref.path} is empty`);
      return value;
    }
    case 'enc':
      return decryptSecret(ref.payload, loadSecretKey(env), what);
  }
}

/**
 * The operator key: 32 bytes, given as 64 hex digits or base64. The caller should `fill(0)` the
 * buffer when done with it.
 */
export function loadSecretKey(env: Environment = process.env): Buffer {
  const text = env[SECRET_KEY_ENV]?.trim();
  if (!text) {
    throw new FloeError('config', `${SECRET_KEY_ENV} is not set, so enc:v1: secrets cannot be used`, {
      hint: `set ${SECRET_KEY_ENV} to 32 random bytes (e.g. openssl rand -base64 32) on every floe worker`,
    });
  }
  const key = /^[0-9a-fA-F]{64}$/.test(text)
    ? Buffer.from(text, 'hex')
    : /^[A-Za-z0-9+/]{43}=?$/.test(text)
      ? Buffer.from(text, 'base64')
      : undefined;
  if (!key || key.length !== 32) {
    key?.fill(0);
    throw new FloeError('config', `${SECRET_KEY_ENV} must be 32 bytes, as 64 hex digits or base64`, {
      hint: 'generate one with: openssl rand -base64 32',
    });
  }
  return key;
}

/** Encrypts `plain` into its `enc:v1:` reference form. */
export function encryptSecret(plain: string, key: Buffer): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(AAD);
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return ENC_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

function decryptSecret(payload: string, key: Buffer, what: string): string {
  try {
    const blob = Buffer.from(payload, 'base64');
    if (blob.length <= IV_BYTES + TAG_BYTES) throw new Error('truncated');
    const decipher = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV_BYTES));
    decipher.setAAD(AAD);
    decipher.setAuthTag(blob.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    const plain = Buffer.concat([decipher.update(blob.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
    const text = plain.toString('utf8');
    plain.fill(0);
    return text;
  } catch {
    throw new FloeError('config', `${what}: cannot decrypt the enc:v1: secret`, {
      hint: `${SECRET_KEY_ENV} differs from the key it was encrypted with, or the value was altered; re-encrypt it with floe secret encrypt`,
    });
  } finally {
    key.fill(0);
  }
}

/**
 * Replaces every occurrence of the given secret values in `text` by `***`: for error messages from
 * drivers that may echo a connection string, before they reach a log or `pipeline.last_error`.
 */
export function redactSecrets(text: string, secrets: Iterable<string>): string {
  let out = text;
  for (const s of secrets) {
    // Very short values would redact ordinary words; they are not worth protecting by substitution.
    if (s.length >= 4) {
      out = out.split(s).join('***');
      const encoded = encodeURIComponent(s);
      if (encoded !== s) out = out.split(encoded).join('***');
    }
  }
  return out;
}
