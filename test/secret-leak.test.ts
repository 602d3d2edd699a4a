/**
 * A known secret in every place a floe run worker takes one (the source password as an env: reference
 * and as an enc:v2 value, the operator key, a file: secret of a second source that fails) never appears
 * in any output channel: logs in both formats, floe status (text and JSON), /metrics, /readyz (even with
 * details), the control-plane and state tables, and the worker's command line as ps shows it.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { freePort } from '../src/postgres/local-cluster.js';
import { runFloe, startFloe } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { secretBinding } from '../src/control/config.js';
import { encryptSecret, loadSecretKey } from '../src/control/secrets.js';

const cluster = testClusters()[0]!;
const PASSWORD = `pw-${randomBytes(9).toString('hex')}`;
const FILE_SECRET = `file-${randomBytes(9).toString('hex')}`;
const KEY = randomBytes(32).toString('base64');

describe('secret leaks from floe run', () => {
  let ctl: TestDatabase;
  let src: TestDatabase;
  const dir = tempDir();
  beforeAll(async () => {
    ctl = await createTestDatabase(cluster, 'leakctl');
    src = await createTestDatabase(cluster, 'leaksrc');
    await src.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;
      CREATE PUBLICATION pub FOR TABLE t`);
  });
  afterAll(async () => {
    await src.dropSlot('floe_leak_a').catch(() => undefined);
    await src.drop();
    await ctl.drop();
    dir.remove();
  });

  it('shows no secret value anywhere', async () => {
    const secrets = join(dir.path, 'secrets');
    mkdirSync(secrets);
    writeFileSync(join(secrets, 'pw'), FILE_SECRET);
    const env = {
      FLOE_DATABASE_URL: ctl.url,
      FLOE_SECRET_KEY: KEY,
      FLOE_SECRET_APP_PW: PASSWORD,
      FLOE_SECRETS_DIR: secrets,
      FLOE_LOG_LEVEL: 'debug',
    };
    const enc = encryptSecret(PASSWORD, loadSecretKey(env), secretBinding({ kind: 'source', name: 'a', url: src.url }));
    const port = await freePort();
    for (const args of [
      ['migrate'],
      ['source', 'add', 'a', '--url', src.url, '--password', enc],
      // A source whose server is not there: its errors go through every error channel.
      ['source', 'add', 'b', '--url', 'postgres://floe@127.0.0.1:1/x', '--password', `file:${join(secrets, 'pw')}`],
      ['source', 'add', 'c', '--url', 'postgres://floe@127.0.0.1:1/y', '--password', 'env:FLOE_SECRET_APP_PW'],
      ['destination', 'add', 'wh', '--type', 'duckdb', '--path', join(dir.path, 'wh.duckdb')],
      ['destination', 'add', 'wh2', '--type', 'duckdb', '--path', join(dir.path, 'wh2.duckdb')],
      ['destination', 'add', 'wh3', '--type', 'duckdb', '--path', join(dir.path, 'wh3.duckdb')],
      ['pipeline', 'add', 'leak_a', '--source', 'a', '--destination', 'wh', '--publication', 'pub'],
      ['pipeline', 'add', 'leak_b', '--source', 'b', '--destination', 'wh2', '--publication', 'pub'],
      ['pipeline', 'add', 'leak_c', '--source', 'c', '--destination', 'wh3', '--publication', 'pub'],
      ['pipeline', 'start', 'leak_a'],
      ['pipeline', 'start', 'leak_b'],
      ['pipeline', 'start', 'leak_c'],
    ]) {
      const r = await runFloe(args, env);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    const channels: Record<string, string> = {};
    for (const format of ['json', 'pretty']) {
      const worker = startFloe(
        [
          'run',
          '--worker-id',
          `w-${format}`,
          '--poll-interval-ms',
          '300',
          '--metrics-port',
          String(port),
          '--readyz-details',
          '--log-format',
          format,
        ],
        env,
      );
      try {
        await waitFor(
          'pipelines running and failing',
          async () => {
            const rows = await ctl.sql<{ name: string; state: string }>(`SELECT name, state FROM floe.pipeline ORDER BY name`);
            return rows[0]?.state === 'streaming' && rows[1]?.state === 'failed' && rows[2]?.state === 'failed';
          },
          90_000,
        );
        channels[`/metrics ${format}`] = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        channels[`/readyz ${format}`] = await (await fetch(`http://127.0.0.1:${port}/readyz`)).text();
        const pid = execFileSync('pgrep', ['-f', `w-${format}`])
          .toString()
          .trim()
          .split('\n')[0]!;
        channels[`ps ${format}`] = execFileSync('ps', ['-o', 'args=', '-p', pid]).toString();
      } finally {
        worker.kill('SIGTERM');
        channels[`log ${format}`] = (await worker.exited).stderr;
      }
    }
    expect(channels['log json']).toMatch(/cannot connect to the source/);
    expect(channels['log pretty']).toMatch(/cannot connect to the source/);
    for (const args of [['status'], ['status', '--json'], ['source', 'list'], ['pipeline', 'list'], ['source', 'test', 'b']]) {
      const r = await runFloe(args, env);
      channels[args.join(' ')] = r.stdout + r.stderr;
    }
    channels.tables = JSON.stringify(
      await ctl.sql(`SELECT (SELECT json_agg(x) FROM floe.source x) s, (SELECT json_agg(x) FROM floe.pipeline x) p,
        (SELECT json_agg(x) FROM floe.pipeline_table x) t, (SELECT json_agg(x) FROM floe.replication_progress x) r,
        (SELECT json_agg(x) FROM floe.worker x) w`),
    );
    channels.activity = JSON.stringify(await src.sql(`SELECT application_name, query FROM pg_stat_activity`));
    for (const [channel, text] of Object.entries(channels)) {
      for (const secret of [PASSWORD, encodeURIComponent(PASSWORD), FILE_SECRET, KEY]) {
        expect(text.includes(secret), `${secret.slice(0, 6)}... in ${channel}`).toBe(false);
      }
    }
  });
});
