/** Key pairs and key-pair JWTs signed the way a Snowflake client signs them, for tests of the emulator's HTTP API. */
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

export function keyPair(): { privateKey: KeyObject; publicPem: string; fingerprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return {
    privateKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    fingerprint: 'SHA256:' + createHash('sha256').update(der).digest('base64'),
  };
}

export async function jwt(
  key: KeyObject,
  fingerprint: string,
  opts: { account: string; user: string; iat?: number; exp?: number },
): Promise<string> {
  const { account, user } = opts;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
    .setIssuer(`${account}.${user}.${fingerprint}`)
    .setSubject(`${account}.${user}`)
    .setIssuedAt(opts.iat ?? now)
    .setExpirationTime(opts.exp ?? now + 3600)
    .sign(key);
}
