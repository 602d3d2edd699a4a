/**
 * Snowpipe Streaming REST client, high-performance architecture, named channels (snowflake-api.md §1).
 *
 * Bootstrap (§1.4, §1.5): `GET /v2/streaming/hostname` on the account host (plain text, a JSON string or
 * JSON with a host key; `_` becomes `-`), then `POST /oauth/token` for a token scoped to that ingest host
 * (raw token or JSON), re-exchanged a minute before its `exp`. Every channel route then goes to the ingest
 * host with the scoped token. With `baseUrlOverride` (the destination URL's `base_url`, e.g. the emulator
 * or a private link) discovery still runs — it also yields the token scope — but every request keeps
 * going to the configured URL, because a local or private deployment can return a host that does not
 * resolve. A discovered bare host inherits the account URL's scheme (https for a real account).
 *
 * Channel life cycle (§1.6–§1.9, §1.14), per `NamedChannel`:
 *
 *   open ──append──▶ accepted (kept in memory) ──status shows committed token ≥ its end──▶ forgotten
 *     ▲                    │
 *     └── reopen ◀─────────┘ reopen-class code, 409, channel missing or unhealthy in status, or an
 *                            ambiguous outcome (connection lost after sending)
 *
 * A reopen bumps the server's client sequencer and discards its uncommitted data, so the channel then
 * re-appends every kept request above the newly reported committed token, in order: no gap and no
 * duplicate (tokens strictly increase between requests). With `replayUncommitted: false` (floe's
 * destination) accepted requests are kept as tokens only: a reopen that finds accepted rows above the
 * committed token fails the channel with `ChannelRewoundError`, and the caller replays from its source. Appends are serialized (one request in flight,
 * the continuation token of answer N is needed for request N+1) and paced to at most N requests per
 * second in any one-second window.
 *
 * Offset tokens: a request carries `startOffsetToken`/`endOffsetToken` of its first and last line. When a
 * request must end inside a run of lines sharing one token (a run larger than a request), it is sent
 * without tokens, so the committed token only ever names a complete run. Callers that give every line a
 * unique token (floe's positions) never hit that case.
 *
 * Commit confirmation: `waitCommitted` registers with one poller per pipe, which asks
 * `:bulk-channel-status` for all channels with waiters in one request per round. Row errors
 * (`rows_error_count` above the count seen at open) fail the channel for good (design invariant 7).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import { FloeError } from '../../errors.js';
import { NdjsonLines } from '../encoding/ndjson-lines.js';
import type { Logger } from '../../telemetry/logger.js';
import type { KeyPairAuth } from './auth.js';
import {
  backoffDelay,
  BreakerOpenError,
  keyPairTokens,
  parseErrorBody,
  SnowflakeHttp,
  SnowflakeHttpError,
  type RetryPolicy,
  type SnowflakeBreaker,
  type SnowflakeResponse,
  type TokenSource,
} from './http.js';
import type { ReopenReason, SnowflakeMetrics } from './metrics.js';

const gzip = promisify(gzipCallback);

/** Request body limit on the wire, after compression (§1.3: 4 MB; the decimal MB is the safe reading). */
export const MAX_WIRE_BYTES = 4_000_000;
/** Uncompressed NDJSON per request, so a highly compressible batch cannot grow without bound (§1.3). */
export const MAX_UNCOMPRESSED_BYTES = 16 * 1024 * 1024;
/** Scoped token lifetime when its `exp` cannot be read (§1.5: 55 min, as Artie and PeerDB assume). */
const FALLBACK_TOKEN_SECONDS = 55 * 60;
/** Consecutive reopens without an accepted append before the channel gives up with an error. */
const MAX_CONSECUTIVE_REOPENS = 6;

/** Codes after which the channel must be reopened and the uncommitted data re-appended (§1.11). */
const REOPEN_CODES = new Set([
  'STALE_CONTINUATION_TOKEN_SEQUENCER',
  'ERR_CHANNEL_HAS_INVALID_ROW_SEQUENCER',
  'ERR_CHANNEL_HAS_INVALID_CLIENT_SEQUENCER',
  'ERR_CHANNEL_MUST_BE_REOPENED',
  'ERR_CHANNEL_MUST_BE_REOPENED_DUE_TO_ROW_SEQ_GAP',
  'ERR_CHANNEL_DOES_NOT_EXIST_OR_IS_NOT_AUTHORIZED',
  'STALE_PIPE_CACHE',
]);

/** Codes that need an operator: the pipe, table or database is missing or the role cannot see it. */
const FATAL_CODES = new Set([
  'ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED',
  'ERR_TABLE_DOES_NOT_EXIST_NOT_AUTHORIZED',
  'ERR_DATABASE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED',
  'ERR_SCHEMA_DOES_NOT_EXIST_OR_NOT_AUTHORIZED',
  'ERR_PIPE_KIND_NOT_SUPPORTED',
]);

/** Healthy `channel_status_code` values: SUCCESS per the error-handling page, ACTIVE per the REST example (§1.6). */
const HEALTHY = new Set(['SUCCESS', 'ACTIVE']);

export interface StreamingTarget {
  readonly database: string;
  readonly schema: string;
  readonly pipe: string;
}

export interface ChannelStatus {
  committedOffsetToken: string | null;
  rowsInserted?: number;
  rowsErrorCount: number;
  lastErrorOffsetToken?: string | null;
  lastErrorMessage?: string | null;
  statusCode: string;
}

