/**
 * Binary mode meets a column it cannot decode (money here; binary-values.ts lists the others): the
 * stream runs in text mode, with one log line naming the table, column and type. At start the stream
 * simply starts in text; while streaming (a column added inside a transaction the server streams
 * while it runs, or a table added to the publication) the pipeline reconnects in text mode from the
 * acknowledged position, and nothing is lost or journaled twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, testClusters, type TestDatabase } from './harness/database.js';
import { memoryLog, startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitForSlotPastWrites, walsenderCommand } from './helpers/slot.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';

type Row = (string | null)[];

describe.each(testClusters('every'))('binary mode falls back to text on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  const running: RunningPipeline[] = [];

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'binfall');
    // The walsender reads the database's settings: larger transactions arrive in stream blocks.
    await db.sql(`ALTER DATABASE "${db.name}" SET logical_decoding_work_mem = '64kB'`);
  });

  afterAll(async () => {
    for (const p of running) await p.stop();
    for (const slot of ['fall_start', 'fall_column', 'fall_table']) await db?.dropSlot(slot).catch(() => undefined);
    await db?.drop();
  });

  function start(slotName: string, publication: string, destination: DuckDbDestination) {
    /**
     * Batches handed to the destination since `midTransaction` was last set to 0 (before the test's one
     * transaction, so each ends inside it: the rest follows in later batches), and how many when binary
     * mode gave up. Counted as handed, not as committed: DuckDB commits in the background.
     */
    const writes = { midTransaction: 0, atRefusal: 0 };
    const log = memoryLog(5000, (line) => {
      if (line.includes('binary mode')) writes.atRefusal = writes.midTransaction;
    });
    const write = destination.writeChanges.bind(destination);
    destination.writeChanges = (changes) => {
      writes.midTransaction++;
      return write(changes);
    };
    // Small batches: changes before the refused Relation message are written before the reconnect.
    const p = startPipeline({
      source: { url: db.url },
      publication,
      slotName,
      destination,
      binary: 'on',
      batchMaxBytes: 4096,
      log: log.log,
    });
    running.push(p);
    return { p, log, writes };
  }

  const rows = async (dest: DuckDbDestination, sql: string): Promise<Row[]> =>
    (await dest.query(sql)).map((r) => r.map((v) => (v === null ? null : String(v))));
  const sourceRows = async (sql: string): Promise<Row[]> =>
    (await db.sql(sql)).map((r) => Object.values(r).map((v) => (v === null ? null : String(v))));
  const lines = (tail: string, re: RegExp): string[] => tail.split('\n').filter((l) => re.test(l));

  /** Every insert of `table` journaled once: as many 'i' rows as inserted, no position twice. */
  async function journaledOnce(dest: DuckDbDestination, table: string, inserted: number): Promise<void> {
    const [[n, distinct]] = (await rows(
      dest,
      `SELECT count(*), count(DISTINCT (_floe_lsn, _floe_ordinal)) FROM _floe_journal."public.${table}" WHERE _floe_op = 'i'`,
    )) as [Row];
    expect([n, distinct]).toEqual([String(inserted), String(inserted)]);
  }

  it('a published column of a type binary mode cannot decode keeps the stream in text mode from the start', async () => {
    await db.sql(`CREATE TABLE s_plain (id int PRIMARY KEY, v text);
      CREATE TABLE s_priced (id int PRIMARY KEY, price money);
      INSERT INTO s_priced VALUES (1, 10.5);
      CREATE PUBLICATION fall_start FOR TABLE s_plain, s_priced`);
    const dest = new DuckDbDestination({ path: ':memory:' });
    const { p, log } = start('fall_start', 'fall_start', dest);
    await waitForSlotPastWrites(db, 'fall_start');
    await db.sql(`INSERT INTO s_plain VALUES (1, 'a'); INSERT INTO s_priced VALUES (2, 1000.5)`);
    await waitForSlotPastWrites(db, 'fall_start');
    expect(await walsenderCommand(db, 'fall_start')).toMatch(/^START_REPLICATION .*proto_version/);
    expect(await walsenderCommand(db, 'fall_start')).not.toMatch(/binary/);
    await p.stop();
    expect(await rows(dest, `SELECT id, price FROM public.s_priced ORDER BY id`)).toEqual(
      await sourceRows(`SELECT id, price::text FROM s_priced ORDER BY id`),
    );
    const tail = log.tail();
    expect(lines(tail, /binary mode/)).toHaveLength(1);
    expect(lines(tail, /binary mode: column price of public.s_priced has type money.*; streaming in text mode/)).toHaveLength(1);
    expect(lines(tail, /reconnecting|pipeline error|pipeline failed/)).toEqual([]);
    await dest.close();
  });

  it('a column of such a type added inside a streamed transaction: reconnects in text mode, nothing lost, nothing twice', async () => {
    await db.sql(`CREATE TABLE c_items (id int PRIMARY KEY, v text, amount numeric, at timestamptz);
      CREATE PUBLICATION fall_column FOR TABLE c_items`);
    const dest = new DuckDbDestination({ path: ':memory:' });
    const { p, log, writes } = start('fall_column', 'fall_column', dest);
    await waitForSlotPastWrites(db, 'fall_column');
    // Decoded from binary.
    await db.sql(`INSERT INTO c_items SELECT g, 'before ' || g, g / 7.0, '2024-01-01'::timestamptz + g * interval '1 minute'
      FROM generate_series(1, 300) g`);
    await waitForSlotPastWrites(db, 'fall_column');
    expect(await walsenderCommand(db, 'fall_column')).toMatch(/binary 'true'/);
    writes.midTransaction = 0;
    // One transaction: binary changes, then the Relation message with the new column (larger than 64 kB:
    // the server streams it, floe decodes it from its spool at the commit), then changes in it.
    await db.sql(`BEGIN;
      INSERT INTO c_items SELECT g, repeat('x', 200) || g, g / 3.0, now() FROM generate_series(1001, 2000) g;
      ALTER TABLE c_items ADD COLUMN price money;
      INSERT INTO c_items SELECT g, 'priced ' || g, g, now(), g * 1.25 FROM generate_series(2001, 2500) g;
      UPDATE c_items SET price = 1000.5 WHERE id <= 10;
      COMMIT`);
    await db.sql(`INSERT INTO c_items VALUES (3000, 'after', 1, now(), 12.34)`);
    await waitForSlotPastWrites(db, 'fall_column');
    await waitFor('the stream in text mode', async () => !/binary/.test((await walsenderCommand(db, 'fall_column')) ?? 'binary'));
    // Part of the transaction was written before the reconnect (it is sent again whole: the journal
    // must skip what it holds), and the server streamed it.
    expect(writes.atRefusal).toBeGreaterThan(0);
    await waitFor('the slot statistics to count the streamed transaction', async () => {
      const [s] = await db.sql<{ n: string }>(
        `SELECT stream_txns::text AS n FROM pg_stat_replication_slots WHERE slot_name = 'fall_column'`,
      );
      return Number(s?.n) > 0;
    });
    await p.stop();
    await journaledOnce(dest, 'c_items', 300 + 1000 + 500 + 1);
    expect(await rows(dest, `SELECT id, v, amount::VARCHAR, price FROM public.c_items ORDER BY id`)).toEqual(
      await sourceRows(`SELECT id, v, amount::text, price::text FROM c_items ORDER BY id`),
    );
    const tail = log.tail();
    expect(lines(tail, /binary mode/)).toHaveLength(1);
    expect(lines(tail, /binary mode: column price of public.c_items has type money.*reconnecting in text mode/)).toHaveLength(1);
    expect(lines(tail, /pipeline error|pipeline failed/)).toEqual([]);
    await dest.close();
  });

  it('a table with such a column added to the publication: reconnects in text mode, nothing lost, nothing twice', async () => {
    await db.sql(`CREATE TABLE t_orders (id int PRIMARY KEY, v text);
      CREATE TABLE t_prices (id int PRIMARY KEY, price money);
      INSERT INTO t_prices SELECT g, g * 2.5 FROM generate_series(1, 50) g;
      CREATE PUBLICATION fall_table FOR TABLE t_orders`);
    const dest = new DuckDbDestination({ path: ':memory:' });
    const { p, log, writes } = start('fall_table', 'fall_table', dest);
    await waitForSlotPastWrites(db, 'fall_table');
    await db.sql(`INSERT INTO t_orders SELECT g, 'binary ' || g FROM generate_series(1, 200) g`);
    await waitForSlotPastWrites(db, 'fall_table');
    expect(await walsenderCommand(db, 'fall_table')).toMatch(/binary 'true'/);
    writes.midTransaction = 0;
    await db.sql(`ALTER PUBLICATION fall_table ADD TABLE t_prices`);
    // One transaction: a binary change of the streaming table, then the new table's Relation message.
    await db.sql(`BEGIN;
      INSERT INTO t_orders SELECT g, 'mixed ' || g FROM generate_series(201, 400) g;
      INSERT INTO t_prices SELECT g, g * 2.5 FROM generate_series(51, 100) g;
      INSERT INTO t_orders VALUES (401, 'last');
      COMMIT`);
    await waitForSlotPastWrites(db, 'fall_table');
    await waitFor('the stream in text mode', async () => !/binary/.test((await walsenderCommand(db, 'fall_table')) ?? 'binary'));
    expect(writes.atRefusal).toBeGreaterThan(0);
    const want = await sourceRows(`SELECT id, price::text FROM t_prices ORDER BY id`);
    await waitFor('the added table snapshotted', async () => {
      await dest.merge();
      return JSON.stringify(await rows(dest, `SELECT id, price FROM public.t_prices ORDER BY id`)) === JSON.stringify(want);
    });
    await p.stop();
    await journaledOnce(dest, 't_orders', 401);
    expect(await rows(dest, `SELECT id, v FROM public.t_orders ORDER BY id`)).toEqual(
      await sourceRows(`SELECT id, v FROM t_orders ORDER BY id`),
    );
    // The stream's inserts of the added table (the snapshot holds them too, as 'r' rows: latest position wins).
    const [[n, distinct]] = (await rows(
      dest,
      `SELECT count(*), count(DISTINCT (_floe_lsn, _floe_ordinal)) FROM _floe_journal."public.t_prices" WHERE _floe_op = 'i'`,
    )) as [Row];
    expect(n).toBe(distinct);
    const tail = log.tail();
    expect(lines(tail, /binary mode/)).toHaveLength(1);
    expect(lines(tail, /binary mode: column price of public.t_prices has type money.*reconnecting in text mode/)).toHaveLength(1);
    expect(lines(tail, /pipeline error|pipeline failed/)).toEqual([]);
    await dest.close();
  });
});
