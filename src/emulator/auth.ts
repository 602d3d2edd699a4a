/**
 * Key-pair JWT verification as Snowflake does it (reference §2.3, §2.5), and
 * the scoped tokens the emulator's `/oauth/token` issues.
 *
 * A key-pair JWT names its key by fingerprint in `iss`
 * (`ACCOUNT.USER.SHA256:<base64 sha256 of the SPKI DER>`); the token is
 * accepted only if that user is registered with a public key of exactly that
 * fingerprint and the RS256/384/512 signature verifies with it. Effective
 * lifetime is at most one hour after `iat`, whatever `exp` says.
 */
import { createHash, createPublicKey, createSecretKey, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT, compactVerify, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

export interface Principal {
  readonly user: string;
  readonly kind: 'keypair' | 'oauth';
  /** Role named in the token exchange scope (`session:role:R`), if any. */
  readonly role?: string;
}

/** Why a token was refused; `message` is what the 401 body says. */
export class AuthFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'AuthFailure';
  }
}

const ALGORITHMS = ['RS256', 'RS384', 'RS512'];
const MAX_LIFETIME_S = 3600;
const SKEW_S = 60;
const OAUTH_ISSUER = 'floe-emulator-oauth';

export function publicKeyFingerprint(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  return 'SHA256:' + createHash('sha256').update(der).digest('base64');
}

/** Seconds from a claim that may be in seconds or milliseconds (Snowflake accepts both). */
function toSeconds(v: unknown): number | undefined {
  if (typeof v !== 'number' || !Number.isFinite(v)) return undefined;
  return v > 1e11 ? Math.floor(v / 1000) : v;
}

export class Authenticator {
  readonly #users = new Map<string, { key: KeyObject; fingerprint: string }>();
  readonly #secret = createSecretKey(randomBytes(32));
  /**
   * Key-pair tokens whose signature verified, with the key it verified with. A client sends the same token
   * with every request for up to an hour, and an RSA verification per append showed in profiles; the
   * claims are still checked on every request, and a replaced key never matches an entry.
   */
  readonly #verified = new Map<string, KeyObject>();
  /** Lifetime of scoped tokens (tests shorten it to exercise refresh). */
  oauthTtlSeconds = 3600;

  constructor(readonly account: string) {}

  /** Registers (or replaces) a user's public key; returns its fingerprint. */
  addUser(name: string, publicKeyPem: string): string {
    const key = createPublicKey({ key: publicKeyPem, format: 'pem' });
    if (key.asymmetricKeyType !== 'rsa') throw new Error('only RSA public keys are supported');
    const fingerprint = publicKeyFingerprint(key);
    this.#users.set(name.toUpperCase(), { key, fingerprint });
    return fingerprint;
  }

  users(): { name: string; fingerprint: string }[] {
    return [...this.#users].map(([name, u]) => ({ name, fingerprint: u.fingerprint }));
  }

  /** Verifies a bearer token of either kind. Throws AuthFailure. */
  async verify(authorization: string | undefined, tokenType: string | undefined): Promise<Principal> {
    const ref = randomUUID();
    const invalid = (why: string) => new AuthFailure('390144', `JWT token is invalid. ${why} [${ref}]`);
    if (!authorization || !/^Bearer\s+\S+/i.test(authorization)) {
      throw new AuthFailure('390101', `Authorization header is missing or is not a Bearer token. [${ref}]`);
    }
    const token = authorization.replace(/^Bearer\s+/i, '').trim();
    let claims: ReturnType<typeof decodeJwt>;
    let alg: string | undefined;
    try {
      claims = decodeJwt(token);
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw invalid('The token could not be decoded.');
    }
    const type = tokenType?.toUpperCase();
    if (claims.iss === OAUTH_ISSUER) {
      if (type && type !== 'OAUTH') throw invalid(`Token type ${type} does not match an OAuth token.`);
      try {
        const { payload } = await jwtVerify(token, this.#secret, { issuer: OAUTH_ISSUER, algorithms: ['HS256'] });
        return { user: String(payload.sub), kind: 'oauth', role: typeof payload.role === 'string' ? payload.role : undefined };
      } catch {
        throw new AuthFailure('390303', `Invalid OAuth access token. [${ref}]`);
      }
    }
    if (type && type !== 'KEYPAIR_JWT') throw invalid(`Token type ${type} does not match a key-pair JWT.`);
    if (!alg || !ALGORITHMS.includes(alg)) throw invalid(`Unsupported algorithm ${alg ?? '(none)'}.`);
    const iss = typeof claims.iss === 'string' ? claims.iss : '';
    const m = /^([^.]+)\.(.+)\.(SHA256:[A-Za-z0-9+/=]+)$/.exec(iss);
    if (!m) throw invalid("The 'iss' claim must be ACCOUNT.USER.SHA256:<fingerprint>.");
    const [, account, user, fingerprint] = m as unknown as [string, string, string, string];
    if (claims.sub !== `${account}.${user}`) throw invalid("The 'sub' claim must be ACCOUNT.USER, matching 'iss'.");
    if (account !== this.account) throw invalid(`The token names account ${account}; this server is account ${this.account}.`);
    const registered = this.#users.get(user);
    if (!registered || user !== user.toUpperCase()) throw invalid(`User ${user} does not exist or has no public key registered.`);
    if (registered.fingerprint !== fingerprint) {
      throw invalid(
        `Public key fingerprint mismatch: the token names ${fingerprint}, but the key registered for user ${user} has fingerprint ${registered.fingerprint}.`,
      );
    }
    if (this.#verified.get(token) !== registered.key) {
      try {
        await compactVerify(token, registered.key, { algorithms: ALGORITHMS });
      } catch {
        throw invalid('The signature does not verify with the registered public key.');
      }
      if (this.#verified.size >= 1024) this.#verified.clear();
      this.#verified.set(token, registered.key);
    }
    const now = Math.floor(Date.now() / 1000);
    const iat = toSeconds(claims.iat);
    const exp = toSeconds(claims.exp);
    if (iat === undefined || exp === undefined) throw invalid("The 'iat' and 'exp' claims are required.");
    if (iat > now + SKEW_S) throw invalid("The 'iat' claim is in the future.");
    if (now > Math.min(exp, iat + MAX_LIFETIME_S)) throw invalid('The token has expired.');
    return { user, kind: 'keypair' };
  }

  /** Mints the scoped token returned by /oauth/token. */
  async issueScoped(user: string, role: string | undefined): Promise<{ token: string; expiresIn: number }> {
    const jwt = new SignJWT(role ? { role } : {})
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(OAUTH_ISSUER)
      .setSubject(user)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.oauthTtlSeconds);
    return { token: await jwt.sign(this.#secret), expiresIn: this.oauthTtlSeconds };
  }
}