export interface Channel {
  readonly name: string;
  /** The last committed offset token known: reported at (re)open, then advanced by status polls. */
  readonly committedOffsetToken: string | null;
  /** The status reported by the first open (row error count baseline, counters). */
  readonly openStatus: ChannelStatus;
  /**
   * Appends NDJSON lines in order; tokens[i] is the offset token of lines[i] (non-decreasing, and not
   * below the tokens of earlier calls). Splits into requests of ≤ 4 MB on the wire (gzip), one request in
   * flight, ≤ N requests/s, chains continuation tokens, sends startOffsetToken/endOffsetToken per
   * request. Keeps every appended-but-not-yet-committed request in memory; on a reopen-class error, a
   * 409, or an ambiguous outcome it reopens the channel, drops the kept requests at or below the newly
   * reported committed token, and re-appends the rest — the caller never sees a reopen. Resolves when the
   * server accepted the data (not yet committed).
   *
   * If it rejects (breaker open, retries exhausted, abort), the lines not yet accepted stay queued in
   * order and go out first on the next `append` or `flush` (or in the background while `waitCommitted`
   * polls); do not append them again. Terminal errors
   * (auth, missing pipe, row errors) make every later call reject with the same error.
   */
  append(lines: NdjsonLines | readonly string[], tokens: readonly string[], signal?: AbortSignal): Promise<void>;
  /** Sends whatever earlier failed appends left queued. */
  flush(signal?: AbortSignal): Promise<void>;
  /**
   * Polls (bulk) channel status until the committed token ≥ `token` (tokens compare as strings; floe
   * makes them fixed width). Row errors reported in status → throws FloeError('destination', ...,
   * retry 'none') naming channel, offset token and the server's message (design invariant 7).
   */
  waitCommitted(token: string, signal?: AbortSignal): Promise<void>;
  status(signal?: AbortSignal): Promise<ChannelStatus>;
  drop(signal?: AbortSignal): Promise<void>;
}

export interface StreamingClientOptions {
  /** Account URL (`https://<account>.snowflakecomputing.com`), or the `base_url` override. */
  readonly accountUrl: string;
  readonly auth: KeyPairAuth;
  /** `accountUrl` is a `base_url` override: use it for the ingest host too (see the module comment). */
  readonly baseUrlOverride?: boolean;
  /** Role for the scoped token (`scope=<host> session:role:<ROLE>`); default: the user's DEFAULT_ROLE. */
  readonly role?: string;
  readonly breaker?: SnowflakeBreaker;
  readonly log: Logger;
  readonly metrics?: SnowflakeMetrics;
  /** Append requests per second per channel (Default: 10, Snowflake's documented per-channel limit). */
  readonly maxRequestsPerSecond?: number;
  /** Wire (compressed) bytes per append request (Default: 4,000,000). */
  readonly maxRequestBytes?: number;
  /** Uncompressed bytes per append request (Default: 16 MiB). */
  readonly maxUncompressedRequestBytes?: number;
  /**
   * gzip level of append bodies (Default: 1). NDJSON still shrinks about 13x at level 1, so the 4 MB wire
   * limit is never what bounds a request, and level 1 costs a third of the CPU of level 6.
   */
  readonly gzipLevel?: number;
  /**
   * Keep accepted-but-uncommitted requests (compressed) to re-append them after a reopen (Default: true).
   * false: keep nothing; a reopen whose committed token is behind what the server had accepted fails the
   * channel with `ChannelRewoundError`, and the caller replays from its own durable position (floe's
   * runtime restarts the replication stream: the slot keeps the WAL). Memory then does not grow with the
   * commit latency.
   */
  readonly replayUncommitted?: boolean;
  /** Interval between bulk status polls while someone waits for a commit (Default: 1000 ms). */
  readonly statusPollIntervalMs?: number;
  readonly retry?: Partial<RetryPolicy>;
  readonly requestTimeoutMs?: number;
  /** Clock (ms) for the scoped token's expiry, for tests (Default: Date.now). */
  readonly now?: () => number;
}

/** The ingest host from any documented shape of the discovery answer (§1.4). */
export function parseIngestHost(text: string): string {
  let s = text.trim();
  if (s.startsWith('{')) {
    const o = JSON.parse(s) as Record<string, unknown>;
    const v = o.hostname ?? o.host ?? o.ingest_host ?? o.ingestHost ?? o.url ?? Object.values(o).find((x) => typeof x === 'string');
    s = typeof v === 'string' ? v.trim() : '';
  } else if (s.startsWith('"')) {
    s = String(JSON.parse(s)).trim();
  }
  if (!s) throw new FloeError('destination', 'Snowflake ingest host discovery returned no host name', { retry: 'timed' });
  // Account names with '_' yield ingest hosts Snowflake itself cannot serve (§1.2 underscore fix).
  const m = /^([a-z][a-z0-9+.-]*:\/\/)?(.*)$/i.exec(s)!;
  return (m[1] ?? '') + m[2]!.replaceAll('_', '-').replace(/\/+$/, '');
}

