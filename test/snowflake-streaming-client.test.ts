/** Snowpipe Streaming client against an in-test stub: bootstrap variants, appends, limits, reopen-and-replay, commits, row errors. */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyPairAuth } from '../src/destination/snowflake/auth.js';
import { BreakerOpenError, SnowflakeBreaker } from '../src/destination/snowflake/http.js';
import { SNOWFLAKE_METRIC, SnowflakeMetrics } from '../src/destination/snowflake/metrics.js';
import {
  parseIngestHost,
  parseScopedToken,
  StreamingClient,
  type Channel,
  type StreamingClientOptions,
} from '../src/destination/snowflake/streaming.js';
import { silentLogger } from '../src/telemetry/logger.js';
import { floeFailure as failure, SnowflakeStub, type StubOptions } from './helpers/snowflake-stub.js';
import { waitFor } from './helpers/wait.js';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const auth = new KeyPairAuth({ account: 'my_org-my_account', user: 'floe', privateKey });
const target = { database: 'ANALYTICS', schema: 'RAW', pipe: 'ORDERS_JOURNAL-STREAMING' };

let stub: SnowflakeStub;
let client: StreamingClient;
let registry: Registry;
const clients: StreamingClient[] = [];

async function setup(options: StubOptions = {}, extra: Partial<StreamingClientOptions> = {}): Promise<void> {
  stub = new SnowflakeStub(options);
  await stub.start();
  registry = new Registry();
  client = new StreamingClient({
    accountUrl: stub.url,
    baseUrlOverride: true,
    auth,
    log: silentLogger,
    metrics: new SnowflakeMetrics(registry),
    statusPollIntervalMs: 10,
    retry: { maxAttempts: 4, baseDelayMs: 2, maxDelayMs: 10 },
    maxRequestsPerSecond: 1000,
    ...extra,
  });
  clients.push(client);
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await stub?.stop();
});

/** Lines with unique, fixed-width tokens (floe's positions). */
function rows(from: number, to: number, pad = 0): { lines: string[]; tokens: string[] } {
  const lines: string[] = [];
  const tokens: string[] = [];
  for (let i = from; i < to; i++) {
    const token = String(i).padStart(20, '0');
    lines.push(JSON.stringify({ ID: i, PAD: pad > 0 ? randomBytes(pad).toString('base64') : '' }));
    tokens.push(token);
  }
  return { lines, tokens };
}

const ids = (lines: readonly string[] | undefined): number[] => (lines ?? []).map((l) => (JSON.parse(l) as { ID: number }).ID);
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

describe('response shape parsing', () => {
  it('reads every hostname shape and applies the underscore fix', () => {
    expect(parseIngestHost('my_org-my_acct.ingest.snowflakecomputing.com\n')).toBe('my-org-my-acct.ingest.snowflakecomputing.com');
    expect(parseIngestHost('{"hostname":"a_b.ingest"}')).toBe('a-b.ingest');
    expect(parseIngestHost('{"host":"a_b.ingest"}')).toBe('a-b.ingest');
    expect(parseIngestHost('"a_b.ingest"')).toBe('a-b.ingest');
    expect(parseIngestHost('http://127.0.0.1:8080/')).toBe('http://127.0.0.1:8080');
  });

  it('reads raw and JSON tokens and their expiry', () => {
    const payload = Buffer.from(JSON.stringify({ exp: 2_000_000_000 })).toString('base64url');
    const jwt = `eyJhbGciOiJIUzI1NiJ9.${payload}.c2ln`;
    expect(parseScopedToken(jwt, 0)).toEqual({ token: jwt, expiresAt: 2_000_000_000_000 });
    expect(parseScopedToken(JSON.stringify({ token: jwt }), 0).token).toBe(jwt);
    expect(parseScopedToken('opaque-token', 1000)).toEqual({ token: 'opaque-token', expiresAt: 1000 + 55 * 60_000 });
  });
});

