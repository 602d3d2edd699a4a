import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { EncodingSink } from '../src/destination/encoding/encoding-sink.js';
import { parseLsn } from '../src/postgres/lsn.js';

describe.each(testClusters())('snapshot + stream on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
  });
  afterAll(async () => {
    await db.drop();
  });

  it('copies existing rows, then streams inserts, updates, deletes, truncates and PK changes', async () => {
    await db.sql(`CREATE TABLE items (id int PRIMARY KEY, name text, qty int, big text);
      ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
      CREATE TABLE other (k text PRIMARY KEY, v int);
      INSERT INTO items SELECT g, 'item ' || g, g * 10, NULL FROM generate_series(1, 500) g;
      INSERT INTO other VALUES ('a', 1), ('b', 2);
      CREATE PUBLICATION pub1 FOR TABLE items, other;`);
    const p = startPipeline({
      source: { url: db.url },
      publication: 'pub1',
      slotName: 'slot1',
      snapshotRangePages: 1,
      snapshotParallelism: 3,
    });
    const dest = p.destination as DuckDbDestination;
    await waitFor('snapshot in target', async () => Number((await dest.query(`SELECT count(*) FROM public.items`))[0]![0]) === 500);

    const big = 'x'.repeat(50_000) + Math.random();
    await db.sql(`UPDATE items SET name = 'renamed', big = $1 WHERE id = 1`, [big]);
    await db.sql(`UPDATE items SET qty = 7 WHERE id = 1`); // big is unchanged TOAST here
    await db.sql(`DELETE FROM items WHERE id BETWEEN 2 AND 11`);
    await db.sql(`INSERT INTO items VALUES (1000, 'new', 1, NULL)`);
    await db.sql(`UPDATE items SET id = 2000 WHERE id = 1000`); // primary key change
    await db.sql(`TRUNCATE other`);
    await db.sql(`INSERT INTO other VALUES ('c', 3)`);
    await db.sql(`BEGIN; INSERT INTO items VALUES (3000, 'txn', 1, NULL); UPDATE items SET qty = 2 WHERE id = 3000; COMMIT`);

    await waitFor('stream applied', async () => {
      const rows = await dest.query(`SELECT count(*), max(id) FROM public.items`);
      return Number(rows[0]![0]) === 492 && Number(rows[0]![1]) === 3000;
    });
    await waitFor(
      'other table applied',
      async () => (await dest.query(`SELECT string_agg(k, ',' ORDER BY k) FROM public.other`))[0]![0] === 'c',
    );
    const [row1] = await dest.query(`SELECT name, qty, length(big)::INTEGER, big = '${big}' FROM public.items WHERE id = 1`);
    expect(row1).toEqual(['renamed', 7, big.length, true]);
    expect(await dest.query(`SELECT id FROM public.items WHERE id IN (1000, 2000)`)).toEqual([[2000]]);
    expect(await dest.query(`SELECT qty FROM public.items WHERE id = 3000`)).toEqual([[2]]);
    await p.stop();

    // Everything the target holds equals the source, and no key appears twice.
    const src = await db.sql<{ id: number; name: string; qty: number }>(`SELECT id, name, qty FROM items ORDER BY id`);
    const dst = await dest.query(`SELECT id, name, qty FROM public.items ORDER BY id`);
    expect(dst).toEqual(src.map((r) => [r.id, r.name, r.qty]));
    // Graceful stop acknowledged what is durable: the slot is past the last commit.
    const [slot] = await db.sql<{ confirmed_flush_lsn: string; cur: string }>(
      `SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text AS cur FROM pg_replication_slots WHERE slot_name = 'slot1'`,
    );
    const progress = await p.store.getProgress('slot1');
    expect(parseLsn(slot!.confirmed_flush_lsn)).toBe(progress!.ackLsn);
    expect(progress!.durableLsn).toBeGreaterThan(0n);
    await dest.close();
    await db.dropSlot('slot1');
  });

  it("calls merge as often as the destination prefers when no merge interval is set (Snowflake's merge_interval then holds)", async () => {
    await db.sql(`CREATE TABLE tick (id int PRIMARY KEY); CREATE PUBLICATION tick_pub FOR TABLE tick`);
    let merges = 0;
    /** A destination that decides itself which merges are due, and asks to be called every 20 ms. */
    class Frequent extends EncodingSink {
      readonly preferredMergeIntervalMs = 20;
      override async merge(signal?: AbortSignal) {
        merges++;
        return super.merge(signal);
      }
    }
    const p = startPipeline({
      source: { url: db.url },
      publication: 'tick_pub',
      slotName: 'tick_slot',
      destination: new Frequent(),
      mergeIntervalMs: undefined,
    });
    try {
      // At the runtime's own default (5 s) this would take minutes.
      await waitFor('20 merge calls', () => merges >= 20, 20_000);
    } finally {
      await p.stop();
      await db.dropSlot('tick_slot');
    }
  });
});