/** The scoped token and its expiry (ms) from either answer shape (§1.5). */
export function parseScopedToken(text: string, now: number): { token: string; expiresAt: number } {
  let token = text.trim();
  if (token.startsWith('{')) {
    const o = JSON.parse(token) as Record<string, unknown>;
    const v = o.token ?? o.access_token ?? o.accessToken;
    token = typeof v === 'string' ? v : '';
    if (typeof o.expires_in === 'number') return { token, expiresAt: now + o.expires_in * 1000 };
  } else if (token.startsWith('"')) {
    token = String(JSON.parse(token));
  }
  if (!token) throw new FloeError('destination', 'Snowflake token exchange returned no token', { retry: 'timed' });
  let expiresAt = now + FALLBACK_TOKEN_SECONDS * 1000;
  const parts = token.split('.');
  if (parts.length === 3) {
    try {
      const exp = (JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
      // An `exp` already past means our clock is off: keep the fallback rather than re-exchanging per request.
      if (typeof exp === 'number' && (exp > 1e12 ? exp : exp * 1000) > now) expiresAt = exp > 1e12 ? exp : exp * 1000;
    } catch {
      // not a JWT we can read: keep the fallback lifetime
    }
  }
  return { token, expiresAt };
}

/** The ingest plane: discovered host, scoped token, both cached. */
class IngestSession {
  readonly accountTokens: TokenSource;
  readonly ingestTokens: TokenSource;
  readonly #o: StreamingClientOptions;
  readonly #http: SnowflakeHttp;
  readonly #account: URL;
  readonly #now: () => number;
  #host: Promise<{ base: URL; scope: string }> | undefined;
  #token: Promise<{ token: string; expiresAt: number } | undefined> | undefined;
  #tokenAt = 0;

  constructor(o: StreamingClientOptions, http: SnowflakeHttp) {
    this.#o = o;
    this.#http = http;
    this.#account = new URL(o.accountUrl);
    this.#now = o.now ?? Date.now;
    this.accountTokens = keyPairTokens(o.auth);
    // null, not undefined (which means the default, KEYPAIR_JWT): the documented exchange sends no token type.
    const exchangeTokens = keyPairTokens(o.auth, null);
    this.ingestTokens = {
      identity: this.accountTokens.identity,
      refresh: () => {
        this.#token = undefined;
        o.auth.invalidate();
      },
      token: async (signal) => {
        let t = await this.#scopedToken(exchangeTokens, signal);
        // Refresh a minute early, or at 80 % of a short lifetime (emulator tests use short TTLs).
        const margin = t ? Math.min(60_000, (t.expiresAt - this.#tokenAt) * 0.2) : 0;
        if (t && this.#now() >= t.expiresAt - margin) {
          this.#token = undefined;
          t = await this.#scopedToken(exchangeTokens, signal);
        }
        // No scoped token (the exchange route does not exist): the key-pair JWT works too (§1.5, EMQX).
        return t ? { value: t.token, type: 'OAUTH' } : { value: o.auth.token(), type: 'KEYPAIR_JWT' };
      },
    };
  }

  /** Base URL of the ingest plane. */
  async base(signal?: AbortSignal): Promise<URL> {
    return (await this.#discover(signal)).base;
  }

  #discover(signal?: AbortSignal): Promise<{ base: URL; scope: string }> {
    this.#host ??= (async () => {
      const res = await this.#http.send({
        route: 'hostname',
        method: 'GET',
        url: new URL('/v2/streaming/hostname', this.#account),
        auth: this.accountTokens,
        signal,
      });
      if (res.status !== 200)
        throw SnowflakeHttp.error('hostname', res, { hint: 'check the account identifier and that Snowpipe Streaming is available' });
      const host = parseIngestHost(res.text);
      const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(host) ? host : `${this.#account.protocol}//${host}`;
      const discovered = new URL(withScheme);
      const base = this.#o.baseUrlOverride ? this.#account : discovered;
      this.#o.log.info(
        { ingestHost: discovered.host, override: this.#o.baseUrlOverride === true },
        'snowpipe streaming ingest host discovered',
      );
      return { base, scope: discovered.host };
    })();
    // A failed discovery is not cached: the next call asks again.
    this.#host.catch(() => (this.#host = undefined));
    return this.#host;
  }

  #scopedToken(exchangeTokens: TokenSource, signal?: AbortSignal): Promise<{ token: string; expiresAt: number } | undefined> {
    this.#token ??= (async () => {
      const { scope } = await this.#discover(signal);
      const form = new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        scope: this.#o.role ? `${scope} session:role:${this.#o.role}` : scope,
      });
      this.#tokenAt = this.#now();
      const res = await this.#http.send({
        route: 'oauth_token',
        method: 'POST',
        url: new URL('/oauth/token', this.#account),
        auth: exchangeTokens,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        signal,
      });
      if (res.status === 404) {
        this.#o.log.warn('snowflake has no /oauth/token route here; using the key-pair JWT on the ingest host');
        return undefined;
      }
      if (res.status !== 200) throw SnowflakeHttp.error('oauth_token', res);
      return parseScopedToken(res.text, this.#now());
    })();
    this.#token.catch(() => (this.#token = undefined));
    return this.#token;
  }
}

const seg = encodeURIComponent;

function channelPath(t: StreamingTarget, channel: string): string {
  return `/v2/streaming/databases/${seg(t.database)}/schemas/${seg(t.schema)}/pipes/${seg(t.pipe)}/channels/${seg(channel)}`;
}

interface RawStatus {
  readonly channel_status_code?: unknown;
  readonly last_committed_offset_token?: unknown;
  readonly rows_inserted?: unknown;
  readonly rows_error_count?: unknown;
  readonly rows_errors?: unknown;
  readonly last_error_offset_upper_bound?: unknown;
  readonly last_error_message?: unknown;
}

