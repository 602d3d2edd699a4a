/**
 * Who may call the API and the console's data endpoints.
 *
 * - A token in the `Authorization: Bearer <token>` header, compared in constant time with
 *   FLOE_API_TOKEN. No cookie is ever set or read: a cross-site page cannot make the browser attach the
 *   token, so actions are CSRF-safe by construction; Origin and Sec-Fetch-Site are checked as well, so a
 *   cross-site write is refused even before the token is looked at.
 * - Without FLOE_API_TOKEN every request that needs a token is refused (the API is off, not open).
 * - Reads (GET) may go without a token only when the operator said so (`publicRead`).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { FloeError } from '../errors.js';
import { withStatus } from './operations.js';

export const API_TOKEN_ENV = 'FLOE_API_TOKEN';

export interface AuthPolicy {
  /** FLOE_API_TOKEN; undefined: nothing that needs a token is allowed. */
  readonly token: string | undefined;
  /** Reads without a token (`--console-public-read`). */
  readonly publicRead: boolean;
  /** No writes at all (`floe replicate` has no control plane to write to). */
  readonly readOnly: boolean;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function authPolicyFromEnv(options: { publicRead: boolean; readOnly: boolean }, env: NodeJS.ProcessEnv = process.env): AuthPolicy {
  const token = env[API_TOKEN_ENV];
  if (token !== undefined && token !== '' && token.length < 16) {
    throw new FloeError('config', `${API_TOKEN_ENV} is too short`, {
      hint: 'use at least 16 random characters, e.g. openssl rand -hex 24',
    });
  }
  return { token: token || undefined, publicRead: options.publicRead, readOnly: options.readOnly };
}

/** Whether the request carries the right token (constant time, whatever the lengths). */
export function hasToken(policy: AuthPolicy, req: FastifyRequest): boolean {
  if (policy.token === undefined) return false;
  const header = req.headers.authorization;
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false;
  return timingSafeEqual(digest(header.slice(7).trim()), digest(policy.token));
}

/**
 * Throws a FloeError with its HTTP status when the request may not proceed. `write`: the request
 * changes something (every method but GET/HEAD).
 */
export function authorize(policy: AuthPolicy, req: FastifyRequest, write: boolean): void {
  if (write) checkSameOrigin(req);
  if (!write && policy.publicRead) return;
  if (policy.token === undefined) {
    throw withStatus(
      new FloeError('auth', 'the API needs a token and none is configured', {
        hint: `start floe with ${API_TOKEN_ENV} set${write ? '' : ', or pass --console-public-read for read-only pages'}`,
      }),
      401,
    );
  }
  if (!hasToken(policy, req)) {
    throw withStatus(
      new FloeError('auth', req.headers.authorization ? 'the API token is wrong' : 'the API needs a token', {
        hint: `send the header Authorization: Bearer <${API_TOKEN_ENV}>`,
      }),
      401,
    );
  }
  if (write && policy.readOnly) {
    throw withStatus(
      new FloeError('config', 'this console is read-only', { hint: 'actions need floe run with a control plane (FLOE_DATABASE_URL)' }),
      405,
    );
  }
}

/**
 * Refuses writes a browser sends on behalf of another site: Sec-Fetch-Site other than same-origin/none,
 * or an Origin whose host is not the Host the request was sent to.
 */
function checkSameOrigin(req: FastifyRequest): void {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') {
    throw withStatus(new FloeError('auth', `cross-site request refused (Sec-Fetch-Site: ${site.slice(0, 20)})`), 403);
  }
  const origin = req.headers.origin;
  if (typeof origin === 'string') {
    // Both through URL, so a default port written out on one side only still matches.
    const hostOf = (url: string): string | undefined => {
      try {
        return new URL(url).host;
      } catch {
        return undefined;
      }
    };
    const host = hostOf(origin);
    if (host === undefined || host !== hostOf(`${new URL(origin).protocol}//${req.headers.host ?? ''}`)) {
      throw withStatus(new FloeError('auth', 'cross-origin request refused (Origin does not match Host)'), 403);
    }
  }
}
