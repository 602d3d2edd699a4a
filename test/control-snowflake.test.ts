/**
 * The control plane drives a Snowflake destination end to end: rows defined with the CLI (the key
 * given as a `file:` secret reference, never in the table), a `floe run` worker, the emulator as
 * Snowflake. The target follows the source, and the key's path or content never reaches the tables.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createTestDatabase, testClusters, type TestDatabase } from './harness/database.js';
import { runFloe, startFloe, type FloeProcess } from './helpers/cli.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { waitFor } from './helpers/wait.js';

const cluster = testClusters().at(-1)!;

describe(`control plane with a Snowflake destination (PostgreSQL ${cluster.major})`, () => {
  let control: TestDatabase;
  let source: TestDatabase;
  let sf: SnowflakeFixture;
  let worker: FloeProcess | undefined;
  let env: Record<string, string>;

  beforeAll(async () => {
    sf = await snowflakeFixture();
    control = await createTestDatabase(cluster, 'ctlsf');
    source = await createTestDatabase(cluster, 'srcsf');
    await source.sql(`CREATE TABLE items (id int PRIMARY KEY, v text);
      INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 300) g;
      CREATE PUBLICATION pub FOR TABLE items;`);
    env = { FLOE_DATABASE_URL: control.url, FLOE_LOG_LEVEL: process.env.FLOE_TEST_LOG ?? 'info' };
  });

  afterAll(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await source?.dropSlot('floe_wh_items').catch(() => undefined);
    await source?.drop();
    await control?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('replicates through floe run into Snowflake, with the key as a secret reference', async () => {
    const keyFile = join(sf.dir.path, 'rsa_key.p8');
    // The endpoint is the worker operator's to set (FLOE_SNOWFLAKE_BASE_URL), as is the secrets directory.
    const url = `snowflake://floe@${sf.emulator.account}/ANALYTICS/PUBLIC?warehouse=COMPUTE_WH&merge_interval=0s&breaker_half_open=2s`;
    env = { ...env, FLOE_SNOWFLAKE_BASE_URL: sf.emulator.url, FLOE_SECRETS_DIR: sf.dir.path };
    for (const args of [
      ['migrate'],
      ['source', 'add', 'app', '--url', source.url],
      ['destination', 'add', 'wh', '--type', 'snowflake', '--url', url, '--secret', `private_key=file:${keyFile}`],
      ['pipeline', 'add', 'wh_items', '--source', 'app', '--destination', 'wh', '--publication', 'pub', '--slot', 'floe_wh_items'],
      ['pipeline', 'set', 'wh_items', '--option', 'merge_interval_ms=200', '--option', 'batch_max_ms=100'],
      ['pipeline', 'start', 'wh_items'],
    ]) {
      const r = await runFloe(args, env);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    worker = startFloe(['run', '--worker-id', 'w1', '--poll-interval-ms', '500', '--monitor-interval', '1', '--metrics-port', '0'], env);
    const target = `"ANALYTICS"."PUBLIC"."PUBLIC_ITEMS"`;
    const count = async () => Number((await sf.rows(`SELECT COUNT(*) FROM ${target}`).catch(() => [['-1']]))[0]![0]);
    await waitFor('snapshot in Snowflake', async () => (await count()) === 300, 90_000);
    await source.sql(`UPDATE items SET v = 'changed' WHERE id <= 10; DELETE FROM items WHERE id > 290`);
    await waitFor('changes in Snowflake', async () => (await count()) === 290, 60_000);
    await waitFor(
      'updates merged',
      async () => Number((await sf.rows(`SELECT COUNT(*) FROM ${target} WHERE "V" = 'changed'`))[0]![0]) === 10,
      60_000,
    );
    type Entry = {
      name: string;
      state: string;
      owner_worker: string;
      destination_breaker: string | null;
      slot_retained_bytes: number | null;
      slot_wal_status: string | null;
    };
    const status = async (): Promise<Entry> => {
      const r = await runFloe(['status', '--json'], env);
      return (JSON.parse(r.stdout) as { pipelines: Entry[] }).pipelines[0]!;
    };
    expect(await status()).toMatchObject({ name: 'wh_items', state: 'streaming', owner_worker: 'w1' });
    // The worker's WAL monitor reports the slot's figures into the row (what the floe_slot_* metrics show).
    await waitFor('slot health in floe status', async () => (await status()).slot_wal_status === 'reserved', 30_000);
    const [server] = await source.sql<{ retained: string }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::text AS retained FROM pg_replication_slots WHERE slot_name = 'floe_wh_items'`,
    );
    const reported = (await status()).slot_retained_bytes!;
    expect(reported).toBeGreaterThanOrEqual(0);
    // Measured a moment apart: the same order of magnitude as the server's own figure.
    expect(reported).toBeLessThanOrEqual(Number(server!.retained) + 64 * 1024 * 1024);

    // Snowflake goes away: the breaker opens and floe status says so; nothing is lost once it returns.
    sf.emulator.faults.set({ outage: { mode: 'http503' } });
    await source.sql(`INSERT INTO items SELECT g, 'late' FROM generate_series(1001, 1050) g`);
    await waitFor('breaker open in floe status', async () => (await status()).destination_breaker === 'open', 60_000);
    sf.emulator.faults.clear();
    await waitFor('rows written during the outage arrive', async () => (await count()) === 340, 60_000);
    await waitFor('breaker closed in floe status', async () => (await status()).destination_breaker === 'closed', 30_000);
    // The tables hold the reference, never the key.
    const [dest] = await control.sql<{ secrets: unknown; url: string }>(`SELECT secrets, url FROM floe.destination`);
    expect(dest!.secrets).toEqual({ private_key: `file:${keyFile}` });
    expect(JSON.stringify(await control.sql(`SELECT * FROM floe.pipeline`))).not.toContain('PRIVATE KEY');
    worker.kill('SIGTERM');
    const exit = await worker.exited;
    expect(exit.code, exit.stderr.slice(-2000)).toBe(0);
    expect(exit.stderr).not.toContain('PRIVATE KEY');
    worker = undefined;
  });
});