describe('bootstrap', () => {
  it.each([
    ['text', 'raw'],
    ['json', 'json'],
    ['quoted', 'raw'],
    ['json-host', 'json'],
  ] as const)(
    'hostname as %s, token as %s: scope is the fixed host, channel calls use the scoped token',
    async (hostnameShape, tokenShape) => {
      await setup({ hostnameShape, tokenShape, hostname: 'my_org-my_account.ingest.local' });
      const ch = await client.openChannel(target, 'CH_1');
      expect(ch.committedOffsetToken).toBeNull();
      const [discovery] = stub.of('hostname');
      expect(discovery!.headers['x-snowflake-authorization-token-type']).toBe('KEYPAIR_JWT');
      const [exchange] = stub.of('token');
      const form = new URLSearchParams(exchange!.body);
      expect(form.get('scope')).toBe('my-org-my-account.ingest.local');
      expect(form.get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
      expect(exchange!.headers.authorization).toMatch(/^Bearer /);
      // The documented exchange sends Authorization and Content-Type, and no token-type header.
      expect(exchange!.headers['x-snowflake-authorization-token-type']).toBeUndefined();
      expect(exchange!.headers['content-type']).toBe('application/x-www-form-urlencoded');
      const [open] = stub.of('open');
      expect(open!.headers.authorization).toMatch(/^Bearer .+\..+\.c2ln$/); // the stub's scoped token
      expect(open!.headers['x-snowflake-authorization-token-type']).toBe('OAUTH');
      expect(open!.headers.accept).toBe('application/json');
      expect(JSON.parse(open!.body)).toEqual({ fail_on_uncommitted_rows: false });
    },
  );

  it('without an override, channel calls go to the discovered ingest host only', async () => {
    const ingest = new SnowflakeStub();
    await ingest.start();
    try {
      await setup({ hostname: ingest.url.replace('http://', '') }, { baseUrlOverride: false });
      const ch = await client.openChannel(target, 'CH');
      await ch.append(...(Object.values(rows(1, 3)) as [string[], string[]]));
      await ch.waitCommitted(String(2).padStart(20, '0'));
      expect(stub.requests.map((r) => r.route)).toEqual(['hostname', 'token']);
      expect(new Set(ingest.requests.map((r) => r.route))).toEqual(new Set(['open', 'append', 'status']));
    } finally {
      await ingest.stop();
    }
  });

  it('exchanges the scoped token again before it expires', async () => {
    let now = Date.now();
    await setup({ tokenTtlSeconds: 600 }, { now: () => now });
    const ch = await client.openChannel(target, 'CH');
    expect(stub.count('token')).toBe(1);
    await ch.status();
    expect(stub.count('token')).toBe(1);
    now += 590_000; // within the refresh margin of a 600 s token
    await ch.status();
    expect(stub.count('token')).toBe(2);
    const [first, second] = stub.of('status').map((r) => r.headers.authorization);
    expect(first).not.toBe(second);
  });
});

describe('appends', () => {
  it('sends NDJSON, gzip, offset tokens in the SDK order, and chains continuation tokens', async () => {
    await setup();
    const ch = await client.openChannel(target, 'CH.1:a');
    const a = rows(1, 4);
    await ch.append(a.lines, a.tokens);
    const b = rows(4, 6);
    await ch.append(b.lines, b.tokens);
    const appends = stub.of('append');
    expect(appends).toHaveLength(2);
    expect(appends[0]!.url).toContain('/channels/CH.1%3Aa/rows?');
    expect([...appends[0]!.query.keys()]).toEqual(['startOffsetToken', 'endOffsetToken', 'continuationToken']);
    expect(appends[0]!.query.get('startOffsetToken')).toBe(a.tokens[0]);
    expect(appends[0]!.query.get('endOffsetToken')).toBe(a.tokens[2]);
    expect(appends[0]!.headers['content-type']).toBe('application/x-ndjson');
    expect(appends[0]!.headers['content-encoding']).toBe('gzip');
    expect(Number(appends[0]!.headers['x-snowflake-uncompressed-content-length'])).toBe(Buffer.byteLength(appends[0]!.body));
    expect(appends[0]!.body).toBe(a.lines.join('\n') + '\n');
    expect(appends[1]!.query.get('continuationToken')).not.toBe(appends[0]!.query.get('continuationToken'));
    await ch.waitCommitted(b.tokens[1]!);
    expect(ids(stub.committedLines.get('CH.1:a'))).toEqual(range(1, 6));
    expect(ch.committedOffsetToken).toBe(b.tokens[1]);
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.rowsAppended)).toMatch(/ 5$/m);
  });

  it('splits at 4 MB on the wire by default, in order', async () => {
    await setup();
    const ch = await client.openChannel(target, 'BIG');
    const r = rows(0, 2400, 3000); // ~10 MB of incompressible text
    await ch.append(r.lines, r.tokens);
    const appends = stub.of('append');
    expect(appends.reduce((n, a) => n + a.wireBytes, 0)).toBeGreaterThan(4_000_000);
    expect(appends.length).toBeGreaterThanOrEqual(2);
    for (const a of appends) expect(a.wireBytes).toBeLessThanOrEqual(4_000_000);
    await ch.waitCommitted(r.tokens.at(-1)!);
    expect(ids(stub.committedLines.get('BIG'))).toEqual(range(0, 2400));
  });

  it('sends no offset tokens on a request that ends inside a run of equal tokens', async () => {
    await setup({}, { maxRequestBytes: 600 });
    const ch = await client.openChannel(target, 'RUN');
    const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ ID: i, PAD: randomBytes(60).toString('base64') }));
    const tokenOf = (i: number): string => (i < 17 ? 'T1' : i < 33 ? 'T2' : 'T3');
    await ch.append(
      lines,
      lines.map((_, i) => tokenOf(i)),
    );
    const appends = stub.of('append');
    expect(appends.length).toBeGreaterThan(4);
    const ends = appends.map((a) => a.query.get('endOffsetToken'));
    expect(ends.some((e) => e === null)).toBe(true);
    expect(ends.at(-1)).toBe('T3');
    // A request naming token E is never followed by a line that still carries E: a committed E means the whole run.
    appends.forEach((a, i) => {
      const end = ends[i];
      const next = appends[i + 1];
      if (end === null || end === undefined || !next) return;
      expect(ids(a.body.split('\n').filter(Boolean)).map(tokenOf).at(-1)).toBe(end);
      expect(tokenOf(ids(next.body.split('\n').filter(Boolean))[0]!) > end).toBe(true);
    });
  });

  it('keeps to the per-channel request rate (counted by the stub)', async () => {
    await setup({}, { maxRequestsPerSecond: 3, maxRequestBytes: 300 });
    const ch = await client.openChannel(target, 'RATE');
    const r = rows(0, 8, 150);
    await ch.append(r.lines, r.tokens);
    const times = stub.of('append').map((a) => a.at);
    expect(times.length).toBeGreaterThanOrEqual(7);
    // At most 3 in any window of (a little under, for scheduling noise on a loaded machine) one second.
    for (let i = 0; i < times.length; i++) expect(times.filter((t) => t >= times[i]! && t < times[i]! + 900).length).toBeLessThanOrEqual(3);
  });

  it('rejects tokens that go backwards and rows too large for one request', async () => {
    await setup({}, { maxRequestBytes: 500 });
    const ch = await client.openChannel(target, 'BAD');
    expect((await failure(ch.append(['{"A":1}', '{"A":2}'], ['2', '1']))).kind).toBe('internal');
    const huge = JSON.stringify({ A: randomBytes(2000).toString('base64') });
    const e = await failure(ch.append([huge], ['3']));
    expect(e.retry).toBe('none');
    expect(e.message).toMatch(/does not fit one Snowpipe Streaming request/);
    expect(e.message).not.toContain(huge.slice(10, 40));
  });
});

