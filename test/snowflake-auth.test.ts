import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { FloeError } from '../src/errors.js';
import { jwtAccount, KeyPairAuth, loadPrivateKey, loadPrivateKeyFile, publicKeyFingerprint } from '../src/destination/snowflake/auth.js';

const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pkcs8 = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const pkcs1 = pair.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
const passphrase = 'correct horse battery staple';
const encrypted = pair.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }).toString();
const publicPem = pair.publicKey.export({ type: 'spki', format: 'pem' }).toString();

const dir = mkdtempSync(join(tmpdir(), 'floe-sf-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The fingerprint as the docs compute it with openssl (§2.2). */
function opensslFingerprint(): string {
  const pub = join(dir, 'rsa_key.pub');
  writeFileSync(pub, publicPem);
  const der = execFileSync('openssl', ['rsa', '-pubin', '-in', pub, '-outform', 'DER'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const digest = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der });
  return 'SHA256:' + execFileSync('openssl', ['enc', '-base64'], { input: digest }).toString().trim();
}

function expectNoSecrets(err: unknown, ...secrets: string[]): void {
  const text = `${(err as Error).message} ${(err as FloeError).hint ?? ''} ${String((err as Error).cause ?? '')} ${JSON.stringify(err)}`;
  for (const s of secrets) expect(text).not.toContain(s);
  // No line of the PEM body either.
  for (const line of encrypted.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'))) expect(text).not.toContain(line);
}

describe('private key loading', () => {
  it('reads PKCS#8, encrypted PKCS#8 with its passphrase and PKCS#1 into the same key', () => {
    const fp = publicKeyFingerprint(pair.privateKey);
    for (const key of [loadPrivateKey(pkcs8), loadPrivateKey(encrypted, passphrase), loadPrivateKey(Buffer.from(pkcs1))]) {
      expect(key.type).toBe('private');
      expect(publicKeyFingerprint(key)).toBe(fp);
    }
  });

  it('says "wrong passphrase?" for a wrong passphrase and names the file, without any secret', () => {
    const file = join(dir, 'rsa_key.p8');
    writeFileSync(file, encrypted);
    let err: unknown;
    try {
      loadPrivateKeyFile(file, 'not the passphrase');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FloeError);
    expect((err as FloeError).message).toBe(`the private key file ${file} could not be decrypted: wrong passphrase?`);
    expect((err as FloeError).kind).toBe('config');
    expectNoSecrets(err, 'not the passphrase', passphrase);
  });

  it('asks for a passphrase when the key is encrypted and none was given', () => {
    expect(() => loadPrivateKey(encrypted)).toThrow(/encrypted and no passphrase was given/);
  });

  it('rejects text that is no key, and keys Snowflake cannot use', () => {
    expect(() => loadPrivateKey('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n')).toThrow(/is not a PEM private key/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    expect(() => loadPrivateKey(small)).toThrow(/1024-bit RSA key; Snowflake needs at least 2048 bits/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    expect(() => loadPrivateKey(ec)).toThrow(/needs RSA/);
  });
});

describe('fingerprint', () => {
  it('equals the openssl pipeline of the docs and the hash of the public PEM body', async () => {
    const fp = publicKeyFingerprint(loadPrivateKey(pkcs8));
    expect(fp).toBe(opensslFingerprint());
    const der = Buffer.from(publicPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    const { createHash } = await import('node:crypto');
    expect(fp).toBe('SHA256:' + createHash('sha256').update(der).digest('base64'));
    expect(fp).toMatch(/^SHA256:[A-Za-z0-9+/]{43}=$/);
  });
});

describe('account identifier in the claims', () => {
  it.each([
    ['myorg-myaccount', 'MYORG-MYACCOUNT'],
    ['MyOrg-My_Account', 'MYORG-MY_ACCOUNT'],
    ['https://myorg-myaccount.snowflakecomputing.com', 'MYORG-MYACCOUNT'],
    ['myorg-myaccount.privatelink.snowflakecomputing.com', 'MYORG-MYACCOUNT'],
    ['xy12345.us-east-2.aws', 'XY12345'],
    ['xy12345.us-east-1', 'XY12345'],
    ['xy12345.west-europe.azure.snowflakecomputing.com', 'XY12345'],
    ['myorg.myaccount', 'MYORG-MYACCOUNT'],
    ['xy12345', 'XY12345'],
  ])('%s -> %s', (input, expected) => {
    expect(jwtAccount(input)).toBe(expected);
  });
});

describe('KeyPairAuth', () => {
  const key: KeyObject = loadPrivateKey(encrypted, passphrase);

  it('signs RS256 tokens with the documented claims, verifiable with the public key', async () => {
    let now = Date.UTC(2026, 0, 2, 3, 4, 5);
    const auth = new KeyPairAuth({ account: 'myorg-myaccount', user: 'floe_user', privateKey: key, now: () => now });
    const token = auth.token();
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString());
    expect(header).toEqual({ alg: 'RS256', typ: 'JWT' });
    const { payload } = await jwtVerify(token, createPublicKey(publicPem), { algorithms: ['RS256'], currentDate: new Date(now) });
    const iat = Math.floor(now / 1000);
    expect(payload).toEqual({
      iss: `MYORG-MYACCOUNT.FLOE_USER.${opensslFingerprint()}`,
      sub: 'MYORG-MYACCOUNT.FLOE_USER',
      iat,
      exp: iat + 59 * 60,
    });
    expect(token).not.toMatch(/=/); // no padding anywhere in a JWT
    now += 1000;
    expect(auth.token()).toBe(token); // cached
  });

  it('re-mints after 50 minutes and after invalidate(), never past an hour', () => {
    let now = 1_700_000_000_000;
    const auth = new KeyPairAuth({ account: 'ACME-PROD', user: 'u', privateKey: key, now: () => now });
    const claims = (t: string): { iat: number; exp: number } => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
    const first = auth.token();
    now += 49 * 60_000;
    expect(auth.token()).toBe(first);
    now += 2 * 60_000; // 51 minutes after the first
    const second = auth.token();
    expect(second).not.toBe(first);
    expect(claims(second).iat).toBe(Math.floor(now / 1000));
    expect(claims(second).exp - claims(second).iat).toBeLessThanOrEqual(3600);
    now += 1000;
    auth.invalidate();
    const third = auth.token();
    expect(third).not.toBe(second);
    expect(claims(third).iat).toBe(Math.floor(now / 1000));
  });

  it('shows neither the key nor a token when serialised', () => {
    const auth = new KeyPairAuth({ account: 'a-b', user: 'u', privateKey: key });
    const token = auth.token();
    const text = JSON.stringify({ auth });
    expect(text).not.toContain(token);
    expect(text).not.toContain('PRIVATE');
    expect(JSON.parse(text).auth).toEqual({ subject: 'A-B.U', fingerprint: auth.fingerprint });
  });
});
