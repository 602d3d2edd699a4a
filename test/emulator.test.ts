/**
 * The Snowflake emulator over plain HTTP: auth, Snowpipe Streaming, SQL API
 * v2 and fault injection, with JWTs signed here the way a client signs them.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { KeyObject } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmulator, type RunningEmulator } from '../src/emulator/emulator.js';
import { waitFor } from './helpers/wait.js';
import { jwt as signJwt, keyPair } from './helpers/emulator-http.js';

const ACCOUNT = 'TESTORG-TESTACCT';
const USER = 'FLOE_USER';

const jwt = (key: KeyObject, fingerprint: string, opts: { account?: string; user?: string; iat?: number; exp?: number } = {}) =>
  signJwt(key, fingerprint, { account: ACCOUNT, user: USER, ...opts });

let emu: RunningEmulator;
let key: ReturnType<typeof keyPair>;
let token: string;
const admin = (): Record<string, string> => ({ authorization: `Bearer ${emu.adminToken}` });

async function call(
  method: string,
  path: string,
  body?: unknown,
  init: { headers?: Record<string, string>; raw?: Buffer | string; bearer?: string } = {},
): Promise<{ status: number; text: string; json: () => unknown }> {
  const res = await fetch(emu.url + path, {
    method,
    headers: {
      Accept: 'application/json',
      Authorization: `Bearer ${init.bearer ?? token}`,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...init.headers,
    },
    body: init.raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) as unknown };
}

interface SqlBody {
  data?: (string | null)[][];
  code?: string;
  sqlState?: string;
  message?: string;
  statementHandle?: string;
  statementHandles?: string[];
  resultSetMetaData?: { numRows: number; rowType: { name: string; type: string; precision: number | null; scale: number | null }[] };
}

async function sql(statement: string, extra: Record<string, unknown> = {}, query = ''): Promise<{ status: number; body: SqlBody }> {
  const r = await call('POST', `/api/v2/statements${query}`, { statement, warehouse: 'COMPUTE_WH', ...extra });
  return { status: r.status, body: r.json() as SqlBody };
}

const ch = (pipe: string, channel: string) =>
  `/v2/streaming/databases/APP/schemas/RAW/pipes/${encodeURIComponent(pipe)}/channels/${encodeURIComponent(channel)}`;
const rowsPath = (pipe: string, channel: string, q: Record<string, string>) =>
  `/v2/streaming/data/databases/APP/schemas/RAW/pipes/${encodeURIComponent(pipe)}/channels/${encodeURIComponent(channel)}/rows?${new URLSearchParams(q)}`;
const ndjson = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

async function append(pipe: string, channel: string, cont: string, rows: unknown[], offset: string, headers: Record<string, string> = {}) {
  return call('POST', rowsPath(pipe, channel, { startOffsetToken: offset, endOffsetToken: offset, continuationToken: cont }), undefined, {
    raw: ndjson(rows),
    headers: { 'Content-Type': 'application/x-ndjson', ...headers },
  });
}

async function channelStatus(pipe: string, names: string[]) {
  const r = await call('POST', `/v2/streaming/databases/APP/schemas/RAW/pipes/${encodeURIComponent(pipe)}:bulk-channel-status`, {
    channel_names: names,
  });
  return r.json() as { channel_statuses: Record<string, Record<string, unknown>> };
}

beforeAll(async () => {
  emu = await startEmulator({ port: 0, dataPath: ':memory:', account: ACCOUNT, commitDelayMs: 100, channelRps: 10, sqlSyncWaitMs: 2000 });
  key = keyPair();
  emu.addUser(USER, key.publicPem);
  token = await jwt(key.privateKey, key.fingerprint);
  const setup = await sql(
    `CREATE DATABASE IF NOT EXISTS APP; CREATE SCHEMA IF NOT EXISTS APP.RAW;
     CREATE TABLE IF NOT EXISTS APP.RAW.EVENTS (ID NUMBER(38,0) NOT NULL, NAME VARCHAR(5), AMOUNT NUMBER(10,2), TS TIMESTAMP_TZ(6), DOC VARIANT, TAGS ARRAY, BIN BINARY)`,
    { parameters: { MULTI_STATEMENT_COUNT: '0' } },
  );
  expect(setup.status).toBe(200);
});

afterAll(async () => {
  await emu?.close();
});

describe('auth', () => {
  it('accepts a valid key-pair JWT and rejects expired, unknown-user, bad-signature and wrong-fingerprint tokens with 401 390144', async () => {
    expect((await call('GET', '/v2/streaming/hostname')).status).toBe(200);

    const now = Math.floor(Date.now() / 1000);
    const expired = await jwt(key.privateKey, key.fingerprint, { iat: now - 7200, exp: now - 3600 });
    const r1 = await call('GET', '/v2/streaming/hostname', undefined, { bearer: expired });
    expect(r1.status).toBe(401);
    expect(r1.json()).toMatchObject({ code: '390144' });
    expect((r1.json() as { message: string }).message).toMatch(/expired/);

    // iat two hours back but exp in the future: effective lifetime is at most 1 h after iat.
    const tooLong = await jwt(key.privateKey, key.fingerprint, { iat: now - 7200, exp: now + 600 });
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: tooLong })).status).toBe(401);

    const unknown = await jwt(key.privateKey, key.fingerprint, { user: 'NOBODY' });
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: unknown })).status).toBe(401);

    const other = keyPair();
    const badSig = await jwt(other.privateKey, key.fingerprint);
    const r2 = await call('GET', '/v2/streaming/hostname', undefined, { bearer: badSig });
    expect(r2.status).toBe(401);
    expect((r2.json() as { message: string }).message).toMatch(/signature/);

    const wrongFp = await jwt(other.privateKey, other.fingerprint);
    const r3 = await call('GET', '/v2/streaming/hostname', undefined, { bearer: wrongFp });
    expect(r3.status).toBe(401);
    const msg = (r3.json() as { message: string }).message;
    expect(msg).toContain(key.fingerprint); // names the fingerprint the server expected
    expect(msg).toContain(other.fingerprint);

    const wrongAccount = await jwt(key.privateKey, key.fingerprint, { account: 'OTHER' });
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: wrongAccount })).status).toBe(401);

    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: 'not-a-jwt' })).status).toBe(401);
  });

  it('checks the claims of a token on every request, also once its signature has verified', async () => {
    const now = Math.floor(Date.now() / 1000);
    const short = await jwt(key.privateKey, key.fingerprint, { iat: now, exp: now + 60 });
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: short })).status).toBe(200);
    vi.useFakeTimers({ toFake: ['Date'], now: (now + 120) * 1000 });
    try {
      const r = await call('GET', '/v2/streaming/hostname', undefined, { bearer: short });
      expect(r.status).toBe(401);
      expect((r.json() as { message: string }).message).toMatch(/expired/);
    } finally {
      vi.useRealTimers();
    }
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: short })).status).toBe(200);
  });

  it('registers users through the admin route, which needs the admin token', async () => {
    const k = keyPair();
    const body = JSON.stringify({ name: USER, publicKeyPem: k.publicPem });
    for (const headers of [
      {} as Record<string, string>,
      { authorization: 'Bearer wrong-token-wrong-token' },
      { authorization: emu.adminToken },
    ]) {
      const refused = await fetch(`${emu.url}/_emulator/users`, { method: 'POST', headers, body });
      expect(refused.status).toBe(401);
      expect(await refused.text()).not.toContain(emu.adminToken);
    }
    expect((await fetch(`${emu.url}/_emulator/state`)).status).toBe(401);
    expect((await fetch(`${emu.url}/_emulator/faults`, { method: 'DELETE' })).status).toBe(401);
    // The user's key was not replaced.
    expect((await call('GET', '/v2/streaming/hostname')).status).toBe(200);
    const res = await fetch(`${emu.url}/_emulator/users`, {
      method: 'POST',
      headers: admin(),
      body: JSON.stringify({ name: 'second', publicKeyPem: k.publicPem }),
    });
    expect(await res.json()).toEqual({ name: 'SECOND', fingerprint: k.fingerprint });
    const t = await jwt(k.privateKey, k.fingerprint, { user: 'SECOND' });
    expect((await call('GET', '/v2/streaming/hostname', undefined, { bearer: t })).status).toBe(200);
  });

  it('discovers the ingest host and exchanges the JWT for a scoped token that the streaming and SQL routes accept', async () => {
    // The documented shapes by default: {"hostname": ...} and {"token": ...}.
    const host = await call('GET', '/v2/streaming/hostname');
    const { hostname } = host.json() as { hostname: string };
    expect(hostname).toBe(new URL(emu.url).host);
    const tok = await call('POST', '/oauth/token', undefined, {
      raw: `grant_type=${encodeURIComponent('urn:ietf:params:oauth:grant-type:jwt-bearer')}&scope=${hostname}`,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(tok.status).toBe(200);
    const scoped = (tok.json() as { token: string }).token;
    expect(scoped.split('.')).toHaveLength(3);
    const open = await call(
      'PUT',
      ch('EVENTS-STREAMING', 'SCOPED'),
      {},
      { bearer: scoped, headers: { 'X-Snowflake-Authorization-Token-Type': 'OAUTH' } },
    );
    expect(open.status).toBe(200);
    const q = await call('POST', '/api/v2/statements', { statement: 'SELECT CURRENT_USER()', warehouse: 'COMPUTE_WH' }, { bearer: scoped });
    expect((q.json() as SqlBody).data).toEqual([[USER]]);
    // The scoped token is not a key-pair JWT: the token exchange itself refuses it.
    const again = await call('POST', '/oauth/token', undefined, {
      raw: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer',
      bearer: scoped,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(again.status).toBe(401);
  });

  it('is as strict as the documented headers: Accept everywhere, User-Agent and a JSON Content-Type on the SQL API, 405 on a wrong method', async () => {
    const statement = { statement: 'SELECT 1', warehouse: 'COMPUTE_WH' };
    const noAccept = await call('POST', '/api/v2/statements', statement, { headers: { Accept: '' } });
    expect([noAccept.status, (noAccept.json() as SqlBody).code]).toEqual([400, '391902']);
    const noAgent = await call('POST', '/api/v2/statements', statement, { headers: { 'User-Agent': '' } });
    expect(noAgent.status).toBe(400);
    expect((noAgent.json() as SqlBody).message).toMatch(/User-Agent/);
    const wrongType = await call('POST', '/api/v2/statements', undefined, {
      raw: JSON.stringify(statement),
      headers: { 'Content-Type': 'text/plain' },
    });
    expect(wrongType.status).toBe(415);
    expect((await call('GET', '/api/v2/statements')).status).toBe(405);
    expect((await call('POST', '/api/v2/statements/01b2c3d4-0000-0000-0000-000000000000', statement)).status).toBe(405);
    const streamingNoAccept = await call('PUT', ch('EVENTS-STREAMING', 'NOACCEPT'), {}, { headers: { Accept: '' } });
    expect([streamingNoAccept.status, (streamingNoAccept.json() as SqlBody).code]).toEqual([400, '391902']);
    // What floe's clients send passes: the same request with the documented headers.
    expect((await call('POST', '/api/v2/statements', statement, { headers: { 'User-Agent': 'floe-test/1' } })).status).toBe(200);
  });

  it('refuses a token-type header on /oauth/token, which the documented exchange does not send', async () => {
    const tok = await call('POST', '/oauth/token', undefined, {
      raw: `grant_type=${encodeURIComponent('urn:ietf:params:oauth:grant-type:jwt-bearer')}&scope=${new URL(emu.url).host}`,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Snowflake-Authorization-Token-Type': 'KEYPAIR_JWT' },
    });
    expect(tok.status).toBe(400);
    expect(tok.json()).toMatchObject({ code: 'invalid_request' });
  });
});

describe('DuckDB sandbox', () => {
  it('SQL cannot read, write or attach local files, nor turn external access back on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'floe-emu-sandbox-'));
    writeFileSync(join(dir, 'secret.csv'), 'k,v\nSECRET_VALUE,1\n');
    writeFileSync(join(dir, 'secret.json'), '{"k": "SECRET_VALUE"}\n');
    for (const statement of [
      `SELECT * FROM '${join(dir, 'secret.csv')}'`,
      `SELECT * FROM '${join(dir, 'secret.json')}'`,
      `SELECT * FROM '/etc/passwd'`,
      `SELECT * FROM read_csv('/etc/passwd')`,
      `SELECT * FROM read_json('/etc/hostname')`,
      `ATTACH '/tmp/floe-emulator-attach.duckdb' AS x`,
      `SET enable_external_access = true`,
    ]) {
      const r = await sql(statement);
      expect(r.status, statement).not.toBe(200);
      expect(JSON.stringify(r.body)).not.toMatch(/root:|SECRET_VALUE/);
    }
    rmSync(dir, { recursive: true, force: true });
    // Direct queries (tests, no auth) share the engine: the lock holds there too.
    await expect(emu.query(`SELECT * FROM read_csv('/etc/passwd')`)).rejects.toThrow();
  });
});

describe('streaming', () => {
  it('opens a channel on the default pipe, appends, commits after the delay and reports status', async () => {
    const open = await call('PUT', ch('EVENTS-STREAMING', 'CH1'), {});
    expect(open.status).toBe(200);
    const o = open.json() as { next_continuation_token: string; channel_status: Record<string, unknown> };
    expect(o.channel_status).toMatchObject({
      channel_status_code: 'SUCCESS',
      last_committed_offset_token: null,
      pipe_name: 'EVENTS-STREAMING',
    });

    const a = await append(
      'EVENTS-STREAMING',
      'CH1',
      o.next_continuation_token,
      [
        { ID: 1, NAME: 'a', AMOUNT: '12.50', TS: '2024-01-02T03:04:05.123456+02:00', DOC: { k: [1, 2] }, TAGS: ['x'], BIN: 'AAEC' },
        { id: 2, name: 'b' }, // keys match columns case-insensitively
      ],
      '00000000000000000010',
    );
    expect(a.status).toBe(200);
    const next = (a.json() as { next_continuation_token: string }).next_continuation_token;
    expect(next).not.toBe(o.next_continuation_token);

    // Not committed yet: asynchronous commit.
    expect((await channelStatus('EVENTS-STREAMING', ['CH1'])).channel_statuses.CH1!.last_committed_offset_token).toBeNull();
    await waitFor(
      'commit',
      async () =>
        (await channelStatus('EVENTS-STREAMING', ['CH1'])).channel_statuses.CH1!.last_committed_offset_token === '00000000000000000010',
    );
    const st = (await channelStatus('EVENTS-STREAMING', ['CH1', 'NOPE'])).channel_statuses;
    expect(Object.keys(st)).toEqual(['CH1']);
    expect(st.CH1).toMatchObject({ rows_inserted: 2, rows_parsed: 2, rows_error_count: 0, rows_errors: 0 });

    const r = await sql('SELECT ID, NAME, AMOUNT, TS, DOC:k[1], TAGS, BIN FROM APP.RAW.EVENTS ORDER BY ID');
    expect(r.body.data).toEqual([
      ['1', 'a', '12.50', '1704157445.123456000 1440', '2', '[\n  "x"\n]', '000102'],
      ['2', 'b', null, null, null, null, null],
    ]);
  });

  it('accepts gzip bodies, reports row errors without committing the bad rows, and keeps the good ones', async () => {
    const open = (await call('PUT', ch('EVENTS-STREAMING', 'CH2'), {})).json() as { next_continuation_token: string };
    const body = gzipSync(
      ndjson([
        { ID: 10, NAME: 'ok' },
        { ID: 11, AMOUNT: 'abc' }, // not a number
        { ID: 12, NAME: 'toolong' }, // VARCHAR(5)
        { ID: 13, TS: 'yesterday' }, // bad timestamp
        { NAME: 'noid' }, // NOT NULL
        { ID: 14, AMOUNT: 123456789.5 }, // out of range for NUMBER(10,2)
        { ID: 15, NAME: 'fine' },
      ]),
    );
    const a = await call(
      'POST',
      rowsPath('EVENTS-STREAMING', 'CH2', { continuationToken: open.next_continuation_token, offsetToken: '20' }),
      undefined,
      {
        raw: body,
        headers: { 'Content-Type': 'application/x-ndjson', 'Content-Encoding': 'gzip' },
      },
    );
    expect(a.status).toBe(200);
    await waitFor(
      'commit',
      async () => (await channelStatus('EVENTS-STREAMING', ['CH2'])).channel_statuses.CH2!.last_committed_offset_token === '20',
    );
    const st = (await channelStatus('EVENTS-STREAMING', ['CH2'])).channel_statuses.CH2!;
    expect(st).toMatchObject({ rows_parsed: 7, rows_inserted: 2, rows_error_count: 5, last_error_offset_upper_bound: '20' });
    expect(typeof st.last_error_message).toBe('string');
    expect(typeof st.last_error_timestamp).toBe('number');
    const r = await sql('SELECT ID FROM APP.RAW.EVENTS WHERE ID >= 10 ORDER BY ID');
    expect(r.body.data).toEqual([['10'], ['15']]);
  });

  it('commits numbers exactly through the fast integer and DECIMAL(18) paths and the wide-text path alike', async () => {
    const setup = await sql('CREATE TABLE IF NOT EXISTS APP.RAW.NUMS (K NUMBER(10,0), W NUMBER(38,0), S NUMBER(38,10), N NUMBER(5,2))');
    expect(setup.status).toBe(200);
    const open = (await call('PUT', ch('NUMS-STREAMING', 'N1'), {})).json() as { next_continuation_token: string };
    const rows = [
      { K: 1, W: 0, S: '0', N: -0 },
      { K: 2, W: -12345678901234, S: '-5', N: '-999' },
      { K: 3, W: '12345678901234567890123456789012345678', S: '1234567890123456789012345678.0123456789', N: 1.005 },
      { K: 4, W: '-99999999999999999999', S: 0.1, N: '1e2' },
      { K: 5, W: '00042', S: '-0.00000000005', N: '001' },
      { K: 6, W: '123456789012345678', S: 12345678, N: 999.994 },
    ];
    expect((await append('NUMS-STREAMING', 'N1', open.next_continuation_token, rows, '1')).status).toBe(200);
    await waitFor(
      'commit',
      async () => (await channelStatus('NUMS-STREAMING', ['N1'])).channel_statuses.N1!.last_committed_offset_token === '1',
    );
    const r = await sql('SELECT K, W, S, N FROM APP.RAW.NUMS ORDER BY K');
    expect(r.body.data).toEqual([
      ['1', '0', '0.0000000000', '0.00'],
      ['2', '-12345678901234', '-5.0000000000', '-999.00'],
      ['3', '12345678901234567890123456789012345678', '1234567890123456789012345678.0123456789', '1.01'],
      ['4', '-99999999999999999999', '0.1000000000', '100.00'],
      ['5', '42', '-0.0000000001', '1.00'],
      ['6', '123456789012345678', '12345678.0000000000', '999.99'],
    ]);
  });

  it('reopening invalidates the old continuation token and returns the committed offset; uncommitted batches are discarded', async () => {
    await emu.faults.set({ stallCommits: true });
    const first = (await call('PUT', ch('EVENTS-STREAMING', 'CH3'), {})).json() as { next_continuation_token: string };
    const a1 = await append('EVENTS-STREAMING', 'CH3', first.next_continuation_token, [{ ID: 30 }], '30');
    expect(a1.status).toBe(200);
    const t2 = (a1.json() as { next_continuation_token: string }).next_continuation_token;
    // A reused token (already consumed) is refused.
    expect((await append('EVENTS-STREAMING', 'CH3', first.next_continuation_token, [{ ID: 31 }], '31')).status).toBe(400);

    const reopen = await call('PUT', ch('EVENTS-STREAMING', 'CH3'), { fail_on_uncommitted_rows: true });
    expect(reopen.status).toBe(409);
    expect(reopen.json()).toMatchObject({ code: 'ERR_CHANNEL_HAS_UNCOMMITTED_DATA' });
    const re = (await call('PUT', ch('EVENTS-STREAMING', 'CH3'), {})).json() as {
      next_continuation_token: string;
      channel_status: { last_committed_offset_token: string | null };
    };
    expect(re.channel_status.last_committed_offset_token).toBeNull();
    const stale = await append('EVENTS-STREAMING', 'CH3', t2, [{ ID: 32 }], '32');
    expect(stale.status).toBe(400);
    expect(stale.json()).toMatchObject({ code: 'STALE_CONTINUATION_TOKEN_SEQUENCER' });

    emu.faults.set({ stallCommits: false });
    const ok = await append('EVENTS-STREAMING', 'CH3', re.next_continuation_token, [{ ID: 33 }], '33');
    expect(ok.status).toBe(200);
    await waitFor(
      'commit',
      async () => (await channelStatus('EVENTS-STREAMING', ['CH3'])).channel_statuses.CH3!.last_committed_offset_token === '33',
    );
    // The discarded batch (ID 30) never reached the table.
    expect((await sql('SELECT ID FROM APP.RAW.EVENTS WHERE ID BETWEEN 30 AND 39 ORDER BY ID')).body.data).toEqual([['33']]);
    const again = (await call('PUT', ch('EVENTS-STREAMING', 'CH3'), {})).json() as {
      channel_status: { last_committed_offset_token: string };
    };
    expect(again.channel_status.last_committed_offset_token).toBe('33');
  });

  it('rejects bodies over 4 MB with 413 and more than channelRps appends per second with 429', async () => {
    let cont = ((await call('PUT', ch('EVENTS-STREAMING', 'CH4'), {})).json() as { next_continuation_token: string })
      .next_continuation_token;
    const big = await call('POST', rowsPath('EVENTS-STREAMING', 'CH4', { continuationToken: cont, offsetToken: '1' }), undefined, {
      raw: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20),
      headers: { 'Content-Type': 'application/x-ndjson' },
    });
    expect(big.status).toBe(413);
    const statuses: number[] = [];
    for (let k = 0; k < 15; k++) {
      const r = await append('EVENTS-STREAMING', 'CH4', cont, [{ ID: 400 + k }], String(k));
      statuses.push(r.status);
      if (r.status === 200) cont = (r.json() as { next_continuation_token: string }).next_continuation_token;
    }
    expect(statuses).toContain(429);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(9);
  });

  it('404s an unknown pipe, an unknown channel, and drops a channel', async () => {
    const bad = await call('PUT', ch('NOPE-STREAMING', 'X'), {});
    expect(bad.status).toBe(404);
    expect(bad.json()).toMatchObject({ code: 'ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED' });
    const st = await call('POST', `/v2/streaming/databases/APP/schemas/RAW/pipes/NOPE-STREAMING:bulk-channel-status`, {
      channel_names: ['X'],
    });
    expect(st.status).toBe(404);
    await call('PUT', ch('EVENTS-STREAMING', 'CH5'), {});
    expect((await call('DELETE', ch('EVENTS-STREAMING', 'CH5'), {})).status).toBe(200);
    expect((await call('DELETE', ch('EVENTS-STREAMING', 'CH5'), {})).status).toBe(404);
    expect(Object.keys((await channelStatus('EVENTS-STREAMING', ['CH5'])).channel_statuses)).toEqual([]);
  });

  it('loads through a named pipe with an explicit $1:path column mapping', async () => {
    const r = await sql(
      `CREATE PIPE IF NOT EXISTS APP.RAW.EV_PIPE AS COPY INTO APP.RAW.EVENTS (ID, NAME) FROM (SELECT $1:id, $1:meta.name FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING')))`,
    );
    expect(r.status).toBe(200);
    const open = (await call('PUT', ch('EV_PIPE', 'P1'), {})).json() as { next_continuation_token: string };
    expect((await append('EV_PIPE', 'P1', open.next_continuation_token, [{ id: 50, meta: { name: 'deep' } }], '50')).status).toBe(200);
    await emu.flush();
    expect((await sql('SELECT NAME FROM APP.RAW.EVENTS WHERE ID = 50')).body.data).toEqual([['deep']]);
    const pipes = await sql('SHOW PIPES IN SCHEMA APP.RAW');
    expect(pipes.body.data!.map((row) => row[1])).toEqual(expect.arrayContaining(['EV_PIPE', 'EVENTS-STREAMING']));
  });
});

describe('SQL API', () => {
  it('answers single statements with resultSetMetaData and string cells, and 422 on errors', async () => {
    const r = await sql(`SELECT 1::NUMBER(10,2) AS A, 'x' AS B, TRUE AS C, '2024-01-02'::DATE AS D, PARSE_JSON('{"a":1}') AS E`);
    expect(r.status).toBe(200);
    expect(r.body.data).toEqual([['1.00', 'x', 'true', '19724', '{\n  "a": 1\n}']]);
    expect(r.body.resultSetMetaData!.rowType.map((t) => t.type)).toEqual(['fixed', 'text', 'boolean', 'date', 'variant']);
    expect(r.body.resultSetMetaData!.rowType[0]).toMatchObject({ name: 'A', precision: 10, scale: 2 });

    const bad = await sql('GRANT ROLE X TO USER Y');
    expect(bad.status).toBe(422);
    expect(bad.body).toMatchObject({ code: '001003', sqlState: '42000' });
    expect(bad.body.message).toMatch(/^SQL compilation error/);
    expect(bad.body.statementHandle).toBeTruthy();

    const missing = await sql('SELECT * FROM APP.RAW.NOPE');
    expect(missing.status).toBe(422);
    expect(missing.body).toMatchObject({ code: '002003', sqlState: '42S02' });

    const wh = await sql('USE WAREHOUSE NOPE_WH');
    expect(wh.body).toMatchObject({ code: '002043' });

    const three = await sql('SELECT 1; SELECT 2; SELECT 3');
    expect(three.status).toBe(422);
    expect(three.body.message).toBe('Actual statement count 3 did not match the desired statement count 1.');
  });

  it('runs multi-statement requests with child handles, in one transaction when wrapped', async () => {
    await sql('CREATE TABLE IF NOT EXISTS APP.RAW.CTL (K VARCHAR, V NUMBER)');
    const r = await sql(`BEGIN; INSERT INTO APP.RAW.CTL VALUES ('a', 1); UPDATE APP.RAW.CTL SET V = 2 WHERE K = 'a'; COMMIT;`, {
      parameters: { MULTI_STATEMENT_COUNT: '4' },
    });
    expect(r.status).toBe(200);
    expect(r.body.data).toEqual([['Multiple statements executed successfully.']]);
    expect(r.body.statementHandles).toHaveLength(4);
    const child = await call('GET', `/api/v2/statements/${r.body.statementHandles![2]}`);
    expect((child.json() as SqlBody).data).toEqual([['1', '0']]);

    const failed = await sql(`BEGIN; INSERT INTO APP.RAW.CTL VALUES ('b', 1); SELECT NOPE(); COMMIT;`, {
      parameters: { MULTI_STATEMENT_COUNT: '0' },
    });
    expect(failed.status).toBe(422);
    expect(failed.body).toMatchObject({ code: '100132', sqlState: 'P0000' });
    // The open transaction was rolled back: 'b' is not there.
    expect((await sql('SELECT K, V FROM APP.RAW.CTL ORDER BY K')).body.data).toEqual([['a', '2']]);
  });

  it('returns 202 for async statements and the result when polled; requestId + retry=true never executes twice', async () => {
    const r = await sql(`INSERT INTO APP.RAW.CTL VALUES ('c', 3)`, {}, '?async=true&requestId=11111111-1111-1111-1111-111111111111');
    expect(r.status).toBe(202);
    expect(r.body.code).toBe('333334');
    const polled = await waitFor('result', async () => {
      const p = await call('GET', `/api/v2/statements/${r.body.statementHandle}`);
      return p.status === 200 ? (p.json() as SqlBody) : undefined;
    });
    expect(polled.data).toEqual([['1']]);
    const retried = await sql(`INSERT INTO APP.RAW.CTL VALUES ('c', 3)`, {}, '?requestId=11111111-1111-1111-1111-111111111111&retry=true');
    expect(retried.status).toBe(200);
    expect(retried.body.statementHandle).toBe(r.body.statementHandle);
    expect((await sql(`SELECT COUNT(*) FROM APP.RAW.CTL WHERE K = 'c'`)).body.data).toEqual([['1']]);
    // A failed statement is executed again on retry (here it fails again, with a new handle).
    const failedOnce = await sql('SELECT * FROM APP.RAW.NOT_YET', {}, '?requestId=22222222-2222-2222-2222-222222222222');
    expect(failedOnce.status).toBe(422);
    await sql('CREATE TABLE APP.RAW.NOT_YET (A INT)');
    const ok = await sql('SELECT * FROM APP.RAW.NOT_YET', {}, '?requestId=22222222-2222-2222-2222-222222222222&retry=true');
    expect(ok.status).toBe(200);
    expect(ok.body.statementHandle).not.toBe(failedOnce.body.statementHandle);
  });

  it('answers 202 for a statement outlasting the sync wait, cancels a running statement, and times out with 408', async () => {
    // sqlSyncWaitMs is 2000 in this file: a 3 s statement comes back as 202 without async=true.
    const slow = await sql(`CALL SYSTEM$WAIT(3)`);
    expect(slow.status).toBe(202);
    const done = await waitFor('slow statement', async () => {
      const p = await call('GET', `/api/v2/statements/${slow.body.statementHandle}`);
      return p.status === 200 ? (p.json() as SqlBody) : undefined;
    });
    expect(done.data).toEqual([['waited 3 seconds']]);

    const long = await sql(`SELECT SYSTEM$WAIT(60)`, {}, '?async=true');
    expect(long.status).toBe(202);
    const cancel = await call('POST', `/api/v2/statements/${long.body.statementHandle}/cancel`, {});
    expect(cancel.status).toBe(200);
    expect(cancel.json()).toMatchObject({ code: '000604', sqlState: '57014' });
    const after = await call('GET', `/api/v2/statements/${long.body.statementHandle}`);
    expect(after.status).toBe(422);
    expect(after.json()).toMatchObject({ code: '000604' });
    expect((await call('POST', '/api/v2/statements/nope/cancel', {})).json()).toMatchObject({ code: '000709' });

    const timed = await sql(`SELECT SYSTEM$WAIT(60)`, { timeout: 1 });
    expect(timed.status).toBe(408);
    expect(timed.body).toMatchObject({ code: '000630' });
  });

  it('pages large results into gzip partitions fetched with ?partition=n', async () => {
    emu.faults.set({ compat: { partitionRows: 2 } });
    try {
      const res = await fetch(`${emu.url}/api/v2/statements`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({
          statement: `SELECT ID FROM APP.RAW.EVENTS WHERE ID IN (1, 2, 10, 15, 33) ORDER BY ID`,
          warehouse: 'COMPUTE_WH',
        }),
      });
      const body = (await res.json()) as SqlBody & { resultSetMetaData: { partitionInfo: { rowCount: number }[] } };
      expect(res.headers.get('link')).toContain('partition=1>; rel="next"');
      expect(body.resultSetMetaData.numRows).toBe(5);
      expect(body.resultSetMetaData.partitionInfo.map((p) => p.rowCount)).toEqual([2, 2, 1]);
      expect(body.data).toEqual([['1'], ['2']]);
      const p2 = await fetch(`${emu.url}/api/v2/statements/${body.statementHandle}?partition=2`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      expect(p2.headers.get('content-encoding')).toBe('gzip');
      expect(await p2.json()).toEqual({ data: [['33']] });
    } finally {
      emu.faults.clear();
    }
  });

  it('runs the CDC MERGE with QUALIFY and Snowflake semantics, including the duplicate-row error 100090', async () => {
    const setup = await sql(
      `CREATE TABLE IF NOT EXISTS APP.RAW.J (PK VARIANT, OP STRING, LSN NUMBER(20,0), AFTER VARIANT, UNCHANGED ARRAY);
       CREATE TABLE IF NOT EXISTS APP.RAW.T ("ID" NUMBER(38,0), "NAME" VARCHAR, "DOC" VARIANT, "_LSN" NUMBER(20,0));
       INSERT INTO APP.RAW.T VALUES (1, 'old', PARSE_JSON('{"keep":true}'), 5), (3, 'gone', NULL, 5);
       INSERT INTO APP.RAW.J SELECT PARSE_JSON('{"id":1}'), 'u', 10, PARSE_JSON('{"name":"first"}'), ARRAY_CONSTRUCT('doc');
       INSERT INTO APP.RAW.J SELECT PARSE_JSON('{"id":1}'), 'u', 20, PARSE_JSON('{"name":"second"}'), ARRAY_CONSTRUCT('doc');
       INSERT INTO APP.RAW.J SELECT PARSE_JSON('{"id":2}'), 'c', 15, PARSE_JSON('{"name":"new","doc":{"x":1}}'), ARRAY_CONSTRUCT();
       INSERT INTO APP.RAW.J SELECT PARSE_JSON('{"id":3}'), 'd', 16, NULL, NULL;`,
      { parameters: { MULTI_STATEMENT_COUNT: '0' } },
    );
    expect(setup.status).toBe(200);
    const merge = (qualify: boolean) => `MERGE INTO APP.RAW.T AS t USING (
        SELECT j.PK:"id"::NUMBER(38,0) AS "ID", j.OP AS _OP, j.LSN AS _LSN, j.AFTER:"name"::STRING AS "NAME", j.AFTER:"doc" AS "DOC",
               ARRAY_CONTAINS('doc'::VARIANT, COALESCE(j.UNCHANGED, ARRAY_CONSTRUCT())) AS _DOC_UNCHANGED
        FROM APP.RAW.J j
        ${qualify ? 'QUALIFY ROW_NUMBER() OVER (PARTITION BY j.PK:"id" ORDER BY j.LSN DESC) = 1' : ''}
      ) AS s ON t."ID" = s."ID"
      WHEN MATCHED AND s._OP = 'd' THEN DELETE
      WHEN MATCHED AND s._LSN > COALESCE(t."_LSN", -1) THEN UPDATE SET t."NAME" = s."NAME", t."DOC" = IFF(s._DOC_UNCHANGED, t."DOC", s."DOC"), t."_LSN" = s._LSN
      WHEN NOT MATCHED AND s._OP <> 'd' THEN INSERT ("ID", "NAME", "DOC", "_LSN") VALUES (s."ID", s."NAME", s."DOC", s._LSN)`;
    const dup = await sql(merge(false));
    expect(dup.status).toBe(422);
    expect(dup.body).toMatchObject({ code: '100090', sqlState: '42P18' });
    expect((await sql('SELECT "ID", "NAME" FROM APP.RAW.T ORDER BY 1')).body.data).toEqual([
      ['1', 'old'],
      ['3', 'gone'],
    ]);

    const ok = await sql(merge(true));
    expect(ok.status).toBe(200);
    expect(ok.body.resultSetMetaData!.rowType.map((c) => c.name)).toEqual([
      'number of rows inserted',
      'number of rows updated',
      'number of rows deleted',
    ]);
    expect(ok.body.data).toEqual([['1', '1', '1']]);
    expect((await sql('SELECT "ID", "NAME", "DOC", "_LSN" FROM APP.RAW.T ORDER BY 1')).body.data).toEqual([
      ['1', 'second', '{\n  "keep": true\n}', '20'],
      ['2', 'new', '{\n  "x": 1\n}', '15'],
    ]);
  });
});

describe('faults', () => {
  it('injects errors per route with a documented code, then clears', async () => {
    emu.faults.set({ routes: { open: { errorRate: 1, status: 409, code: 'ERR_OPEN_CHANNEL_IN_PROGRESS', count: 1 } } });
    const r = await call('PUT', ch('EVENTS-STREAMING', 'F1'), {});
    expect(r.status).toBe(409);
    expect(r.json()).toMatchObject({ code: 'ERR_OPEN_CHANNEL_IN_PROGRESS' });
    expect((await call('PUT', ch('EVENTS-STREAMING', 'F1'), {})).status).toBe(200); // count exhausted
    emu.faults.set({ routes: { sql: { errorRate: 1, status: 503 } }, compat: { errorShape: 'string' } });
    expect((await sql('SELECT 1')).status).toBe(503);
    const s = await call('PUT', ch('EVENTS-STREAMING', 'F1'), {}); // errorShape applies to streaming errors only
    expect(s.status).toBe(200);
    emu.faults.set({ routes: { open: { errorRate: 1, status: 503 } } });
    const bare = await call('PUT', ch('EVENTS-STREAMING', 'F1'), {});
    expect(bare.text).toBe('"ERR_GENERAL_EXCEPTION_RETRY_REQUEST"');
    const res = await fetch(`${emu.url}/_emulator/faults`, { method: 'DELETE', headers: admin() });
    expect(res.status).toBe(200);
    expect((await sql('SELECT 1')).status).toBe(200);
  });

  it('adds latency and switches response shapes', async () => {
    // The shapes live services answer (plain text) are behind the compat switch.
    emu.faults.set({ routes: { hostname: { latencyMs: 150 } }, compat: { hostname: 'text', token: 'text', healthyStatus: 'ACTIVE' } });
    const t0 = Date.now();
    const h = await call('GET', '/v2/streaming/hostname');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(h.text).toBe(new URL(emu.url).host);
    const tok = await call('POST', '/oauth/token', undefined, {
      raw: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(tok.text.split('.')).toHaveLength(3);
    const open = (await call('PUT', ch('EVENTS-STREAMING', 'F2'), {})).json() as { channel_status: { channel_status_code: string } };
    expect(open.channel_status.channel_status_code).toBe('ACTIVE');
    emu.faults.clear();
  });

  it('drops the connection after the rows were appended (ambiguous outcome) and before handling', async () => {
    const open = (await call('PUT', ch('EVENTS-STREAMING', 'F3'), {})).json() as { next_continuation_token: string };
    emu.faults.set({ routes: { append: { drop: 'after', count: 1 } } });
    await expect(append('EVENTS-STREAMING', 'F3', open.next_continuation_token, [{ ID: 60 }], '60')).rejects.toThrow();
    await emu.flush();
    // The append took effect although the client saw a network error.
    expect((await sql('SELECT COUNT(*) FROM APP.RAW.EVENTS WHERE ID = 60')).body.data).toEqual([['1']]);
    emu.faults.set({ routes: { sql: { drop: 'before', count: 1 } } });
    await expect(sql('SELECT 1')).rejects.toThrow();
    expect((await sql('SELECT 1')).status).toBe(200);
    emu.faults.clear();
  });

  it('stalls commits: offset tokens stop advancing until cleared', async () => {
    const open = (await call('PUT', ch('EVENTS-STREAMING', 'F4'), {})).json() as { next_continuation_token: string };
    await fetch(`${emu.url}/_emulator/faults`, { method: 'POST', headers: admin(), body: JSON.stringify({ stallCommits: true }) });
    expect((await append('EVENTS-STREAMING', 'F4', open.next_continuation_token, [{ ID: 70 }], '70')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300)); // well past the 100 ms commit delay
    expect((await channelStatus('EVENTS-STREAMING', ['F4'])).channel_statuses.F4!.last_committed_offset_token).toBeNull();
    const state = (await (await fetch(`${emu.url}/_emulator/state`, { headers: admin() })).json()) as {
      channels: { channel: string; pendingRows: number }[];
    };
    expect(state.channels.find((c) => c.channel === 'F4')!.pendingRows).toBe(1);
    await fetch(`${emu.url}/_emulator/faults`, { method: 'DELETE', headers: admin() });
    await waitFor(
      'commit',
      async () => (await channelStatus('EVENTS-STREAMING', ['F4'])).channel_statuses.F4!.last_committed_offset_token === '70',
    );
  });

  it('invalidates channels so they must be reopened', async () => {
    const open = (await call('PUT', ch('EVENTS-STREAMING', 'F5'), {})).json() as { next_continuation_token: string };
    emu.faults.set({ invalidateChannels: { channel: 'F5' } });
    const r = await append('EVENTS-STREAMING', 'F5', open.next_continuation_token, [{ ID: 80 }], '80');
    expect(r.json()).toMatchObject({ code: 'ERR_CHANNEL_MUST_BE_REOPENED' });
    expect((await channelStatus('EVENTS-STREAMING', ['F5'])).channel_statuses.F5!.channel_status_code).toBe('ERR_CHANNEL_MUST_BE_REOPENED');
    const re = (await call('PUT', ch('EVENTS-STREAMING', 'F5'), {})).json() as {
      next_continuation_token: string;
      channel_status: { channel_status_code: string };
    };
    expect(re.channel_status.channel_status_code).toBe('SUCCESS');
    emu.faults.clear();
  });

  it('full outage: 503 on every route, or connection refused for a while', async () => {
    emu.faults.set({ outage: { mode: 'http503' } });
    expect((await call('GET', '/v2/streaming/hostname')).status).toBe(503);
    expect((await sql('SELECT 1')).status).toBe(503);
    emu.faults.clear();
    expect((await sql('SELECT 1')).status).toBe(200);

    emu.faults.set({ outage: { mode: 'refuse', durationMs: 300 } });
    await expect(fetch(`${emu.url}/v2/streaming/hostname`)).rejects.toThrow();
    await waitFor('listener back', async () => {
      try {
        return (await call('GET', '/v2/streaming/hostname')).status === 200;
      } catch {
        return false;
      }
    });
  });
});

describe('floe emulator command', () => {
  it('prints its URL and account, authenticates a --user key, keeps data in the --data file across restarts, and stops on SIGTERM', async () => {
    const { spawn } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'floe-emulator-'));
    const k = keyPair();
    writeFileSync(join(dir, 'rsa_key.pub'), k.publicPem);
    const start = async () => {
      const child = spawn(
        process.execPath,
        [
          'bin/floe.js',
          'emulator',
          '--port',
          '0',
          '--data',
          join(dir, 'sf.duckdb'),
          '--account',
          'acme',
          '--user',
          `floe_user=${join(dir, 'rsa_key.pub')}`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      const url = await waitFor('emulator start', () => /listening on (http:\/\/\S+)/.exec(out)?.[1], 60_000);
      return { child, url, out: () => out, exited };
    };
    try {
      const first = await start();
      expect(first.out()).toContain('account:    ACME');
      expect(first.out()).toContain('not Snowflake');
      expect(first.out()).toContain(k.fingerprint);
      const bearer = await jwt(k.privateKey, k.fingerprint, { account: 'ACME' });
      const post = (url: string, statement: string, count = '0') =>
        fetch(`${url}/api/v2/statements`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ statement, parameters: { MULTI_STATEMENT_COUNT: count } }),
        });
      expect((await post(first.url, `CREATE DATABASE D; CREATE TABLE D.PUBLIC.T (A INT); INSERT INTO D.PUBLIC.T VALUES (7)`)).status).toBe(
        200,
      );
      first.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);

      const second = await start();
      const r = (await (await post(second.url, 'SELECT A FROM D.PUBLIC.T', '1')).json()) as SqlBody;
      expect(r.data).toEqual([['7']]);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('restart', () => {
  it('keeps channels and their committed offset tokens in the data file; tokens from before the restart are stale', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'floe-emulator-restart-'));
    const k = keyPair();
    const begin = async () => {
      const e = await startEmulator({ dataPath: join(dir, 'sf.duckdb'), account: ACCOUNT, commitDelayMs: 10 });
      e.addUser(USER, k.publicPem);
      return e;
    };
    const bearer = await jwt(k.privateKey, k.fingerprint);
    const req = (e: RunningEmulator, method: string, path: string, body: string | undefined, type = 'application/json') =>
      fetch(e.url + path, {
        method,
        headers: { Authorization: `Bearer ${bearer}`, Accept: 'application/json', 'Content-Type': type },
        body,
      });
    try {
      const a = await begin();
      await a.query('CREATE DATABASE APP; CREATE SCHEMA APP.RAW; CREATE TABLE APP.RAW.EVENTS (ID NUMBER)');
      const open = (await (await req(a, 'PUT', ch('EVENTS-STREAMING', 'R1'), '{}')).json()) as { next_continuation_token: string };
      const path = rowsPath('EVENTS-STREAMING', 'R1', { continuationToken: open.next_continuation_token, offsetToken: '42' });
      const appended = (await (await req(a, 'POST', path, ndjson([{ ID: 1 }]), 'application/x-ndjson')).json()) as {
        next_continuation_token: string;
      };
      await a.flush();
      await a.close();

      const b = await begin();
      try {
        const stale = await req(
          b,
          'POST',
          rowsPath('EVENTS-STREAMING', 'R1', { continuationToken: appended.next_continuation_token, offsetToken: '43' }),
          ndjson([{ ID: 2 }]),
          'application/x-ndjson',
        );
        expect(((await stale.json()) as { code: string }).code).toBe('STALE_CONTINUATION_TOKEN_SEQUENCER');
        const reopened = (await (await req(b, 'PUT', ch('EVENTS-STREAMING', 'R1'), '{}')).json()) as {
          channel_status: Record<string, unknown>;
        };
        expect(reopened.channel_status).toMatchObject({ last_committed_offset_token: '42', rows_inserted: 1 });
        expect((await b.query('SELECT COUNT(*) FROM APP.RAW.EVENTS')).rows).toEqual([['1']]);
      } finally {
        await b.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