function toStatus(raw: RawStatus | undefined): ChannelStatus {
  const token = raw?.last_committed_offset_token;
  const num = (v: unknown): number | undefined =>
    typeof v === 'number' ? v : typeof v === 'string' && v !== '' && !Number.isNaN(Number(v)) ? Number(v) : undefined;
  const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : null);
  const rowsInserted = num(raw?.rows_inserted);
  return {
    committedOffsetToken: str(token),
    ...(rowsInserted !== undefined ? { rowsInserted } : {}),
    rowsErrorCount: num(raw?.rows_error_count) ?? num(raw?.rows_errors) ?? 0,
    lastErrorOffsetToken: str(raw?.last_error_offset_upper_bound),
    lastErrorMessage: str(raw?.last_error_message),
    statusCode: typeof raw?.channel_status_code === 'string' ? raw.channel_status_code : 'SUCCESS',
  };
}

/**
 * A channel was reopened and its committed token is behind rows the server had accepted: the server
 * discarded them. Retryable, but not in place: the channel kept no copy (`replayUncommitted: false`), so
 * whoever wrote them must replay from its durable position.
 */
export class ChannelRewoundError extends FloeError {
  constructor(message: string) {
    super('destination', message, {
      retry: 'timed',
      hint: 'floe restarts the replication stream from its acknowledged position; nothing is lost',
    });
  }
}

const NO_BODY = Buffer.alloc(0);

/** One append request: its body stays compressed in memory until its end token is committed (if replaying). */
interface Request {
  readonly body: Buffer;
  readonly rawBytes: number;
  readonly rows: number;
  /** null for a request ending inside a run of equal tokens (sent without tokens). */
  readonly startToken: string | null;
  readonly endToken: string | null;
  acceptedAt?: number;
}

export class StreamingClient {
  readonly #o: StreamingClientOptions;
  readonly #http: SnowflakeHttp;
  readonly #session: IngestSession;
  readonly #pollers = new Map<string, StatusPoller>();
  readonly #closing = new AbortController();

  constructor(o: StreamingClientOptions) {
    this.#o = o;
    this.#http = new SnowflakeHttp({ log: o.log, breaker: o.breaker, metrics: o.metrics, retry: o.retry, timeoutMs: o.requestTimeoutMs });
    this.#session = new IngestSession(o, this.#http);
  }

  get breaker(): SnowflakeBreaker {
    return this.#http.breaker;
  }

