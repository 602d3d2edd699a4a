/**
 * Secret references: the control-plane tables never hold a password, passphrase or key in plain text
 * (predecessor defect 8). A stored value is one of
 *
 *   env:NAME        the worker's environment variable NAME, only if NAME starts with FLOE_SECRET_ENV_PREFIX
 *   file:/path      the contents of a regular file inside FLOE_SECRETS_DIR (at most 64 KiB, whitespace trimmed)
 *   enc:v2:<b64>    AES-256-GCM ciphertext under the operator key FLOE_SECRET_KEY (`floe secret encrypt`),
 *                   bound to the row, the setting and the host it is for
 *
 * Control-plane rows are data, not authority over the worker host (design.md invariant 9): whoever can
 * write a row must not be able to make a worker read its other environment variables or files, or send
 * a secret meant for one host to another. Hence the prefix, the directory and the binding; the worker's
 * operator sets all three. `enc:v1` values (bound to nothing) decrypt only while the operator allows
 * them with FLOE_ALLOW_ENC_V1=1, for the migration described in docs/operations.md.
 *
 * Resolution happens in the worker, at pipeline start, so rotating a secret needs no table change.
 * Error messages name the reference (an env var name or a path is not secret), never a value.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
import { isAbsolute, sep } from 'node:path';
import { FloeError } from '../errors.js';

export type SecretRef =
  | { readonly kind: 'env'; readonly name: string }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'enc'; readonly version: 1 | 2; readonly payload: string };

export type Environment = Readonly<Record<string, string | undefined>>;

export const SECRET_KEY_ENV = 'FLOE_SECRET_KEY';
export const SECRET_ENV_PREFIX_ENV = 'FLOE_SECRET_ENV_PREFIX';
export const DEFAULT_SECRET_ENV_PREFIX = 'FLOE_SECRET_';
export const SECRETS_DIR_ENV = 'FLOE_SECRETS_DIR';
export const ALLOW_ENC_V1_ENV = 'FLOE_ALLOW_ENC_V1';
/** Secret files are passwords and PEM keys; a bigger "secret" is a mistake or an attack (file:/dev/zero). */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;
const ENC_V1 = 'enc:v1:';
const ENC_V2 = 'enc:v2:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
// v1 bound ciphertexts only to floe; v2 adds the binding (row, setting, host) after this prefix.
const AAD_V1 = Buffer.from('floe secret v1');
const AAD_V2 = 'floe secret v2\n';