describe('reopen and replay', () => {
  async function appendInSteps(ch: Channel, from: number, to: number, step: number): Promise<void> {
    for (let i = from; i < to; i += step) {
      const r = rows(i, Math.min(to, i + step));
      await ch.append(r.lines, r.tokens);
    }
  }

  it('after a stale continuation token: no gap, no duplicate', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    await appendInSteps(ch, 0, 30, 5);
    stub.commitAll(); // 0..29 committed
    await ch.status();
    await appendInSteps(ch, 30, 50, 5); // accepted, uncommitted
    stub.bumpSequencer('CH'); // another opener: uncommitted data discarded, our token stale
    await appendInSteps(ch, 50, 60, 5);
    stub.commitAll();
    await ch.waitCommitted(rows(59, 60).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 60));
    expect(stub.count('open')).toBe(2);
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.channelReopens)).toMatch(/reason="error_code"} 1/);
  });

  it('after a connection dropped once the append was applied (uncommitted): replays it', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    await appendInSteps(ch, 0, 10, 5);
    stub.inject('append', { kind: 'drop-after-apply' });
    await appendInSteps(ch, 10, 20, 5);
    stub.commitAll();
    await ch.waitCommitted(rows(19, 20).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 20));
  });

  it('after a connection dropped once the append was applied and committed: does not send it twice', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    await appendInSteps(ch, 0, 10, 5);
    stub.inject('append', { kind: 'drop-after-apply', commit: true });
    await appendInSteps(ch, 10, 20, 5);
    stub.commitAll();
    await ch.waitCommitted(rows(19, 20).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 20));
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.channelReopens)).toMatch(/reason="ambiguous"} 1/);
  });

  it('after a 409 and after each reopen-class code', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    const codes = [
      'ERR_CHANNEL_MUST_BE_REOPENED',
      'ERR_CHANNEL_HAS_INVALID_CLIENT_SEQUENCER',
      'STALE_PIPE_CACHE',
      'ERR_CHANNEL_MUST_BE_REOPENED_DUE_TO_ROW_SEQ_GAP',
    ];
    stub.inject('append', { kind: 'reply', status: 409, body: { code: 'CONFLICT', message: 'channel invalidated' } });
    for (const code of codes) stub.inject('append', { kind: 'reply', status: 400, body: { code, message: 'reopen' } });
    await appendInSteps(ch, 0, 40, 5);
    stub.commitAll();
    await ch.waitCommitted(rows(39, 40).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 40));
    expect(stub.count('open')).toBe(1 + 1 + codes.length);
  });

  it('when status reports the channel unhealthy, it reopens by itself and the commit arrives', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    await appendInSteps(ch, 0, 10, 5);
    // The server lost the uncommitted data and wants a reopen.
    stub.channels.get('CH')!.statusCode = 'ERR_CHANNEL_MUST_BE_REOPENED';
    stub.channels.get('CH')!.pending = [];
    const done = ch.waitCommitted(rows(9, 10).tokens[0]!);
    await waitFor('the reopen', () => stub.count('open') === 2);
    await waitFor('the replay', () => stub.channels.get('CH')!.pending.length === 2);
    stub.commitAll();
    await done;
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 10));
  });

  it('retries 429 and 5xx on the same continuation token without reopening', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    stub.inject(
      'append',
      { kind: 'reply', status: 429, body: { code: '429', message: 'throttled' }, headers: { 'retry-after': '0' } },
      { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' },
    );
    await appendInSteps(ch, 0, 5, 5);
    const appends = stub.of('append');
    expect(appends).toHaveLength(3);
    expect(new Set(appends.map((a) => a.query.get('continuationToken'))).size).toBe(1);
    expect(stub.count('open')).toBe(1);
  });

  it('retries a 408 on open like any transient answer', async () => {
    await setup();
    stub.inject('open', { kind: 'reply', status: 408, body: { code: '408', message: 'request timeout' } });
    const ch = await client.openChannel(target, 'CH');
    expect(ch.committedOffsetToken).toBeNull();
    expect(stub.count('open')).toBe(2);
  });

  it('a waiter gets the lines of a failed append delivered without another call', async () => {
    await setup({}, { retry: { maxAttempts: 1 } });
    const ch = await client.openChannel(target, 'CH');
    stub.inject('append', { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' });
    const r = rows(0, 5);
    expect((await failure(ch.append(r.lines, r.tokens))).retry).toBe('timed');
    await ch.waitCommitted(r.tokens.at(-1)!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 5));
  });

  it('keeps unsent lines after a failed append and sends them first on the next call', async () => {
    await setup({ commit: 'manual' }, { retry: { maxAttempts: 1 } });
    const ch = await client.openChannel(target, 'CH');
    stub.inject('append', { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' });
    const r = rows(0, 5);
    expect((await failure(ch.append(r.lines, r.tokens))).retry).toBe('timed');
    await appendInSteps(ch, 5, 10, 5);
    stub.commitAll();
    await ch.waitCommitted(rows(9, 10).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 10));
  });
});

