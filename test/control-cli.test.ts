/**
 * The control-plane commands, run as a user runs them (`node bin/floe.js ...`) against a real
 * PostgreSQL: every command round trip, and bad input for each: one clear line, a non-zero exit, and
 * nothing written.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { Command, CommanderError } from 'commander';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { runFloe } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { loadPipelineRows, reportPipelineState } from '../src/control/repository.js';
import { resolvePipelineConfig } from '../src/control/config.js';
import { CONFIG_CHANNEL, LATEST_SCHEMA_VERSION } from '../src/control/schema.js';
import { FloeError, coerceError } from '../src/errors.js';
import { migrateCommand } from '../src/cli/migrate.js';
import { sourceCommand } from '../src/cli/source.js';
import { destinationCommand } from '../src/cli/destination.js';
import { pipelineCommand } from '../src/cli/pipeline.js';
import { statusCommand } from '../src/cli/status.js';

const SECRET_KEY = randomBytes(32).toString('base64');
const PASSWORD = 'correct horse battery staple';

type CliResult = { code: number | null; stdout: string; stderr: string };

/**
 * The same commands in this process, with bin/floe.js's error handling (src/cli/main.ts): a node
 * process per command costs seconds on a busy machine, and this file runs about a hundred commands.
 * The tests that spawn real processes (runFloe) check main.ts's wiring of the same commands.
 */
async function runInProcess(args: string[], env: Record<string, string>): Promise<CliResult> {
  const program = new Command('floe');
  for (const c of [migrateCommand(), sourceCommand(), destinationCommand(), pipelineCommand(), statusCommand()]) program.addCommand(c);
  let stdout = '';
  let stderr = '';
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) {
    c.exitOverride().configureOutput({
      writeOut: (t) => (stdout += t),
      writeErr: (t) => (stderr += t),
      outputError: (t, write) => write(`floe: ${t.trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`),
    });
  }
  const saved = { ...process.env };
  const write = process.stdout.write;
  Object.assign(process.env, env);
  for (const [k, v] of Object.entries(env)) if (v === '') delete process.env[k];
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['node', 'floe', ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    if (err instanceof CommanderError) return { code: err.exitCode === 0 ? 0 : 2, stdout, stderr };
    const e = err instanceof FloeError ? err : coerceError(err);
    return { code: e.kind === 'config' ? 2 : 1, stdout, stderr: stderr + `floe: error: ${e.oneLine()}\n` };
  } finally {
    process.stdout.write = write;
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

/** `floe secret encrypt` needs stdin, which runFloe does not give. */
function encrypt(
  input: string,
  env: Record<string, string>,
  args: string[] = ['--source', 'app', '--url', 'postgres://u@h/db'],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/floe.js', 'secret', 'encrypt', ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

describe.each(testClusters())('floe migrate on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'migrate');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('applies each migration once even when two processes migrate at once, then reports up to date', async () => {
    const env = { FLOE_DATABASE_URL: db.url };
    const runs = await Promise.all([runFloe(['migrate'], env), runFloe(['migrate'], env)]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const out = runs.map((r) => r.stdout).join('');
    const versions = Array.from({ length: LATEST_SCHEMA_VERSION }, (_, i) => i + 1);
    // Each migration applied by exactly one of the two processes.
    for (const v of versions) expect(out.match(new RegExp(`applied migration ${v}:`, 'g'))).toHaveLength(1);
    const again = await runInProcess(['migrate', '--database-url', db.url], {});
    expect(again).toMatchObject({ code: 0, stdout: `control-plane schema is up to date (version ${LATEST_SCHEMA_VERSION})\n` });
    expect(await db.sql(`SELECT version FROM floe.schema_migrations ORDER BY version`)).toEqual(versions.map((version) => ({ version })));
  });
});

