/** The wire clients against `floe emulator` (startEmulator): the same HTTP surface the destination uses, with its faults. */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KeyPairAuth } from '../src/destination/snowflake/auth.js';
import { SnowflakeBreaker } from '../src/destination/snowflake/http.js';
import { SNOWFLAKE_METRIC, SnowflakeMetrics } from '../src/destination/snowflake/metrics.js';
import { Registry } from 'prom-client';
import { SqlApiClient } from '../src/destination/snowflake/sql-api.js';
import { StreamingClient } from '../src/destination/snowflake/streaming.js';
import { startEmulator, type RunningEmulator } from '../src/emulator/emulator.js';
import { FloeError } from '../src/errors.js';
import { silentLogger } from '../src/telemetry/logger.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const target = { database: 'APP', schema: 'RAW', pipe: 'EVENTS-STREAMING' };

let emu: RunningEmulator;
let auth: KeyPairAuth;
let sql: SqlApiClient;
let streaming: StreamingClient;
const registry = new Registry();
const metrics = new SnowflakeMetrics(registry);

beforeAll(async () => {
  emu = await startEmulator({ account: 'TESTORG-TEST_ACCT', commitDelayMs: 30, sqlSyncWaitMs: 100 });
  emu.addUser('FLOE_USER', publicKey.export({ type: 'spki', format: 'pem' }).toString());
  auth = new KeyPairAuth({ account: 'testorg-test_acct', user: 'floe_user', privateKey });
  const breaker = new SnowflakeBreaker({ consecutiveFailures: 50 });
  const retry = { maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 20 };
  sql = new SqlApiClient({
    baseUrl: emu.url,
    auth,
    warehouse: 'COMPUTE_WH',
    breaker,
    log: silentLogger,
    metrics,
    retry,
    pollIntervalMs: { min: 10, max: 50 },
  });
  streaming = new StreamingClient({
    accountUrl: emu.url,
    baseUrlOverride: true,
    auth,
    breaker,
    log: silentLogger,
    metrics,
    retry,
    statusPollIntervalMs: 20,
  });
  await sql.multi([
    'CREATE DATABASE IF NOT EXISTS APP',
    'CREATE SCHEMA IF NOT EXISTS APP.RAW',
    'CREATE TABLE IF NOT EXISTS APP.RAW.EVENTS (ID NUMBER(38,0) NOT NULL, NAME VARCHAR)',
  ]);
});
afterEach(() => emu.faults.clear());
afterAll(async () => {
  await streaming?.close();
  await sql?.close();
  await emu?.close();
});

const tok = (i: number): string => String(i).padStart(20, '0');
const batch = (from: number, to: number): [string[], string[]] => {
  const lines: string[] = [];
  const tokens: string[] = [];
  for (let i = from; i < to; i++) {
    lines.push(JSON.stringify({ ID: i, NAME: `n${i}` }));
    tokens.push(tok(i));
  }
  return [lines, tokens];
};
const ids = async (from: number, to: number): Promise<string[]> =>
  (await sql.query(`SELECT ID FROM APP.RAW.EVENTS WHERE ID >= ${from} AND ID < ${to} ORDER BY ID`)).rows.map((r) => r[0]!);
const range = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => String(from + i));

describe('wire clients against the emulator', () => {
  it('authenticates, appends, waits for the commit and reads the rows back through the SQL API', async () => {
    const ch = await streaming.openChannel(target, 'C1');
    expect(ch.committedOffsetToken).toBeNull();
    await ch.append(...batch(0, 50));
    await ch.append(...batch(50, 100));
    await ch.waitCommitted(tok(99));
    expect(await ids(0, 100)).toEqual(range(0, 100));
    const again = await streaming.openChannel(target, 'C1');
    expect(again.committedOffsetToken).toBe(tok(99));
  });

  it('reopens and replays after dropped connections and invalidated channels: no gap, no duplicate', async () => {
    const ch = await streaming.openChannel(target, 'C2');
    await ch.append(...batch(1000, 1010));
    emu.faults.set({ routes: { append: { drop: 'after', count: 1 } } });
    await ch.append(...batch(1010, 1020));
    emu.faults.set({ invalidateChannels: { channel: 'C2' } });
    await ch.append(...batch(1020, 1030));
    await ch.waitCommitted(tok(1029));
    expect(await ids(1000, 1030)).toEqual(range(1000, 1030));
    const reopens = await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.channelReopens);
    expect(reopens).toMatch(/reason="ambiguous"} [1-9]/);
    expect(reopens).toMatch(/reason="error_code"} [1-9]/);
  });

  it('rides out 503s and throttling on the streaming and SQL routes', async () => {
    emu.faults.set({ routes: { append: { errorRate: 1, status: 429, count: 2 }, sql: { errorRate: 1, status: 503, count: 1 } } });
    const ch = await streaming.openChannel(target, 'C3');
    await ch.append(...batch(2000, 2005));
    await ch.waitCommitted(tok(2004));
    expect(await ids(2000, 2005)).toEqual(range(2000, 2005));
    const retries = await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.retries);
    expect(retries).toMatch(/route="channel_append"} 2/);
    expect(retries).toMatch(/route="statement_submit"} 1/);
  });

  it('accepts the JSON and quoted response variants', async () => {
    emu.faults.set({
      compat: { hostname: 'json', token: 'json', hostnameUnderscores: true, errorShape: 'error_code', healthyStatus: 'ACTIVE' },
    });
    const client = new StreamingClient({ accountUrl: emu.url, baseUrlOverride: true, auth, log: silentLogger, statusPollIntervalMs: 20 });
    try {
      const ch = await client.openChannel(target, 'C4');
      await ch.append(...batch(3000, 3003));
      await ch.waitCommitted(tok(3002));
    } finally {
      await client.close();
    }
    expect(await ids(3000, 3003)).toEqual(range(3000, 3003));
  });

  it('reports a row the table rejects, with the channel and offset token', async () => {
    const ch = await streaming.openChannel(target, 'C5');
    await ch.append([JSON.stringify({ ID: 4000 }), JSON.stringify({ ID: 'not a number' })], [tok(4000), tok(4001)]);
    const err = await ch.waitCommitted(tok(4001)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FloeError);
    expect((err as FloeError).retry).toBe('none');
    expect((err as FloeError).message).toContain('channel C5 on pipe APP.RAW.EVENTS-STREAMING');
  });

  it('a key the server does not know is an auth error naming our fingerprint, after one retry', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const wrong = new KeyPairAuth({ account: 'testorg-test_acct', user: 'floe_user', privateKey: other });
    const client = new SqlApiClient({ baseUrl: emu.url, auth: wrong, log: silentLogger });
    try {
      const err = await client.query('SELECT 1').then(
        () => undefined,
        (e: unknown) => e as FloeError,
      );
      expect(err?.kind).toBe('auth');
      expect(err?.retry).toBe('manual');
      expect(err?.message).toContain('390144');
      expect(err?.hint).toContain(wrong.fingerprint);
    } finally {
      await client.close();
    }
  });
});
