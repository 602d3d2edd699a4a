/**
 * The request layer shared by the SQL API and Snowpipe Streaming clients (snowflake-api.md §1.3, §1.11, §3.1).
 *
 * - One keep-alive undici `Pool` per origin.
 * - Every request carries `Authorization: Bearer`, the token-type header, `Accept: application/json` and
 *   `User-Agent: floe/<version>`.
 * - 408, 429, 5xx and network errors are retried with exponential backoff and full jitter (honouring
 *   `Retry-After`); a 401 refreshes the token once and retries once; a second 401 or a 403 is terminal
 *   (`auth`, retry `manual`): a wrong key never turns into a retry loop.
 * - Each attempt runs through a circuit breaker shared per Snowflake account. Only outages count as
 *   failures (429, 5xx, network, timeouts); statement errors, auth errors and other 4xx answers do not, so
 *   a bad credential cannot hold the breaker open. While it is open, calls fail at once with
 *   `BreakerOpenError` (retry `timed`, `retryAfterMs`).
 * - Messages carry the route, the HTTP status and Snowflake's code and message, never a token or key.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { BrokenCircuitError, CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen, type CircuitBreakerPolicy } from 'cockatiel';
import { Pool } from 'undici';
import { FloeError } from '../../errors.js';
import type { Logger } from '../../telemetry/logger.js';
import type { KeyPairAuth } from './auth.js';
import type { BreakerStateName, SnowflakeMetrics, SnowflakeRoute } from './metrics.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
export const USER_AGENT = `floe/${VERSION}`;

/** Longest server message kept in an error, so a huge HTML error page cannot flood logs. */
const MAX_MESSAGE_CHARS = 600;

export interface RetryPolicy {
  /** Attempts including the first (Default: 6). */
  readonly maxAttempts: number;
  /** First backoff ceiling; doubles per attempt (Default: 250 ms). */
  readonly baseDelayMs: number;
  /** Backoff ceiling (Default: 20 s). */
  readonly maxDelayMs: number;
  /** Longest `Retry-After` obeyed (Default: 60 s). */
  readonly maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, baseDelayMs: 250, maxDelayMs: 20_000, maxRetryAfterMs: 60_000 };

/** Full jitter: uniform in [0, min(max, base * 2^attempt)). */
export function backoffDelay(policy: RetryPolicy, attempt: number): number {
  return Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt, 30));
}

/** `Retry-After` as seconds or an HTTP date, in ms; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const s = value.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const at = Date.parse(s);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** What Snowflake said, from any of its error-body shapes (§1.11 item 5, §3.3). */
export interface SnowflakeErrorBody {
  readonly code?: string;
  readonly message?: string;
  readonly sqlState?: string;
  readonly statementHandle?: string;
}

export function parseErrorBody(text: string): SnowflakeErrorBody {
  const s = text.trim();
  if (!s) return {};
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    // A plain-text body: a bare code (ERR_..., digits) or a sentence.
    return /^[A-Z0-9_]+$/.test(s) ? { code: s } : { message: s.slice(0, MAX_MESSAGE_CHARS) };
  }
  if (typeof v === 'string') return /^[A-Z0-9_]+$/.test(v) ? { code: v } : { message: v.slice(0, MAX_MESSAGE_CHARS) };
  if (typeof v !== 'object' || v === null) return {};
  const o = v as Record<string, unknown>;
  const str = (x: unknown): string | undefined => (typeof x === 'string' && x !== '' ? x : typeof x === 'number' ? String(x) : undefined);
  const code = str(o.code) ?? str(o.error_code) ?? str(o.errorCode) ?? str(o.error);
  const message = str(o.message) ?? str(o.error_message) ?? str(o.error_description) ?? (str(o.error) !== code ? str(o.error) : undefined);
  return {
    ...(code ? { code } : {}),
    ...(message ? { message: message.slice(0, MAX_MESSAGE_CHARS) } : {}),
    ...(str(o.sqlState) ? { sqlState: str(o.sqlState)! } : {}),
    ...(str(o.statementHandle) ? { statementHandle: str(o.statementHandle)! } : {}),
  };
}