describe('control-plane commands', () => {
  const cluster = testClusters()[0]!;
  let db: TestDatabase;
  let env: Record<string, string>;
  /** The test's own connection, for the repository functions the manager uses. */
  let ctl: pg.Client;
  const dir = tempDir();
  /** The test database doubles as the source: trust authentication ignores the password it is sent. */
  const sourceUrl = () => db.url;

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'control');
    env = { FLOE_DATABASE_URL: db.url, FLOE_SECRET_KEY: SECRET_KEY, FLOE_SECRET_APP_PG_PASSWORD: PASSWORD };
    await db.sql(`CREATE TABLE public.orders (id int PRIMARY KEY, v text); CREATE PUBLICATION app_pub FOR TABLE public.orders`);
    const m = await runInProcess(['migrate'], env);
    expect(m.code, m.stderr).toBe(0);
    ctl = new pg.Client({ connectionString: db.url });
    await ctl.connect();
  });
  afterAll(async () => {
    await ctl?.end();
    await db.drop();
    dir.remove();
  });

  const floe = async (...args: string[]) => {
    const r = await runInProcess(args, env);
    expect(r.code, `floe ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };

  it('round trip: secret, source, destination, pipeline, controls, status, delete', async () => {
    // secret encrypt → source add with the enc: reference; the table holds only the reference
    const enc = await encrypt(`${PASSWORD}\n`, env, ['--source', 'app', '--url', sourceUrl()]);
    expect(enc.code, enc.stderr).toBe(0);
    const reference = enc.stdout.trim();
    expect(reference).toMatch(/^enc:v2:/);
    expect(reference).not.toContain(PASSWORD);

    expect(await floe('source', 'add', 'app', '--url', sourceUrl(), '--password', reference)).toBe('source app added\n');
    expect(
      await floe(
        'source',
        'add',
        'other',
        '--url',
        sourceUrl(),
        '--password',
        'env:FLOE_SECRET_APP_PG_PASSWORD',
        '--option',
        'connect_timeout_ms=5000',
      ),
    ).toBe('source other added\n');
    const sources = await db.sql(`SELECT name, url, password, options FROM floe.source ORDER BY name`);
    expect(sources).toEqual([
      { name: 'app', url: sourceUrl(), password: reference, options: {} },
      { name: 'other', url: sourceUrl(), password: 'env:FLOE_SECRET_APP_PG_PASSWORD', options: { connect_timeout_ms: 5000 } },
    ]);
    const sourceList = await floe('source', 'list');
    expect(sourceList).toMatch(
      /^NAME +URL +PASSWORD +PIPELINES\napp +postgres:\/\/\S+ +enc:v2:\(encrypted\) +0\nother .* env:FLOE_SECRET_APP_PG_PASSWORD +0\n$/,
    );
    expect(await floe('source', 'test', 'app')).toMatch(
      /connected: PostgreSQL \d+ as postgres; wal_level logical; replication yes\nsource app ok\n/,
    );

    // destinations are checked, not opened
    const duck = join(dir.path, 'wh.duckdb');
    expect(await floe('destination', 'add', 'wh', '--type', 'duckdb', '--path', duck)).toBe('destination wh added\n');
    expect(existsSync(duck)).toBe(false);
    await floe(
      'destination',
      'add',
      'sf',
      '--type',
      'snowflake',
      '--url',
      'snowflake://floe@acme-xy123/analytics/public?warehouse=load',
      '--secret',
      'private_key=file:/etc/floe/sf.p8',
      '--secret',
      'private_key_passphrase=env:SF_PASSPHRASE',
    );
    expect(await db.sql(`SELECT name, type, url, secrets FROM floe.destination ORDER BY name`)).toEqual([
      {
        name: 'sf',
        type: 'snowflake',
        url: 'snowflake://floe@acme-xy123/analytics/public?warehouse=load',
        secrets: { private_key: 'file:/etc/floe/sf.p8', private_key_passphrase: 'env:SF_PASSPHRASE' },
      },
      { name: 'wh', type: 'duckdb', url: `duckdb:${duck}`, secrets: {} },
    ]);
    expect(await floe('destination', 'list')).toMatch(
      /sf +snowflake +snowflake:\S+ +private_key,private_key_passphrase +0\nwh +duckdb +duckdb:\S+ +- +0\n$/,
    );

    // pipelines
    expect(
      await floe(
        'pipeline',
        'add',
        'orders',
        '--source',
        'app',
        '--destination',
        'wh',
        '--publication',
        'app_pub',
        '--option',
        'batch_max_ms=250',
      ),
    ).toBe('pipeline orders added (slot floe_orders, paused)\n');
    await floe('pipeline', 'add', 'copy2', '--source', 'other', '--destination', 'wh', '--publication', 'app_pub', '--slot', 'custom_slot');
    const [orders] = await db.sql(`SELECT slot_name, options, status, state, config_version FROM floe.pipeline WHERE name = 'orders'`);
    expect(orders).toEqual({
      slot_name: 'floe_orders',
      options: { batch_max_ms: 250 },
      status: 'PAUSE',
      state: 'stopped',
      config_version: '1',
    });
    expect(await floe('pipeline', 'list')).toMatch(
      /copy2 +other +wh +app_pub +custom_slot +PAUSE +stopped\norders +app +wh +app_pub +floe_orders +PAUSE +stopped\n$/,
    );
    expect(await floe('source', 'test', 'app')).toContain('pipeline orders: publication app_pub ok\nsource app ok\n');

    // the rows resolve into a runnable configuration with this machine's secrets
    const rows = (await loadPipelineRows(ctl)).find((r) => r.pipeline.name === 'orders')!;
    const resolved = resolvePipelineConfig(rows, env);
    if (!resolved.ok) throw resolved.error;
    expect(decodeURIComponent(new URL(resolved.config.source.url).password)).toBe(PASSWORD);
    expect(resolved.config.runtime.batchMaxMs).toBe(250);

    // status changes bump config_version
    const version = async () => Number((await db.sql(`SELECT config_version FROM floe.pipeline WHERE name = 'orders'`))[0]!.config_version);
    const status = async () => (await db.sql(`SELECT status FROM floe.pipeline WHERE name = 'orders'`))[0]!.status;
    expect(await floe('pipeline', 'start', 'orders')).toBe('pipeline orders: status START\n');
    expect([await status(), await version()]).toEqual(['START', 2]);
    await floe('pipeline', 'pause', 'orders');
    expect([await status(), await version()]).toEqual(['PAUSE', 3]);
    await floe('pipeline', 'resume', 'orders');
    expect([await status(), await version()]).toEqual(['START', 4]);

    // set merges, resets and validates options
    expect(await floe('pipeline', 'set', 'orders', '--option', 'merge-interval-ms=100', '--reset', 'batch_max_ms')).toBe(
      'pipeline orders changed\n',
    );
    expect((await db.sql(`SELECT options FROM floe.pipeline WHERE name = 'orders'`))[0]!.options).toEqual({ merge_interval_ms: 100 });
    expect(await version()).toBe(5);

    // per-table controls
    await floe('pipeline', 'skip', 'orders', '--table', 'public.orders');
    await floe('pipeline', 'resync', 'orders', '--table', 'public.items');
    const tables = () =>
      db.sql(`SELECT table_name, skip, resync_requested_at IS NOT NULL AS resync FROM floe.pipeline_table ORDER BY table_name`);
    expect(await tables()).toEqual([
      { table_name: 'public.items', skip: false, resync: true },
      { table_name: 'public.orders', skip: true, resync: false },
    ]);
    await floe('pipeline', 'unskip', 'orders', '--table', 'public.orders');
    expect((await tables())[1]).toEqual({ table_name: 'public.orders', skip: false, resync: false });

    // what a worker reports shows in status (and pipeline show), without bumping config_version
    const id = (await db.sql(`SELECT id::text FROM floe.pipeline WHERE name = 'orders'`))[0]!.id as string;
    await db.sql(`INSERT INTO floe.worker (id, host, pid, max_pipelines) VALUES ('w1', 'host-a', 4242, 8)`);
    await reportPipelineState(ctl, id, {
      state: 'streaming',
      lagBytes: 2_500_000,
      durableLsn: '0/16B3748',
      ownerWorker: 'w1',
      lastError: 'source unreachable (check the host)',
    });
    await db.sql(`UPDATE floe.pipeline_table SET state = 'streaming' WHERE table_name = 'public.orders'`);
    expect(await version()).toBe(5);
    const json = JSON.parse(await floe('status', '--json'));
    expect(json.pipelines).toHaveLength(2);
    const entry = json.pipelines.find((p: { name: string }) => p.name === 'orders');
    expect(entry).toEqual({
      name: 'orders',
      source: 'app',
      destination: 'wh',
      publication: 'app_pub',
      slot: 'floe_orders',
      status: 'START',
      state: 'streaming',
      lag_bytes: 2_500_000,
      destination_breaker: null,
      slot_retained_bytes: null,
      slot_wal_status: null,
      lag_seconds: null,
      monitored_at: null,
      durable_lsn: '0/16B3748',
      last_error: 'source unreachable (check the host)',
      last_error_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      owner_worker: 'w1',
      config_version: 5,
      tables: { total: 2, by_state: { pending: 1, streaming: 1 }, skipped: 0, resync_requested: 1 },
    });
    expect(json.workers).toEqual([
      {
        id: 'w1',
        host: 'host-a',
        pid: 4242,
        started_at: expect.any(String),
        heartbeat_at: expect.any(String),
        heartbeat_age_seconds: expect.any(Number),
        max_pipelines: 8,
        pipelines: 1,
      },
    ]);
    const human = await floe('status');
    expect(human).toMatch(/^PIPELINE +STATUS +STATE +LAG +SLOT WAL +DURABLE LSN +OWNER +TABLES +LAST ERROR\n/);
    expect(human).toMatch(
      /orders +START +streaming +2\.5 MB +- +0\/16B3748 +w1 +1 pending, 1 streaming, 1 resync requested +\S+Z source unreachable/,
    );
    expect(human).toMatch(/WORKER +HOST +PID +STARTED +HEARTBEAT +PIPELINES\nw1 +host-a +4242 +\S+ +\d+s ago +1\/8\n/);
    const show = await floe('pipeline', 'show', 'orders');
    expect(show).toMatch(/state: +streaming\n/);
    expect(show).toMatch(/public\.orders +streaming +no /);

    // removal is refused while pipelines use a source or destination
    // (bad-input cases below check the refusal; here: deleting in the right order works)
    expect(await floe('pipeline', 'delete', 'orders', '--drop-slot')).toMatch(
      /delete requested; a worker stops it, drops slot floe_orders/,
    );
    expect(
      await db.sql(`SELECT status, drop_slot, delete_requested_at IS NOT NULL AS requested FROM floe.pipeline WHERE name = 'orders'`),
    ).toEqual([{ status: 'PAUSE', drop_slot: true, requested: true }]);
    expect(JSON.parse(await floe('status', '--json')).pipelines.find((p: { name: string }) => p.name === 'orders').status).toBe('DELETE');
    expect(await runInProcess(['pipeline', 'start', 'orders'], env)).toMatchObject({
      code: 2,
      stderr: 'floe: error: pipeline "orders" is being deleted\n',
    });
    // A worker would finish the deletion; without one, a plain delete removes the row at once.
    expect(await floe('pipeline', 'delete', 'orders')).toContain(`SELECT pg_drop_replication_slot('floe_orders');`);
    expect(await db.sql(`SELECT count(*)::int AS n FROM floe.pipeline_table`)).toEqual([{ n: 0 }]);
    expect(await floe('pipeline', 'delete', 'copy2')).toContain(`SELECT pg_drop_replication_slot('custom_slot');`);
    expect(await floe('source', 'remove', 'app')).toBe('source app removed\n');
    await floe('source', 'remove', 'other');
    await floe('destination', 'remove', 'wh');
    await floe('destination', 'remove', 'sf');
    for (const t of ['source', 'destination', 'pipeline', 'pipeline_table']) {
      expect(await db.sql(`SELECT count(*)::int AS n FROM floe.${t}`)).toEqual([{ n: 0 }]);
    }
    expect(await floe('status')).toMatch(/^no pipelines\n\nWORKER .*\nw1 +host-a +4242 .* 0\/8\n$/);
  });

  it('notifies configuration changes, not what workers report', async () => {
    await floe('source', 'add', 'n_src', '--url', sourceUrl());
    await floe('destination', 'add', 'n_dst', '--type', 'duckdb', '--path', join(dir.path, 'n.duckdb'));
    await floe('pipeline', 'add', 'n_pipe', '--source', 'n_src', '--destination', 'n_dst', '--publication', 'app_pub');
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    const notes: { table: string; op: string; id: string; name: string }[] = [];
    listener.on('notification', (n) => notes.push(JSON.parse(n.payload!)));
    await listener.query(`LISTEN ${CONFIG_CHANNEL}`);
    try {
      const [{ id }] = (await db.sql(`SELECT id::text FROM floe.pipeline WHERE name = 'n_pipe'`)) as [{ id: string }];
      // What a worker writes (pipeline state, table states) comes first, then a marker change: if the
      // worker's writes notified, their notifications would arrive before the marker's.
      await reportPipelineState(ctl, id, { state: 'streaming', lagBytes: 1, durableLsn: '0/10', ownerWorker: 'w9', lastError: 'x' });
      await db.sql(`INSERT INTO floe.pipeline_table (pipeline_id, table_name, state) VALUES ($1, 'public.orders', 'snapshotting')`, [id]);
      await db.sql(`UPDATE floe.pipeline_table SET state = 'streaming', rows_snapshotted = 5 WHERE pipeline_id = $1`, [id]);
      await floe('source', 'add', 'n_marker', '--url', sourceUrl());
      await waitFor('the marker notification', () => notes.length >= 1);
      expect(notes[0]).toMatchObject({ table: 'source', op: 'INSERT', name: 'n_marker' });

      await floe('pipeline', 'start', 'n_pipe');
      await waitFor('the start notification', () => notes.length >= 2);
      expect(notes[1]).toEqual({ table: 'pipeline', op: 'UPDATE', id, name: 'n_pipe' });

      // A changed source restarts its pipelines: their config_version moves and they are notified.
      const before = Number((await db.sql(`SELECT config_version FROM floe.pipeline WHERE id = $1`, [id]))[0]!.config_version);
      await db.sql(`UPDATE floe.source SET options = '{"connect_timeout_ms": 2000}' WHERE name = 'n_src'`);
      await waitFor('the source change notifications', () => notes.length >= 4);
      expect(Number((await db.sql(`SELECT config_version FROM floe.pipeline WHERE id = $1`, [id]))[0]!.config_version)).toBe(before + 1);
      expect(
        notes
          .slice(2)
          .map((n) => `${n.table}:${n.name}`)
          .sort(),
      ).toEqual(['pipeline:n_pipe', 'source:n_src']);

      await floe('pipeline', 'skip', 'n_pipe', '--table', 'public.orders');
      await waitFor('the skip notification', () => notes.length >= 5);
      expect(notes[4]).toEqual({ table: 'pipeline_table', op: 'UPDATE', id, name: 'public.orders' });

      // Name and slot are the pipeline's identity: changing them by SQL is refused.
      await expect(db.sql(`UPDATE floe.pipeline SET slot_name = 'other_slot' WHERE id = $1`, [id])).rejects.toThrow(/cannot change/);

      // Plain-text secrets are refused by the database itself, not only by the CLI.
      await expect(
        db.sql(`INSERT INTO floe.source (name, url, password) VALUES ('plain', 'postgres://u@h/db', 'hunter2')`),
      ).rejects.toThrow(/source_password_is_reference/);
      await expect(
        db.sql(
          `INSERT INTO floe.destination (name, type, url, secrets) VALUES ('plain', 'snowflake', 'snowflake://u@a/db', '{"password": "hunter2"}')`,
        ),
      ).rejects.toThrow(/destination_secrets_are_references/);

      // An invalid row written by hand is accepted by the database and explained by validation.
      await db.sql(`UPDATE floe.pipeline SET options = '{"batch_max_ms": "soon"}' WHERE id = $1`, [id]);
      const rows = (await loadPipelineRows(ctl)).find((r) => r.pipeline.id === id)!;
      const r = resolvePipelineConfig(rows, {});
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.oneLine()).toBe('pipeline n_pipe: pipeline option batch_max_ms must be an integer from 1 to 3600000');

      await db.sql(`DELETE FROM floe.pipeline WHERE id = $1`, [id]);
      await waitFor('the delete notification', () => notes.some((n) => n.op === 'DELETE' && n.table === 'pipeline'));
    } finally {
      await listener.end();
    }
  });

  describe('bad input', () => {
    let unmigrated: TestDatabase;
    beforeAll(async () => {
      unmigrated = await createTestDatabase(cluster, 'nofloe');
      await floe('source', 'add', 'src', '--url', sourceUrl(), '--password', 'env:FLOE_SECRET_NOT_SET_ANYWHERE');
      await floe('destination', 'add', 'dst', '--type', 'duckdb', '--path', join(dir.path, 'x.duckdb'));
      await floe('pipeline', 'add', 'pipe', '--source', 'src', '--destination', 'dst', '--publication', 'app_pub');
    });
    afterAll(async () => {
      await unmigrated.drop();
    });

    const contents = () =>
      db.sql(`SELECT (SELECT json_agg(s ORDER BY id) FROM floe.source s) AS s, (SELECT json_agg(d ORDER BY id) FROM floe.destination d) AS d,
                     (SELECT json_agg(p ORDER BY id) FROM floe.pipeline p) AS p, (SELECT json_agg(t ORDER BY table_name) FROM floe.pipeline_table t) AS t`);

    const cases: [string[], RegExp][] = [
      [['migrate', '--database-url', 'mysql://db/x'], /control-plane database URL must start with postgres:\/\//],
      [['source', 'list', '--database-url', ''], /no control-plane database given \(set FLOE_DATABASE_URL or pass --database-url\)/],
      [['source', 'add', 'App!', '--url', 'postgres://u@h/db'], /invalid source name "App!"/],
      [
        ['source', 'add', 'x', '--url', 'postgres://u:hunter2@h/db'],
        /the source URL contains a password \(remove it from the URL and pass --password env:NAME/,
      ],
      [['source', 'add', 'x', '--url', 'postgres://u@h/db', '--password', 'hunter2'], /--password is not a secret reference/],
      [['source', 'add', 'x', '--url', 'mysql://u@h/db'], /must start with postgres:\/\/ or postgresql:\/\//],
      [['source', 'add', 'x', '--url', 'postgres://u@h/db', '--option', 'timeout=5'], /unknown source option "timeout"/],
      [['source', 'add', 'x', '--url', 'postgres://u@h/db', '--password', 'enc:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'], /cannot decrypt/],
      [['source', 'add', 'src', '--url', 'postgres://u@h/db'], /source "src" already exists/],
      [['source', 'add', 'x'], /required option '--url <url>' not specified/],
      [['source', 'remove', 'nope'], /no source named "nope"/],
      [['source', 'remove', 'src'], /source "src" is used by pipeline pipe \(delete those pipelines first\)/],
      [['source', 'test', 'nope'], /no source named "nope"/],
      [['source', 'test', 'src'], /source src: password: environment variable FLOE_SECRET_NOT_SET_ANYWHERE is not set/],
      [['destination', 'add', 'x', '--type', 'bigquery', '--path', '/tmp/x'], /argument 'bigquery' is invalid/],
      [['destination', 'add', 'x', '--type', 'duckdb'], /a duckdb destination needs --path <file>/],
      [
        ['destination', 'add', 'x', '--type', 'duckdb', '--url', 'duckdb:/x.duckdb?colour=red'],
        /unknown DuckDB destination parameter "colour"/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'duckdb', '--path', '/tmp/x', '--secret', 'password=env:X'],
        /the duckdb destination takes no secret "password"/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db/s?base_url=https://elsewhere.example'],
        /base_url is not allowed in a control-plane destination URL \(the workers' operator sets FLOE_SNOWFLAKE_BASE_URL/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db/s', '--secret', 'password=env:FLOE_SECRET_X'],
        /the snowflake destination does not use the password secret \(the Snowflake destination authenticates with a key pair only/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u:hunter2@acct/db'],
        /the Snowflake destination URL contains a secret/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db'],
        /the Snowflake destination URL must name user, account, database and schema/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db/sc?channels_per_table=99'],
        /invalid Snowflake destination URL: channels_per_table/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db/sc', '--secret', 'private_key=hunter2'],
        /destination secret private_key is not a secret reference/,
      ],
      [
        ['destination', 'add', 'x', '--type', 'snowflake', '--url', 'snowflake://u@acct/db/sc', '--secret', 'hunter2'],
        /a --secret value is not key=value/,
      ],
      [['destination', 'add', 'x', '--type', 'snowflake', '--path', '/tmp/x'], /--path is for duckdb destinations/],
      [['destination', 'add', 'dst', '--type', 'duckdb', '--path', '/tmp/y'], /destination "dst" already exists/],
      [['destination', 'remove', 'nope'], /no destination named "nope"/],
      [['destination', 'remove', 'dst'], /destination "dst" is used by pipeline pipe/],
      [['pipeline', 'add', 'p2', '--source', 'nope', '--destination', 'dst', '--publication', 'app_pub'], /no source named "nope"/],
      [['pipeline', 'add', 'p2', '--source', 'src', '--destination', 'nope', '--publication', 'app_pub'], /no destination named "nope"/],
      [
        ['pipeline', 'add', 'pipe', '--source', 'src', '--destination', 'dst', '--publication', 'app_pub'],
        /pipeline "pipe" already exists/,
      ],
      [
        ['pipeline', 'add', 'p2', '--source', 'src', '--destination', 'dst', '--publication', 'app_pub', '--slot', 'floe_pipe'],
        /slot "floe_pipe" is already used by pipeline pipe/,
      ],
      [
        ['pipeline', 'add', 'p2', '--source', 'src', '--destination', 'dst', '--publication', 'app_pub', '--slot', 'Bad-Slot'],
        /invalid slot name "Bad-Slot"/,
      ],
      [
        [
          'pipeline',
          'add',
          'p2',
          '--source',
          'src',
          '--destination',
          'dst',
          '--publication',
          'app_pub',
          '--option',
          'batch_max_bytes=lots',
        ],
        /pipeline option batch_max_bytes must be an integer/,
      ],
      [
        ['pipeline', 'add', 'p2', '--source', 'src', '--destination', 'dst', '--publication', 'app_pub', '--option', 'delete_mode'],
        /a --option value is not key=value/,
      ],
      [['pipeline', 'add', 'p2', '--source', 'src', '--destination', 'dst'], /required option '--publication <name>' not specified/],
      [['pipeline', 'show', 'nope'], /no pipeline named "nope"/],
      [['pipeline', 'start', 'nope'], /no pipeline named "nope"/],
      [['pipeline', 'pause', 'nope'], /no pipeline named "nope"/],
      [['pipeline', 'resume', 'nope'], /no pipeline named "nope"/],
      [['pipeline', 'delete', 'nope'], /no pipeline named "nope"/],
      [['pipeline', 'resync', 'pipe', '--table', 'orders'], /invalid table name "orders" \(name the table with its schema/],
      [['pipeline', 'resync', 'nope', '--table', 'public.orders'], /no pipeline named "nope"/],
      [['pipeline', 'skip', 'pipe', '--table', 'public.'], /invalid table name "public\."/],
      [['pipeline', 'unskip', 'pipe'], /required option '--table <schema.table>' not specified/],
      [['pipeline', 'set', 'pipe'], /nothing to change/],
      [['pipeline', 'set', 'pipe', '--option', 'snapshot_parallelism=0'], /snapshot_parallelism must be an integer from 1 to 64/],
      [['pipeline', 'set', 'pipe', '--reset', 'colour'], /unknown pipeline option "colour"/],
      [['pipeline', 'set', 'nope', '--option', 'batch_max_ms=5'], /no pipeline named "nope"/],
      [['pipeline', 'frobnicate', 'pipe'], /unknown command 'frobnicate'/],
      [['status', '--database-url', 'postgres://postgres@127.0.0.1:1/none'], /cannot connect to the control-plane database/],
    ];

    it('each command refuses bad input with one clear line, a non-zero exit, and writes nothing', async () => {
      const before = await contents();
      const results: ({ args: string[]; expected: RegExp } & CliResult)[] = [];
      for (const [args, expected] of cases) results.push({ args, expected, ...(await runInProcess(args, env)) });
      for (const r of results) {
        const label = `floe ${r.args.join(' ')}`;
        expect(r.code, label).not.toBe(0);
        expect(r.code, label).not.toBe(null);
        const lines = r.stderr.trimEnd().split('\n');
        expect(lines, label).toHaveLength(1);
        expect(lines[0], label).toMatch(/^floe: /);
        expect(lines[0], label).toMatch(r.expected);
        expect(r.stderr, label).not.toContain('hunter2');
      }
      expect(await contents()).toEqual(before);
    });

    it('bin/floe.js reports errors the same way: one line, exit 2 for configuration, 1 otherwise', async () => {
      const before = await contents();
      const [plain, usage, unreachable, status] = await Promise.all([
        runFloe(['source', 'add', 'x', '--url', 'postgres://u@h/db', '--password', 'hunter2'], env),
        runFloe(['pipeline', 'frobnicate', 'pipe'], env),
        runFloe(['status', '--database-url', 'postgres://postgres@127.0.0.1:1/none'], env),
        runFloe(['status', '--json'], env),
      ]);
      expect(plain).toMatchObject({
        code: 2,
        stderr:
          'floe: error: --password is not a secret reference (plain-text secrets are not stored) (use env:NAME, file:/absolute/path or enc:v2:... (from `floe secret encrypt`))\n',
      });
      expect(usage).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^floe: error: unknown command 'frobnicate' \(see --help\)\n$/),
      });
      expect(unreachable).toMatchObject({
        code: 1,
        stderr: expect.stringMatching(/^floe: error: cannot connect to the control-plane database [^\n]*\n$/),
      });
      expect(status.code, status.stderr).toBe(0);
      // The same report as in-process, except the heartbeat age, which moves with the clock.
      const withoutAge = (text: string) =>
        JSON.stringify(JSON.parse(text), (key, value: unknown) => (key === 'heartbeat_age_seconds' ? undefined : value));
      expect(withoutAge(status.stdout)).toBe(withoutAge((await runInProcess(['status', '--json'], env)).stdout));
      expect(await contents()).toEqual(before);
    });

    it('refuses a database that floe migrate has not prepared', async () => {
      const r = await runInProcess(['pipeline', 'list', '--database-url', unmigrated.url], env);
      expect(r).toMatchObject({ code: 2, stderr: 'floe: error: the control-plane schema is missing (run floe migrate)\n' });
      expect(await unmigrated.sql(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'floe'`)).toEqual([{ n: 0 }]);
    });

    it('secret encrypt needs a key and a secret', async () => {
      expect(await encrypt('x', { FLOE_SECRET_KEY: '' })).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^floe: error: FLOE_SECRET_KEY is not set/),
      });
      expect(await encrypt('', env)).toMatchObject({ code: 2, stderr: expect.stringMatching(/^floe: error: no secret on stdin/) });
      // The binding is part of the secret: without saying which row it is for, nothing is encrypted.
      expect(await encrypt('x', env, [])).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^floe: error: required option '--url <url>' not specified/),
      });
      expect(await encrypt('x', env, ['--url', 'postgres://u@h/db'])).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^floe: error: say which row the secret is for: --source NAME or --destination NAME --secret NAME/),
      });
      expect(await encrypt('x', env, ['--destination', 'sf', '--secret', 'password', '--url', 'snowflake://u@acct/db/s'])).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^floe: error: --destination needs --secret with the name of the secret/),
      });
    });
  });
});
