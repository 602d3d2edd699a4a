/**
 * Resyncs requested through the control plane while single-row updates keep arriving: `floe run`
 * re-snapshots the table each time and no update is lost (the source and the DuckDB target end equal).
 *
 * The end check waits for the slot to confirm the WAL *insert* position. The test clusters commit
 * asynchronously, and the walsender sends only flushed WAL: with pg_current_wal_lsn() (the write
 * position) the wait could end before the last commits were sent, and the stop that follows would leave
 * them for the next start. An earlier version of the console test did that and looked like lost updates.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { startFloe, type FloeProcess } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { waitForSlotPastWrites } from './helpers/slot.js';
import { migrate } from '../src/control/schema.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';

const ROWS = 300;
const ROUNDS = Number(process.env.FLOE_RESYNC_ROUNDS ?? 3);

describe.each(testClusters())('resync under writes through floe run on PostgreSQL $major', (cluster) => {
  let control: TestDatabase;
  let source: TestDatabase;
  let db: pg.Pool;
  let worker: FloeProcess | undefined;
  const dir = tempDir();
  const warehouse = join(dir.path, 'w.duckdb');

  beforeAll(async () => {
    control = await createTestDatabase(cluster, 'ctl');
    source = await createTestDatabase(cluster, 'src');
    db = new pg.Pool({ connectionString: control.url, max: 2 });
    const c = await db.connect();
    await migrate(c);
    c.release();
    await source.sql(`CREATE TABLE orders (id serial PRIMARY KEY, amount int NOT NULL, note text);
      INSERT INTO orders (amount, note) SELECT g, 'order ' || g FROM generate_series(1, ${ROWS}) g;
      CREATE TABLE customers (id int PRIMARY KEY, name text);
      INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g;
      CREATE PUBLICATION pub FOR TABLE orders, customers;`);
    await db.query(
      `WITH s AS (INSERT INTO floe.source (name, url) VALUES ('src', $1) RETURNING id),
            d AS (INSERT INTO floe.destination (name, type, url) VALUES ('wh', 'duckdb', $2) RETURNING id)
       INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options, status)
       SELECT 'p', s.id, d.id, 'pub', 'floe_p', '{"batch_max_ms": 100, "merge_interval_ms": 300, "status_interval_ms": 500}', 'START' FROM s, d`,
      [source.url, `duckdb:${warehouse}`],
    );
    worker = startFloe(['run', '--worker-id', 'w1', '--poll-interval-ms', '500', '--metrics-port', '0'], {
      FLOE_DATABASE_URL: control.url,
      FLOE_LOG_LEVEL: process.env.FLOE_TEST_LOG ?? 'warn',
    });
  });

  afterAll(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await db?.end();
    await source?.dropSlot('floe_p').catch(() => undefined);
    await source?.drop();
    await control?.drop();
    dir.remove();
  });

  const tableState = async () =>
    (
      await db.query<{ state: string; resync: boolean }>(
        `SELECT t.state, t.resync_requested_at IS NOT NULL AS resync FROM floe.pipeline_table t
          JOIN floe.pipeline p ON p.id = t.pipeline_id WHERE p.name = 'p' AND t.table_name = 'public.orders'`,
      )
    ).rows[0];

  it('loses no update', async () => {
    await waitFor('the table to stream', async () => (await tableState())?.state === 'streaming', 90_000);
    const stop = new AbortController();
    const writing = (async () => {
      let i = 0;
      while (!stop.signal.aborted) {
        await source.sql(`UPDATE orders SET amount = amount + 1 WHERE id = $1`, [(i++ % ROWS) + 1]);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      for (let round = 0; round < ROUNDS; round++) {
        await new Promise((r) => setTimeout(r, 1500));
        await db.query(
          `INSERT INTO floe.pipeline_table (pipeline_id, table_name, resync_requested_at)
           SELECT id, 'public.orders', now() FROM floe.pipeline WHERE name = 'p'
           ON CONFLICT (pipeline_id, table_name) DO UPDATE SET resync_requested_at = now(), updated_at = now()`,
        );
        await waitFor('the resync to be taken', async () => (await tableState())?.resync === false, 60_000);
        await waitFor('the resync to finish', async () => (await tableState())?.state === 'streaming', 90_000);
      }
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      stop.abort();
      await writing;
    }
    // Past every commit (see the header).
    await waitForSlotPastWrites(source, 'floe_p');
    worker!.kill('SIGTERM');
    const exit = await worker!.exited;
    if (process.env.FLOE_RESYNC_LOG) (await import('node:fs')).writeFileSync(process.env.FLOE_RESYNC_LOG, exit.stderr);
    expect(exit.code).toBe(0);
    worker = undefined;
    const destination = new DuckDbDestination({ path: warehouse });
    await destination.open('verify', 'verify');
    try {
      const report = await verifyDuckDb({ url: source.url }, 'pub', destination);
      if (report.mismatches > 0) {
        const src = await source.sql<{ id: number; amount: number }>(`SELECT id, amount FROM orders ORDER BY id`);
        const dst = await destination.query(`SELECT id, amount FROM public.orders ORDER BY id`);
        const want = new Map(src.map((r) => [r.id, r.amount]));
        const bad = dst.filter((r) => want.get(Number(r[0])) !== Number(r[1])).slice(0, 5);
        const after = await destination.query(
          `SELECT id, _floe_lsn, _floe_seq FROM _floe_journal."public.orders" WHERE _floe_op = 'u' AND _floe_lsn > (SELECT max(_floe_lsn) FROM _floe_journal."public.orders" WHERE _floe_op = 'r') ORDER BY _floe_seq`,
        );
        console.log(
          'after last snapshot',
          JSON.stringify(after, (_, v) => (typeof v === 'bigint' ? v.toString() : v)),
        );
        for (const r of bad) {
          const j = await destination.query(
            `SELECT _floe_op, _floe_lsn, _floe_ordinal, _floe_seq, amount FROM _floe_journal."public.orders" WHERE id = '${Number(r[0])}' ORDER BY _floe_seq`,
          );
          console.log(
            'stale',
            r,
            'source',
            want.get(Number(r[0])),
            JSON.stringify(j, (_, v) => (typeof v === 'bigint' ? v.toString() : v)),
          );
        }
      }
      expect(report.mismatches, JSON.stringify(report.tables)).toBe(0);
    } finally {
      await destination.close();
    }
  });
});