describe('outage', () => {
  it('fails fast while the breaker is open, keeps the lines, and delivers them once after it closes', async () => {
    const breaker = new SnowflakeBreaker({ consecutiveFailures: 2, halfOpenAfterMs: 200 });
    await setup({ commit: 'manual' }, { breaker, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2 } });
    const ch = await client.openChannel(target, 'CH');
    await ch.append(...(Object.values(rows(0, 5)) as [string[], string[]]));
    stub.inject(
      'append',
      { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' },
      { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' },
    );
    const r = rows(5, 10);
    expect((await failure(ch.append(r.lines, r.tokens))).retry).toBe('timed');
    expect(breaker.state).toBe('open');
    const sent = stub.requests.length;
    const fast = await failure(ch.flush());
    expect(fast).toBeInstanceOf(BreakerOpenError);
    expect(stub.requests.length).toBe(sent); // nothing sent while open
    await waitFor('the breaker to allow a probe', () => breaker.state === 'half-open', 5000);
    await ch.flush(); // reopens (the 5xx left the outcome unknown) and re-sends what is uncommitted
    expect(breaker.state).toBe('closed');
    stub.commitAll();
    await ch.waitCommitted(rows(9, 10).tokens[0]!);
    expect(ids(stub.committedLines.get('CH'))).toEqual(range(0, 10));
  });
});

describe('outage with an expired token', () => {
  it('the half-open probe can exchange a new scoped token first (no self-wait)', async () => {
    let now = Date.now();
    const breaker = new SnowflakeBreaker({ consecutiveFailures: 2, halfOpenAfterMs: 150 });
    await setup({ tokenTtlSeconds: 600 }, { breaker, now: () => now, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2 } });
    const ch = await client.openChannel(target, 'CH');
    stub.inject('status', { kind: 'reply', status: 503, body: '' }, { kind: 'reply', status: 503, body: '' });
    await failure(ch.status());
    expect(breaker.state).toBe('open');
    now += 3_600_000; // the outage outlived the scoped token
    await waitFor('the breaker to allow a probe', () => breaker.state === 'half-open', 5000);
    const status = await ch.status();
    expect(status.statusCode).toBe('SUCCESS');
    expect(stub.count('token')).toBe(2);
    expect(breaker.state).toBe('closed');
  });
});