const REFERENCE_HINT = 'use env:NAME, file:/absolute/path or enc:v2:... (from `floe secret encrypt`)';

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
  for (const [prefix, version] of [
    [ENC_V2, 2],
    [ENC_V1, 1],
  ] as const) {
    if (text.startsWith(prefix)) {
      const payload = text.slice(prefix.length);
      return /^[A-Za-z0-9+/]+={0,2}$/.test(payload) ? { kind: 'enc', version, payload } : undefined;
    }
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

/**
 * Resolves a reference to the secret it names, in the worker's environment and within what the worker's
 * operator allows. `binding` says which row, setting and host the secret is for (`secretBinding` in
 * config.ts): an encrypted value made for another binding does not decrypt.
 */
export function resolveSecret(text: string, what: string, env: Environment, binding: string): string {
  const ref = checkSecretRef(text, what);
  switch (ref.kind) {
    case 'env':
      return readSecretEnv(ref.name, what, env);
    case 'file':
      return readSecretFile(ref.path, what, env);
    case 'enc':
      if (ref.version === 1 && !/^(1|true|yes)$/i.test(env[ALLOW_ENC_V1_ENV] ?? '')) {
        throw new FloeError('config', `${what}: enc:v1: secrets are not bound to their row and are refused`, {
          hint: `re-encrypt it with floe secret encrypt (see docs/operations.md), or set ${ALLOW_ENC_V1_ENV}=1 on the workers while migrating`,
        });
      }
      return decryptSecret(ref, loadSecretKey(env), what, binding);
  }
}

function readSecretEnv(name: string, what: string, env: Environment): string {
  const prefix = env[SECRET_ENV_PREFIX_ENV] || DEFAULT_SECRET_ENV_PREFIX;
  // The operator key is never a secret a row may name, whatever the prefix.
  if (name === SECRET_KEY_ENV || !name.startsWith(prefix)) {
    throw new FloeError('config', `${what}: environment variable ${name} may not be read by a secret reference`, {
      hint: `references read only variables whose names start with ${prefix} (${SECRET_ENV_PREFIX_ENV} on the workers), never ${SECRET_KEY_ENV}`,
    });
  }
  const value = env[name];
  if (value === undefined || value === '') {
    throw new FloeError('config', `${what}: environment variable ${name} is not set`, {
      hint: `set ${name} in the environment of every floe worker`,
    });
  }
  return value;
}

/**
 * A regular file inside FLOE_SECRETS_DIR (after resolving symbolic links, so a link cannot point out of
 * it), read up to MAX_SECRET_FILE_BYTES. Opened non-blocking, so a FIFO or device cannot hang the worker.
 */
function readSecretFile(path: string, what: string, env: Environment): string {
  const real = secretsDirPath(path, what, env, 'file: secret references', 'secret file');
  const fail = (reason: string, hint?: string): never => {
    throw new FloeError('config', `${what}: secret file ${path} ${reason}`, {
      hint: hint ?? 'check that the file exists on every floe worker and is readable by its user',
    });
  };
  let fd: number;
  try {
    fd = openSync(real, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return fail(`cannot be read (${errorCode(err)})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) fail('is not a regular file', 'point the reference at a plain file holding only the secret');
    if (stat.size > MAX_SECRET_FILE_BYTES)
      fail(`is larger than ${MAX_SECRET_FILE_BYTES / 1024} KiB`, 'a secret file holds one password or key');
    const buf = Buffer.alloc(MAX_SECRET_FILE_BYTES + 1);
    let length = 0;
    for (let n = 1; n > 0 && length < buf.length; length += n) n = readSync(fd, buf, length, buf.length - length, null);
    if (length > MAX_SECRET_FILE_BYTES)
      fail(`is larger than ${MAX_SECRET_FILE_BYTES / 1024} KiB`, 'a secret file holds one password or key');
    const value = buf.toString('utf8', 0, length).trim();
    buf.fill(0);
    if (value === '') fail('is empty', 'write the secret into the file');
    return value;
  } finally {
    closeSync(fd);
  }
}

/**
 * The real path of a file a control-plane row names, if it lies inside FLOE_SECRETS_DIR (after resolving
 * symbolic links, so a link cannot point out of it). `kind` says what the rule applies to, for the message.
 */
export function secretsDirPath(path: string, what: string, env: Environment, kind: string, noun = 'file'): string {
  const dir = env[SECRETS_DIR_ENV];
  if (!dir || !isAbsolute(dir)) {
    throw new FloeError('config', `${what}: ${kind} are off on this worker (${SECRETS_DIR_ENV} is not set)`, {
      hint: `set ${SECRETS_DIR_ENV} on every worker to the absolute path of the directory holding floe's secret files`,
    });
  }
  let realDir: string;
  try {
    realDir = realpathSync(dir);
  } catch (err) {
    throw new FloeError('config', `${what}: ${SECRETS_DIR_ENV} ${dir} cannot be read (${errorCode(err)})`);
  }
  let real: string;
  try {
    real = realpathSync(path);
  } catch (err) {
    throw new FloeError('config', `${what}: ${noun} ${path} cannot be read (${errorCode(err)})`, {
      hint: 'check that the file exists on every floe worker and is readable by its user',
    });
  }
  if (!real.startsWith(realDir.endsWith(sep) ? realDir : realDir + sep)) {
    throw new FloeError('config', `${what}: ${noun} ${path} is outside ${SECRETS_DIR_ENV} (${dir})`, {
      hint: `put the file under ${dir} on every worker, or ask the worker's operator to`,
    });
  }
  return real;
}

function errorCode(err: unknown): string {
  return (err as { code?: string }).code ?? 'unreadable';
}

/**
 * The operator key: 32 bytes, given as 64 hex digits or base64. The caller should `fill(0)` the
 * buffer when done with it.
 */
export function loadSecretKey(env: Environment = process.env): Buffer {
  const text = env[SECRET_KEY_ENV]?.trim();
  if (!text) {
    throw new FloeError('config', `${SECRET_KEY_ENV} is not set, so enc: secrets cannot be used`, {
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

/** Encrypts `plain` into its `enc:v2:` reference form, bound to `binding` (`secretBinding` in config.ts). */
export function encryptSecret(plain: string, key: Buffer, binding: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(AAD_V2 + binding));
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return ENC_V2 + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

function decryptSecret(ref: { version: 1 | 2; payload: string }, key: Buffer, what: string, binding: string): string {
  try {
    const blob = Buffer.from(ref.payload, 'base64');
    if (blob.length <= IV_BYTES + TAG_BYTES) throw new Error('truncated');
    const decipher = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV_BYTES));
    decipher.setAAD(ref.version === 1 ? AAD_V1 : Buffer.from(AAD_V2 + binding));
    decipher.setAuthTag(blob.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    const plain = Buffer.concat([decipher.update(blob.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
    const text = plain.toString('utf8');
    plain.fill(0);
    return text;
  } catch {
    throw new FloeError('config', `${what}: cannot decrypt the enc:v${ref.version}: secret`, {
      hint:
        ref.version === 2
          ? `it was encrypted for another row, setting or host (${binding} here), or under another ${SECRET_KEY_ENV}, or altered; re-encrypt it with floe secret encrypt`
          : `${SECRET_KEY_ENV} differs from the key it was encrypted with, or the value was altered; re-encrypt it with floe secret encrypt`,
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