  async openChannel(target: StreamingTarget, channel: string, signal?: AbortSignal): Promise<Channel> {
    const key = `${target.database}\u0000${target.schema}\u0000${target.pipe}`;
    let poller = this.#pollers.get(key);
    if (!poller) {
      poller = new StatusPoller(target, this.#http, this.#session, this.#o, this.#closing.signal);
      this.#pollers.set(key, poller);
    }
    const c = new NamedChannel(target, channel, this.#http, this.#session, this.#o, poller, this.#closing.signal);
    await c.open(signal);
    return c;
  }

  /** Stops status polling (pending waits reject) and closes the connections. */
  async close(): Promise<void> {
    this.#closing.abort(new FloeError('destination', 'the Snowpipe Streaming client was closed', { retry: 'timed' }));
    await Promise.all([...this.#pollers.values()].map((p) => p.stopped()));
    await this.#http.close();
  }
}

interface Waiter {
  readonly token: string;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** One status loop per pipe, shared by its channels: one bulk request per round for every waiting channel. */
class StatusPoller {
  readonly #target: StreamingTarget;
  readonly #http: SnowflakeHttp;
  readonly #session: IngestSession;
  readonly #o: StreamingClientOptions;
  readonly #closing: AbortSignal;
  readonly #waiting = new Map<NamedChannel, Set<Waiter>>();
  #loop: Promise<void> | undefined;
  /** Cleared synchronously when the loop ends, so a waiter added right after starts a new loop. */
  #running = false;

  constructor(target: StreamingTarget, http: SnowflakeHttp, session: IngestSession, o: StreamingClientOptions, closing: AbortSignal) {
    this.#target = target;
    this.#http = http;
    this.#session = session;
    this.#o = o;
    this.#closing = closing;
  }

  wait(channel: NamedChannel, token: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.#closing.aborted) return reject(this.#closing.reason);
      let set = this.#waiting.get(channel);
      if (!set) this.#waiting.set(channel, (set = new Set()));
      const onAbort = (): void => {
        set.delete(waiter);
        reject(
          new FloeError('destination', `waiting for channel ${channel.name} to commit was cancelled`, {
            retry: 'timed',
            cause: signal?.reason,
          }),
        );
      };
      const waiter: Waiter = {
        token,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      set.add(waiter);
      if (!this.#running) {
        this.#running = true;
        this.#loop = this.#run();
      }
    });
  }

  async stopped(): Promise<void> {
    await this.#loop;
  }

  /** Fetches the status of some channels of this pipe in one request; absent channels map to undefined. */
  async fetch(names: readonly string[], signal?: AbortSignal): Promise<Map<string, RawStatus | undefined>> {
    const base = await this.#session.base(signal);
    const t = this.#target;
    const url = new URL(
      `/v2/streaming/databases/${seg(t.database)}/schemas/${seg(t.schema)}/pipes/${seg(t.pipe)}:bulk-channel-status`,
      base,
    );
    url.searchParams.set('requestId', randomUUID());
    const res = await this.#http.send({
      route: 'bulk_channel_status',
      method: 'POST',
      url,
      auth: this.#session.ingestTokens,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel_names: names }),
      signal,
    });
    if (res.status !== 200) throw streamingError('bulk_channel_status', res, `pipe ${t.database}.${t.schema}.${t.pipe}`);
    const body = SnowflakeHttp.json(res) as { channel_statuses?: Record<string, RawStatus> } | undefined;
    const statuses = body?.channel_statuses ?? {};
    const out = new Map<string, RawStatus | undefined>();
    for (const name of names) {
      // Documented as keyed by the requested name; a server that normalises case is matched too.
      out.set(name, statuses[name] ?? Object.entries(statuses).find(([k]) => k.toUpperCase() === name.toUpperCase())?.[1]);
    }
    return out;
  }

  async #run(): Promise<void> {
    try {
      await this.#poll();
    } finally {
      this.#running = false;
    }
  }

  async #poll(): Promise<void> {
    const interval = this.#o.statusPollIntervalMs ?? 1000;
    // Let the waiters registered in the same turn (one per channel of a batch) join the first request.
    await new Promise((resolve) => setImmediate(resolve));
    let failures = 0;
    while (this.#waiting.size > 0) {
      for (const [channel, set] of this.#waiting) if (set.size === 0) this.#waiting.delete(channel);
      if (this.#waiting.size === 0) break;
      if (this.#closing.aborted) {
        this.#rejectAll(this.#closing.reason);
        return;
      }
      let delay = interval;
      try {
        const channels = [...this.#waiting.keys()];
        const statuses = await this.fetch(
          channels.map((c) => c.name),
          this.#closing,
        );
        failures = 0;
        for (const channel of channels) {
          const set = this.#waiting.get(channel);
          if (!set) continue;
          const failure = channel.observe(statuses.get(channel.name));
          for (const w of set) {
            if (failure) w.reject(failure);
            else if (channel.committedOffsetToken !== null && channel.committedOffsetToken >= w.token) w.resolve();
            else continue;
            set.delete(w);
          }
        }
      } catch (err) {
        if (err instanceof FloeError && err.retry !== 'timed') {
          this.#rejectAll(err);
          return;
        }
        failures++;
        delay = err instanceof BreakerOpenError ? err.retryAfterMs : Math.max(interval, backoffDelay(this.#http.retryPolicy, failures));
        this.#o.log.warn({ err: (err as Error).message, delayMs: Math.round(delay) }, 'snowpipe streaming status poll failed');
      }
      if (this.#waiting.size === 0 || [...this.#waiting.values()].every((s) => s.size === 0)) break;
      try {
        await sleep(delay, undefined, { signal: this.#closing });
      } catch {
        this.#rejectAll(this.#closing.reason);
        return;
      }
    }
  }

  #rejectAll(err: unknown): void {
    for (const set of this.#waiting.values()) for (const w of set) w.reject(err);
    this.#waiting.clear();
  }
}

function streamingError(
  route: 'channel_open' | 'channel_append' | 'channel_drop' | 'bulk_channel_status',
  res: SnowflakeResponse,
  context: string,
): SnowflakeHttpError {
  const code = parseErrorBody(res.text).code;
  if (code && FATAL_CODES.has(code)) {
    return SnowflakeHttp.error(route, res, {
      context,
      retry: 'manual',
      hint: 'check that the database, schema, pipe and table exist and that the role has OPERATE on the pipe and INSERT/SELECT on the table',
    });
  }
  return SnowflakeHttp.error(route, res, { context });
}

class NamedChannel implements Channel {
  readonly name: string;
  readonly #target: StreamingTarget;
  readonly #http: SnowflakeHttp;
  readonly #session: IngestSession;
  readonly #o: StreamingClientOptions;
  readonly #poller: StatusPoller;
  readonly #closing: AbortSignal;
  readonly #maxRps: number;
  readonly #maxWire: number;
  readonly #maxRaw: number;
  readonly #level: number;
  readonly #replay: boolean;
  #openStatus: ChannelStatus | undefined;
  #continuation = '';
  #committed: string | null = null;
  /** The committed token whose request was last forgotten; the same token cannot release another. */
  #settledToken: string | null = null;
  /** Accepted by the server, not yet committed, in order. */
  #kept: Request[] = [];
  /** Not yet accepted (built, or left by a failed append), in order. */
  #queued: Request[] = [];
  #lastToken: string | null = null;
  #needsReopen = false;
  #recovering = false;
  #failure: FloeError | undefined;
  #dropped = false;
  #errorBaseline = 0;
  #sendTimes: number[] = [];
  #lock: Promise<unknown> = Promise.resolve();

  constructor(
    target: StreamingTarget,
    name: string,
    http: SnowflakeHttp,
    session: IngestSession,
    o: StreamingClientOptions,
    poller: StatusPoller,
    closing: AbortSignal,
  ) {
    this.#target = target;
    this.name = name;
    this.#http = http;
    this.#session = session;
    this.#o = o;
    this.#poller = poller;
    this.#closing = closing;
    this.#maxRps = Math.max(1, o.maxRequestsPerSecond ?? 10);
    this.#maxWire = o.maxRequestBytes ?? MAX_WIRE_BYTES;
    this.#maxRaw = o.maxUncompressedRequestBytes ?? MAX_UNCOMPRESSED_BYTES;
    this.#level = o.gzipLevel ?? 1;
    this.#replay = o.replayUncommitted ?? true;
  }

  get committedOffsetToken(): string | null {
    return this.#committed;
  }

  get openStatus(): ChannelStatus {
    return this.#openStatus ?? { committedOffsetToken: null, rowsErrorCount: 0, statusCode: 'SUCCESS' };
  }

  #describe(): string {
    const t = this.#target;
    return `channel ${this.name} on pipe ${t.database}.${t.schema}.${t.pipe}`;
  }

  /** First open; the row-error count it reports is the baseline for later statuses. */
  async open(signal?: AbortSignal): Promise<void> {
    const status = await this.#openRequest(signal);
    this.#openStatus = status;
    this.#errorBaseline = status.rowsErrorCount;
    this.#committed = status.committedOffsetToken;
    this.#settledToken = status.committedOffsetToken;
  }

  async #openRequest(signal?: AbortSignal): Promise<ChannelStatus> {
    const base = await this.#session.base(signal);
    for (let attempt = 0; ; attempt++) {
      const url = new URL(channelPath(this.#target, this.name), base);
      url.searchParams.set('requestId', randomUUID());
      const res = await this.#http.send({
        route: 'channel_open',
        method: 'PUT',
        url,
        auth: this.#session.ingestTokens,
        headers: { 'content-type': 'application/json' },
        // Uncommitted data of an earlier incarnation is discarded: this channel re-appends it itself.
        body: JSON.stringify({ fail_on_uncommitted_rows: false }),
        signal,
      });
      const code = parseErrorBody(res.text).code;
      if (res.status === 200 || res.status === 201) {
        const body = SnowflakeHttp.json(res) as { next_continuation_token?: unknown; channel_status?: RawStatus } | undefined;
        const status = toStatus(body?.channel_status);
        if (typeof body?.next_continuation_token !== 'string' || body.next_continuation_token === '') {
          throw new FloeError('destination', `Snowflake opened ${this.#describe()} without a continuation token`, { retry: 'timed' });
        }
        if (!HEALTHY.has(status.statusCode)) {
          if (REOPEN_CODES.has(status.statusCode) && attempt + 1 < MAX_CONSECUTIVE_REOPENS) {
            await this.#pause(attempt, signal);
            continue;
          }
          throw new FloeError('destination', `Snowflake opened ${this.#describe()} in state ${status.statusCode}`, {
            retry: FATAL_CODES.has(status.statusCode) ? 'manual' : 'timed',
            hint: 'check that the pipe is a streaming pipe on an existing table and that the role may use it',
          });
        }
        this.#continuation = body.next_continuation_token;
        return status;
      }
      // Two opens of one name at once (another worker, or our own retry): wait and try again.
      if (res.status === 409 && code === 'ERR_OPEN_CHANNEL_IN_PROGRESS' && attempt + 1 < this.#http.retryPolicy.maxAttempts) {
        await this.#pause(attempt, signal);
        continue;
      }
      throw streamingError('channel_open', res, this.#describe());
    }
  }

  async #pause(attempt: number, signal?: AbortSignal): Promise<void> {
    try {
      await sleep(backoffDelay(this.#http.retryPolicy, attempt), undefined, { signal });
    } catch {
      throw new FloeError('destination', `${this.#describe()}: cancelled`, { retry: 'timed', cause: signal?.reason });
    }
  }

  /** Runs `fn` after every earlier append, flush, reopen or drop of this channel. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  #check(): void {
    if (this.#failure) throw this.#failure;
    if (this.#dropped) throw new FloeError('internal', `${this.#describe()} was dropped`);
  }

  append(given: NdjsonLines | readonly string[], tokens: readonly string[], signal?: AbortSignal): Promise<void> {
    const lines = given instanceof NdjsonLines ? given : NdjsonLines.of(given);
    if (lines.count !== tokens.length) {
      return Promise.reject(new FloeError('internal', `append got ${lines.count} lines but ${tokens.length} offset tokens`));
    }
    for (let i = 0; i < tokens.length; i++) {
      const prev = i === 0 ? this.#lastToken : tokens[i - 1]!;
      if (prev !== null && tokens[i]! < prev) {
        return Promise.reject(
          new FloeError('internal', `offset tokens must not decrease (${tokens[i]} after ${prev}) on ${this.#describe()}`),
        );
      }
    }
    if (lines.count === 0) return this.flush(signal);
    this.#lastToken = tokens[tokens.length - 1]!;
    // Built outside the lock: compression runs in the thread pool while an earlier request is in flight.
    const built = this.#build(lines, tokens);
    built.catch(() => undefined);
    return this.#serial(async () => {
      this.#check();
      this.#queued.push(...(await built));
      await this.#drain(signal);
    });
  }

  flush(signal?: AbortSignal): Promise<void> {
    return this.#serial(async () => {
      this.#check();
      await this.#drain(signal);
    });
  }

  /** Groups lines into requests under both size limits, compressed. */
  async #build(lines: NdjsonLines, tokens: readonly string[]): Promise<Request[]> {
    const ranges: [number, number][] = [];
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < lines.count; i++) {
      const n = lines.size(i);
      if (i > start && bytes + n > this.#maxRaw) {
        ranges.push([start, i]);
        start = i;
        bytes = 0;
      }
      bytes += n;
    }
    ranges.push([start, lines.count]);
    const out: Request[] = [];
    const encode = async (from: number, to: number): Promise<void> => {
      // The lines' own bytes, not a copy: neither a joined string nor a new buffer per request.
      const raw = lines.range(from, to);
      const body = await gzip(raw, { level: this.#level });
      if (body.length > this.#maxWire) {
        if (to - from === 1) {
          throw new FloeError(
            'destination',
            `a row of ${raw.length} bytes does not fit one Snowpipe Streaming request (${this.#maxWire} bytes compressed)`,
            {
              retry: 'none',
              hint: 'Snowpipe Streaming cannot load rows this large; exclude the column or table from the publication',
            },
          );
        }
        const mid = from + Math.floor((to - from) / 2);
        await encode(from, mid);
        await encode(mid, to);
        return;
      }
      // A request ending inside a run of equal tokens must not claim the run's token (module comment).
      const midRun = to < lines.count && tokens[to] === tokens[to - 1];
      out.push({
        body,
        rawBytes: raw.length,
        rows: to - from,
        startToken: midRun ? null : tokens[from]!,
        endToken: midRun ? null : tokens[to - 1]!,
      });
    };
    for (const [from, to] of ranges) await encode(from, to);
    return out;
  }

  /** Sends queued requests in order; reopens and re-queues kept ones when the channel lost them. */
  async #drain(signal?: AbortSignal): Promise<void> {
    let reopens = 0;
    while (this.#queued.length > 0 || this.#needsReopen) {
      if (this.#needsReopen) {
        if (reopens >= MAX_CONSECUTIVE_REOPENS) {
          throw new FloeError('destination', `${this.#describe()} had to be reopened ${reopens} times in a row without progress`, {
            retry: 'timed',
            hint: 'Snowflake keeps invalidating the channel; check for another process writing to the same channel name',
          });
        }
        if (reopens > 0) await this.#pause(reopens, signal);
        reopens++;
        await this.#reopen(signal);
        continue;
      }
      const req = this.#queued[0]!;
      await this.#pace(signal);
      const outcome = await this.#send(req, signal);
      if (outcome === 'accepted') {
        this.#queued.shift();
        req.acceptedAt = Date.now();
        // Without replay only the tokens stay, to see whether a reopen lost accepted rows.
        this.#kept.push(this.#replay ? req : { ...req, body: NO_BODY });
        this.#o.metrics?.appended(req.rows, req.rawBytes, req.body.length);
        reopens = 0;
      } else {
        this.#o.metrics?.reopened(outcome);
        this.#o.log.warn({ channel: this.name, reason: outcome }, 'snowpipe streaming channel must be reopened');
        this.#needsReopen = true;
      }
    }
  }

  /** At most maxRps appends in any one-second window. */
  async #pace(signal?: AbortSignal): Promise<void> {
    const now = Date.now();
    this.#sendTimes = this.#sendTimes.filter((t) => now - t < 1000);
    if (this.#sendTimes.length >= this.#maxRps) {
      const wait = this.#sendTimes[0]! + 1000 - now;
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        throw new FloeError('destination', `append to ${this.#describe()} was cancelled`, { retry: 'timed', cause: signal?.reason });
      }
    }
    this.#sendTimes.push(Date.now());
  }

  async #send(req: Request, signal?: AbortSignal): Promise<'accepted' | ReopenReason> {
    const base = await this.#session.base(signal);
    const url = new URL(`/v2/streaming/data${channelPath(this.#target, this.name).slice('/v2/streaming'.length)}/rows`, base);
    // The SDK's parameter order; an empty start would be sent as `startOffsetToken=` (§1.7).
    if (req.endToken !== null) {
      url.searchParams.set('startOffsetToken', req.startToken ?? '');
      url.searchParams.set('endOffsetToken', req.endToken);
    }
    url.searchParams.set('continuationToken', this.#continuation);
    let res: SnowflakeResponse;
    try {
      res = await this.#http.send({
        route: 'channel_append',
        method: 'POST',
        url,
        auth: this.#session.ingestTokens,
        headers: {
          'content-type': 'application/x-ndjson',
          'content-encoding': 'gzip',
          'x-snowflake-uncompressed-content-length': String(req.rawBytes),
        },
        body: req.body,
        signal,
        retryNetworkErrors: false,
      });
    } catch (err) {
      if (err instanceof SnowflakeHttpError && err.details.ambiguous && !signal?.aborted) return 'ambiguous';
      // 5xx after all retries: the server may or may not hold the data; reopen before the next send.
      if (err instanceof SnowflakeHttpError && err.transient) this.#needsReopen = true;
      if (signal?.aborted) this.#needsReopen = true;
      throw err;
    }
    const code = parseErrorBody(res.text).code;
    if (res.status === 200 || res.status === 201) {
      const body = SnowflakeHttp.json(res) as { next_continuation_token?: unknown; status_code?: unknown; message?: unknown } | undefined;
      const statusCode = body?.status_code;
      if (statusCode !== undefined && statusCode !== 0 && statusCode !== '0') {
        this.#o.log.warn({ channel: this.name, statusCode, message: body?.message }, 'snowpipe streaming append rejected');
        return 'error_code';
      }
      if (typeof body?.next_continuation_token !== 'string' || body.next_continuation_token === '') {
        // Accepted or not, the chain is broken: reopen and replay from the committed token.
        return 'ambiguous';
      }
      this.#continuation = body.next_continuation_token;
      return 'accepted';
    }
    if (code && REOPEN_CODES.has(code)) return 'error_code';
    if (res.status === 409) return 'conflict';
    throw streamingError('channel_append', res, this.#describe());
  }

  async #reopen(signal?: AbortSignal): Promise<void> {
    const status = await this.#openRequest(signal);
    this.#needsReopen = false;
    const failure = this.#rowErrors(status);
    if (failure) throw failure;
    // The first queued request may have been applied before its answer was lost, and even committed:
    // settle over everything, then send again what the committed token does not cover, in order.
    this.#kept = [...this.#kept, ...this.#queued];
    this.#queued = [];
    this.#settle(status.committedOffsetToken);
    const lost = this.#kept.filter((r) => r.body === NO_BODY);
    if (lost.length > 0) {
      const rows = lost.reduce((n, r) => n + r.rows, 0);
      this.#failure = new ChannelRewoundError(
        `${this.#describe()} was reopened with committed offset token ${status.committedOffsetToken ?? 'none'}; the server discarded ${rows} accepted but uncommitted row(s) up to ${lost.at(-1)!.endToken ?? 'unknown'}`,
      );
      this.#kept = [];
      throw this.#failure;
    }
    this.#queued = this.#kept;
    this.#kept = [];
  }

  /**
   * Forgets kept requests that `committed` covers. Commits are atomic per request and in order, so the
   * requests up to the first one ending at `committed` are in; a request without tokens before it too.
   */
  #settle(committed: string | null): void {
    if (committed === null) return;
    if (this.#committed === null || committed > this.#committed) this.#committed = committed;
    if (this.#settledToken !== null && committed <= this.#settledToken) return;
    let k = -1;
    for (let i = 0; i < this.#kept.length; i++) {
      const end = this.#kept[i]!.endToken;
      if (end === null) continue;
      if (end < committed) k = i;
      else {
        if (end === committed) k = i;
        break;
      }
    }
    this.#settledToken = committed;
    if (k < 0) return;
    const now = Date.now();
    for (const r of this.#kept.slice(0, k + 1)) if (r.acceptedAt !== undefined) this.#o.metrics?.committed((now - r.acceptedAt) / 1000);
    this.#kept = this.#kept.slice(k + 1);
  }

  #rowErrors(status: ChannelStatus): FloeError | undefined {
    if (status.rowsErrorCount <= this.#errorBaseline) return undefined;
    const n = status.rowsErrorCount - this.#errorBaseline;
    this.#failure = new FloeError(
      'destination',
      `Snowflake rejected ${n} row(s) in ${this.#describe()}, at or before offset token ${status.lastErrorOffsetToken ?? 'unknown'}: ${
        status.lastErrorMessage ?? 'no message'
      }`,
      {
        retry: 'none',
        hint: 'floe stopped acknowledging; see SELECT * FROM ERROR_TABLE(<journal table>) if ERROR_LOGGING is on, fix the column type or the data, then restart',
      },
    );
    return this.#failure;
  }

  /** Applies a status from the poller; returns a terminal error for the channel's waiters, if any. */
  observe(raw: RawStatus | undefined): FloeError | undefined {
    if (this.#failure) return this.#failure;
    if (raw === undefined) {
      // The channel vanished (dropped, expired, pipe recreated): reopen and re-append what is uncommitted.
      this.#recover('channel_status');
      return undefined;
    }
    const status = toStatus(raw);
    const failure = this.#rowErrors(status);
    if (failure) return failure;
    if (!HEALTHY.has(status.statusCode)) {
      if (FATAL_CODES.has(status.statusCode)) {
        this.#failure = new FloeError('destination', `Snowflake reports ${this.#describe()} in state ${status.statusCode}`, {
          retry: 'manual',
          hint: 'check that the pipe and its table exist and that the role may use them',
        });
        return this.#failure;
      }
      this.#recover('channel_status');
      return undefined;
    }
    this.#settle(status.committedOffsetToken);
    this.#kick();
    return undefined;
  }

  /** Marks the channel for a reopen and starts one in the background. */
  #recover(reason: ReopenReason): void {
    if (this.#needsReopen || this.#dropped) {
      this.#kick();
      return;
    }
    this.#needsReopen = true;
    this.#o.metrics?.reopened(reason);
    this.#o.log.warn({ channel: this.name, reason }, 'snowpipe streaming channel unhealthy in status, reopening');
    this.#kick();
  }

  /**
   * Sends, in the background and under the channel's lock, what a failed append left queued and does a
   * pending reopen, so that a waiter's commit arrives even when the caller does not append again.
   */
  #kick(): void {
    if (this.#recovering || this.#dropped || this.#failure) return;
    if (this.#queued.length === 0 && !this.#needsReopen) return;
    this.#recovering = true;
    this.#serial(() => (this.#failure || this.#dropped ? Promise.resolve() : this.#drain(this.#closing)))
      .catch((err: unknown) =>
        this.#o.log.warn(
          { channel: this.name, err: (err as Error).message },
          'snowpipe streaming channel catch-up failed; retried on the next status or append',
        ),
      )
      .finally(() => (this.#recovering = false));
  }

  waitCommitted(token: string, signal?: AbortSignal): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#committed !== null && this.#committed >= token) return Promise.resolve();
    return this.#poller.wait(this, token, signal);
  }

  async status(signal?: AbortSignal): Promise<ChannelStatus> {
    const raw = (await this.#poller.fetch([this.name], signal)).get(this.name);
    if (raw === undefined)
      return { committedOffsetToken: null, rowsErrorCount: 0, statusCode: 'ERR_CHANNEL_DOES_NOT_EXIST_OR_IS_NOT_AUTHORIZED' };
    const status = toStatus(raw);
    this.observe(raw);
    return status;
  }

  drop(signal?: AbortSignal): Promise<void> {
    return this.#serial(async () => {
      const base = await this.#session.base(signal);
      const url = new URL(channelPath(this.#target, this.name), base);
      url.searchParams.set('requestId', randomUUID());
      const res = await this.#http.send({ route: 'channel_drop', method: 'DELETE', url, auth: this.#session.ingestTokens, signal });
      if (res.status >= 300 && res.status !== 404) throw streamingError('channel_drop', res, this.#describe());
      this.#dropped = true;
      this.#kept = [];
      this.#queued = [];
    });
  }
}