export interface SnowflakeHttpErrorDetails extends SnowflakeErrorBody {
  readonly route: SnowflakeRoute;
  /** HTTP status; undefined when no answer arrived. */
  readonly status?: number;
  /** The request may have reached Snowflake and been applied (connection lost after sending). */
  readonly ambiguous?: boolean;
  readonly retryAfterMs?: number;
}

/** A FloeError with the HTTP facts of a failed Snowflake call, so callers can classify it. */
export class SnowflakeHttpError extends FloeError {
  readonly details: SnowflakeHttpErrorDetails;
  constructor(
    kind: 'auth' | 'destination' | 'config',
    message: string,
    details: SnowflakeHttpErrorDetails,
    options: { hint?: string; retry?: 'timed' | 'manual' | 'none'; cause?: unknown } = {},
  ) {
    super(kind, message, options);
    this.details = details;
  }
  get status(): number | undefined {
    return this.details.status;
  }
  get code(): string | undefined {
    return this.details.code;
  }
  /** An outage-type failure: throttling, server error or no answer. These trip the breaker. */
  get transient(): boolean {
    const s = this.details.status;
    return s === undefined || s === 408 || s === 429 || s >= 500;
  }
}

/** The breaker is open: nothing was sent. Retry after `retryAfterMs`. */
export class BreakerOpenError extends FloeError {
  readonly retryAfterMs: number;
  /** `lastFailure`: the message of the failure that counted last, so the log says why the breaker is open. */
  constructor(retryAfterMs: number, lastFailure?: string) {
    const why = lastFailure ? ` (last: ${lastFailure})` : '';
    super(
      'destination',
      `Snowflake circuit breaker is open after repeated failures${why}; next probe in ${Math.ceil(retryAfterMs / 1000)} s`,
      {
        retry: 'timed',
        hint: 'Snowflake is failing or unreachable; floe holds back and probes again (check the Snowflake status page and the network)',
      },
    );
    this.retryAfterMs = retryAfterMs;
  }
}

export interface SnowflakeBreakerOptions {
  /** Consecutive failed attempts that open the breaker (Default: 5). */
  readonly consecutiveFailures?: number;
  /** How long it stays open before one probe is let through (Default: 30 s). */
  readonly halfOpenAfterMs?: number;
  readonly metrics?: SnowflakeMetrics;
  readonly log?: Logger;
}

/**
 * Circuit breaker for one Snowflake account, shared by every client of that account. cockatiel moves from
 * open to half-open lazily, when the first call after the delay arrives; `state` reports that moment as
 * `half-open` already, since the next call will be the probe.
 */
export class SnowflakeBreaker {
  readonly halfOpenAfterMs: number;
  readonly #policy: CircuitBreakerPolicy;
  readonly #listeners = new Set<(state: BreakerStateName) => void>();
  #openedAt = 0;
  #last: BreakerStateName = 'closed';
  /** The last transient failure counted against the breaker. */
  #lastFailure: string | undefined;

  constructor(o: SnowflakeBreakerOptions = {}) {
    this.halfOpenAfterMs = o.halfOpenAfterMs ?? 30_000;
    this.#policy = circuitBreaker(
      handleWhen((err) => err instanceof SnowflakeHttpError && err.transient),
      { halfOpenAfter: this.halfOpenAfterMs, breaker: new ConsecutiveBreaker(o.consecutiveFailures ?? 5) },
    );
    o.metrics?.breakerState('closed');
    this.#policy.onStateChange((s) => {
      if (s === CircuitState.Open) this.#openedAt = Date.now();
      const name: BreakerStateName = s === CircuitState.Closed ? 'closed' : s === CircuitState.HalfOpen ? 'half-open' : 'open';
      if (name === this.#last) return;
      this.#last = name;
      o.metrics?.breakerState(name);
      if (name === 'open')
        o.log?.warn({ halfOpenAfterMs: this.halfOpenAfterMs, lastFailure: this.#lastFailure }, 'snowflake circuit breaker opened');
      else o.log?.info({ state: name }, 'snowflake circuit breaker state changed');
      for (const listener of this.#listeners) {
        try {
          listener(name);
        } catch {
          // a broken listener must not break the request path
        }
      }
    });
  }