describe('commits and status', () => {
  it('one bulk status request per round serves every waiting channel of a pipe', async () => {
    await setup({ commit: 'manual' });
    const channels = await Promise.all(['A', 'B', 'C'].map((n) => client.openChannel(target, n)));
    for (const ch of channels) {
      const r = rows(0, 3);
      await ch.append(r.lines, r.tokens);
    }
    const token = rows(2, 3).tokens[0]!;
    const waits = channels.flatMap((ch) => [ch.waitCommitted(token), ch.waitCommitted(token)]);
    await waitFor('a few status rounds', () => stub.count('status') >= 3);
    const before = stub.count('status');
    for (const req of stub.of('status')) expect(JSON.parse(req.body).channel_names.sort()).toEqual(['A', 'B', 'C']);
    stub.commitAll();
    await Promise.all(waits);
    expect(stub.count('status') - before).toBeLessThanOrEqual(2);
  });

  it('row errors in status stop the channel with the channel, offset token and server message', async () => {
    await setup();
    const ch = await client.openChannel(target, 'ERR');
    await ch.append(['{"ID":1}', '{"ID":2,"bad":true}', '{"ID":3}'], ['001', '002', '003']);
    const e = await failure(ch.waitCommitted('003'));
    expect(e.kind).toBe('destination');
    expect(e.retry).toBe('none');
    expect(e.message).toContain('channel ERR on pipe ANALYTICS.RAW.ORDERS_JOURNAL-STREAMING');
    expect(e.message).toContain('offset token 003');
    expect(e.message).toContain("Numeric value 'abc' is not recognized");
    expect((await failure(ch.append(['{"ID":4}'], ['004']))).message).toBe(e.message);
    const status = await ch.status();
    expect(status.rowsErrorCount).toBe(1);
    expect(status.lastErrorOffsetToken).toBe('003');
  });

  it('a missing pipe is an operator problem, not a retry loop', async () => {
    await setup();
    stub.inject('open', { kind: 'reply', status: 404, body: { error_code: 'ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED' } });
    const e = await failure(client.openChannel(target, 'CH'));
    expect(e.retry).toBe('manual');
    expect(e.message).toContain('ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED');
    expect(stub.count('open')).toBe(1);
  });

  it('retries a concurrent open (409 ERR_OPEN_CHANNEL_IN_PROGRESS), then reports the committed token', async () => {
    await setup();
    const first = await client.openChannel(target, 'CH');
    await first.append(['{"ID":1}'], ['007']);
    await first.waitCommitted('007');
    stub.inject('open', { kind: 'reply', status: 409, body: { code: 'ERR_OPEN_CHANNEL_IN_PROGRESS', message: 'busy' } });
    const again = await client.openChannel(target, 'CH');
    expect(again.committedOffsetToken).toBe('007');
    expect(again.openStatus.rowsErrorCount).toBe(0);
  });

  it('drop removes the channel; later appends are refused', async () => {
    await setup();
    const ch = await client.openChannel(target, 'CH');
    await ch.drop();
    expect(stub.channels.has('CH')).toBe(false);
    expect((await failure(ch.append(['{"ID":1}'], ['1']))).message).toMatch(/was dropped/);
  });

  it('close() ends pending waits', async () => {
    await setup({ commit: 'manual' });
    const ch = await client.openChannel(target, 'CH');
    await ch.append(['{"ID":1}'], ['1']);
    const wait = ch.waitCommitted('1');
    await waitFor('a status round', () => stub.count('status') >= 1);
    const ended = failure(wait);
    await client.close();
    expect((await ended).retry).toBe('timed');
  });
});