  get state(): BreakerStateName {
    const s = this.#policy.state;
    if (s === CircuitState.Closed) return 'closed';
    if (s === CircuitState.HalfOpen) return 'half-open';
    return this.retryAfterMs() > 0 ? 'open' : 'half-open';
  }

  /** Calls `listener` on every change of the cockatiel state; returns an unsubscribe function. */
  onStateChange(listener: (state: BreakerStateName) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Time until the breaker lets a probe through (0 when closed or due). */
  retryAfterMs(): number {
    if (this.#policy.state === CircuitState.Closed) return 0;
    if (this.#policy.state === CircuitState.HalfOpen) return Math.min(this.halfOpenAfterMs, 1000);
    return Math.max(0, this.#openedAt + this.halfOpenAfterMs - Date.now());
  }

  async execute<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const remembered = async () => {
      try {
        return await fn();
      } catch (err) {
        // Before the breaker counts it: the 'opened' log line names it too.
        if (err instanceof SnowflakeHttpError && err.transient) this.#lastFailure = err.message;
        throw err;
      }
    };
    try {
      return await this.#policy.execute(remembered, signal);
    } catch (err) {
      if (err instanceof BrokenCircuitError) throw new BreakerOpenError(Math.max(this.retryAfterMs(), 1), this.#lastFailure);
      throw err;
    }
  }
}

export type TokenType = 'KEYPAIR_JWT' | 'OAUTH';

/** Supplies the bearer token of a request and refreshes it after a 401. */
export interface TokenSource {
  token(signal?: AbortSignal): Promise<{ readonly value: string; readonly type: TokenType | undefined }>;
  /** Called once after a 401; the next `token()` must return a fresh token. */
  refresh(): void;
  /** Who is authenticating (user, account, key fingerprint — never a secret), for auth error hints. */
  readonly identity?: string;
}

export interface SnowflakeRequest {
  readonly route: SnowflakeRoute;
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly url: URL;
  readonly auth: TokenSource;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Buffer;
  readonly signal?: AbortSignal;
  /** Per-attempt timeout (Default: the client's). */
  readonly timeoutMs?: number;
  /**
   * Whether a lost connection may be retried here. False for appends: the request may have been applied,
   * and resending a consumed continuation token is undefined, so the channel reopens instead.
   */
  readonly retryNetworkErrors?: boolean;
  /** A 408 answer means "statement timeout" (SQL API) and goes to the caller instead of being retried. */
  readonly statementTimeout?: boolean;
  /** Rewrites the URL for retries (SQL API: `retry=true`). */
  readonly retryUrl?: (url: URL) => URL;
}

export interface SnowflakeResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

export interface SnowflakeHttpOptions {
  readonly log: Logger;
  readonly breaker?: SnowflakeBreaker;
  readonly metrics?: SnowflakeMetrics;
  readonly retry?: Partial<RetryPolicy>;
  /** Per-attempt timeout (Default: 60 s). */
  readonly timeoutMs?: number;
  /** Keep-alive connections per origin (Default: 8). */
  readonly connectionsPerOrigin?: number;
}

const ROUTE_TEXT: Record<SnowflakeRoute, string> = {
  hostname: 'ingest host discovery',
  oauth_token: 'scoped token exchange',
  channel_open: 'channel open',
  channel_append: 'append',
  channel_drop: 'channel drop',
  bulk_channel_status: 'channel status',
  statement_submit: 'SQL statement',
  statement_poll: 'SQL statement status',
  statement_cancel: 'SQL statement cancel',
};

const header = (h: SnowflakeResponse['headers'], name: string): string | undefined => {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Network error codes that surely happened before the request reached the server. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

export class SnowflakeHttp {
  readonly breaker: SnowflakeBreaker;
  readonly #log: Logger;
  readonly #metrics: SnowflakeMetrics | undefined;
  readonly #retry: RetryPolicy;
  readonly #timeoutMs: number;
  readonly #connections: number;
  readonly #pools = new Map<string, Pool>();
  #closed = false;

  constructor(o: SnowflakeHttpOptions) {
    this.#log = o.log;
    this.#metrics = o.metrics;
    this.breaker = o.breaker ?? new SnowflakeBreaker({ metrics: o.metrics, log: o.log });
    this.#retry = { ...DEFAULT_RETRY, ...o.retry };
    this.#timeoutMs = o.timeoutMs ?? 60_000;
    this.#connections = o.connectionsPerOrigin ?? 8;
  }

  get retryPolicy(): RetryPolicy {
    return this.#retry;
  }

  /**
   * Sends a request; resolves with any answer that is not 401/403/429/5xx (callers interpret other 4xx);
   * rejects with SnowflakeHttpError, BreakerOpenError, or FloeError when `signal` aborted.
   */
  async send(req: SnowflakeRequest): Promise<SnowflakeResponse> {
    let url = req.url;
    let refreshed = false;
    for (let attempt = 0; ; attempt++) {
      let res: SnowflakeResponse;
      // The token is fetched outside the breaker: a scoped-token exchange is itself a request through the
      // breaker (with its own retries), and nesting it inside a half-open probe would wait on itself.
      const token = await req.auth.token(req.signal);
      try {
        res = await this.breaker.execute(() => this.#attempt(req, url, token), req.signal);
      } catch (err) {
        if (!(err instanceof SnowflakeHttpError) || !err.transient) throw err;
        const retryable = err.status !== undefined || req.retryNetworkErrors !== false || !err.details.ambiguous;
        if (!retryable || attempt + 1 >= this.#retry.maxAttempts || req.signal?.aborted) throw err;
        const after = err.details.retryAfterMs;
        const delay = after !== undefined ? Math.min(after, this.#retry.maxRetryAfterMs) : backoffDelay(this.#retry, attempt);
        this.#metrics?.retry(req.route);
        this.#log.warn(
          { route: req.route, status: err.status, code: err.code, attempt: attempt + 1, delayMs: Math.round(delay) },
          'snowflake request failed, retrying',
        );
        await this.#sleep(delay, req);
        if (req.retryUrl) url = req.retryUrl(url);
        continue;
      }
      if (res.status === 401 && !refreshed) {
        // An expired or rotated token: refresh once, then a second 401 is terminal.
        refreshed = true;
        req.auth.refresh();
        attempt--;
        continue;
      }
      if (res.status === 401 || res.status === 403) throw this.#authError(req, res);
      return res;
    }
  }

  /** Sends and parses JSON; an empty body is `undefined`, a non-JSON body is returned as a string. */
  static json(res: SnowflakeResponse): unknown {
    const s = res.text.trim();
    if (!s) return undefined;
    try {
      return JSON.parse(s) as unknown;
    } catch {
      return s;
    }
  }

  /** The error for an answer the caller cannot use. */
  static error(
    route: SnowflakeRoute,
    res: SnowflakeResponse,
    options: { retry?: 'timed' | 'manual' | 'none'; hint?: string; context?: string } = {},
  ): SnowflakeHttpError {
    const body = parseErrorBody(res.text);
    const what = options.context ? `${ROUTE_TEXT[route]} (${options.context})` : ROUTE_TEXT[route];
    const message = `Snowflake ${what} failed with HTTP ${res.status}${body.code ? ` ${body.code}` : ''}${body.message ? `: ${body.message}` : ''}`;
    return new SnowflakeHttpError(
      'destination',
      message,
      { route, status: res.status, ...body },
      { retry: options.retry ?? (res.status === 408 || res.status === 429 || res.status >= 500 ? 'timed' : 'none'), hint: options.hint },
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => undefined)));
  }

  #pool(url: URL): Pool {
    if (this.#closed) throw new FloeError('internal', 'the Snowflake client is closed');
    let pool = this.#pools.get(url.origin);
    if (!pool) {
      pool = new Pool(url.origin, { connections: this.#connections, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 120_000 });
      this.#pools.set(url.origin, pool);
    }
    return pool;
  }

  async #attempt(
    req: SnowflakeRequest,
    url: URL,
    token: { readonly value: string; readonly type: TokenType | undefined },
  ): Promise<SnowflakeResponse> {
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': USER_AGENT,
      authorization: `Bearer ${token.value}`,
      ...(token.type ? { 'x-snowflake-authorization-token-type': token.type } : {}),
      ...req.headers,
    };
    const timeoutMs = req.timeoutMs ?? this.#timeoutMs;
    const signal = req.signal ? AbortSignal.any([req.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    const started = performance.now();
    let status: number | undefined;
    try {
      const r = await this.#pool(url).request({
        method: req.method,
        path: url.pathname + url.search,
        headers,
        body: req.body,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      status = r.statusCode;
      let raw = Buffer.from(await r.body.arrayBuffer());
      const encoding = header(r.headers, 'content-encoding');
      if (encoding && /gzip/i.test(encoding) && raw.length > 0) raw = gunzipSync(raw);
      const res: SnowflakeResponse = { status: r.statusCode, headers: r.headers, text: raw.toString('utf8') };
      this.#log.debug({ route: req.route, status, ms: Math.round(performance.now() - started) }, 'snowflake request');
      if (status === 429 || status >= 500 || (status === 408 && req.statementTimeout !== true)) {
        const e = SnowflakeHttp.error(req.route, res, { retry: 'timed' });
        const retryAfterMs = parseRetryAfter(header(r.headers, 'retry-after'));
        throw new SnowflakeHttpError(
          e.kind as 'destination',
          e.message,
          { ...e.details, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) },
          {
            retry: 'timed',
            hint: status === 429 ? 'Snowflake is throttling; floe backs off' : 'Snowflake had a server error; floe retries',
          },
        );
      }
      return res;
    } catch (err) {
      if (err instanceof SnowflakeHttpError) throw err;
      if (req.signal?.aborted) {
        throw new FloeError('destination', `Snowflake ${ROUTE_TEXT[req.route]} was cancelled`, {
          retry: 'timed',
          cause: req.signal.reason,
        });
      }
      // DOMExceptions (AbortSignal.timeout) carry a numeric `code`; their name says what happened.
      const e = err as { code?: unknown; name?: unknown };
      const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'error';
      const timedOut = code === 'TimeoutError' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
      const ambiguous = !NOT_SENT.has(code);
      throw new SnowflakeHttpError(
        'destination',
        `Snowflake ${ROUTE_TEXT[req.route]} failed: ${timedOut ? `no answer within ${timeoutMs} ms` : `connection error (${code})`} to ${url.host}`,
        { route: req.route, ambiguous },
        { retry: 'timed', cause: err, hint: 'check the network path to Snowflake; floe retries' },
      );
    } finally {
      this.#metrics?.request(req.route, status, (performance.now() - started) / 1000);
    }
  }

  #authError(req: SnowflakeRequest, res: SnowflakeResponse): SnowflakeHttpError {
    const body = parseErrorBody(res.text);
    const message = `Snowflake rejected the credentials for ${ROUTE_TEXT[req.route]} (HTTP ${res.status}${body.code ? ` ${body.code}` : ''}${
      body.message ? `: ${body.message}` : ''
    })`;
    const hint =
      res.status === 401
        ? `check the account, the user and that the public key registered for the user (ALTER USER ... SET RSA_PUBLIC_KEY) matches the private key${
            req.auth.identity ? ` (floe authenticates as ${req.auth.identity})` : ''
          }`
        : 'grant the role the privileges it needs on the warehouse, database, schema, tables and pipes';
    return new SnowflakeHttpError('auth', message, { route: req.route, status: res.status, ...body }, { retry: 'manual', hint });
  }

  async #sleep(ms: number, req: SnowflakeRequest): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: req.signal });
    } catch (err) {
      throw new FloeError('destination', `Snowflake ${ROUTE_TEXT[req.route]} was cancelled`, { retry: 'timed', cause: err });
    }
  }
}

/** The key-pair JWT as a token source (account host: SQL API, hostname discovery, token exchange). */
export function keyPairTokens(auth: KeyPairAuth, type: TokenType | null = 'KEYPAIR_JWT'): TokenSource {
  return {
    token: () => Promise.resolve({ value: auth.token(), type: type ?? undefined }),
    refresh: () => auth.invalidate(),
    identity: `${auth.subject} with public key ${auth.fingerprint}`,
  };
}
