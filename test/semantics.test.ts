/**
 * What the target holds after the changes users make every day: unchanged
 * TOAST, schema changes, keyless tables, soft deletes, truncate and re-insert.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';

describe.each(testClusters('every'))('change semantics on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let seq = 0;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
  });
  afterAll(async () => {
    await db.drop();
  });

  /** Runs a pipeline over a fresh publication; `marker` waits make sure earlier changes were merged. */
  async function withPipeline(
    tables: string,
    fn: (p: RunningPipeline, q: (sql: string) => Promise<unknown[][]>) => Promise<void>,
    deleteMode: 'hard' | 'soft' = 'hard',
  ) {
    const n = ++seq;
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${tables}`);
    const destination = new DuckDbDestination({ path: ':memory:', deleteMode });
    const p = startPipeline({ source: { url: db.url }, publication: `pub${n}`, slotName: `sem${n}`, destination });
    try {
      await fn(p, (sql) => destination.query(sql));
    } finally {
      await p.stop();
      await destination.close();
      await db.dropSlot(`sem${n}`);
    }
  }

  it('keeps an unchanged TOAST value across updates in the same and in later merge windows', async () => {
    await db.sql(`CREATE TABLE docs (id int PRIMARY KEY, title text, body text); ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
      INSERT INTO docs VALUES (1, 'a', repeat('snapshot body ', 2000)), (2, 'b', NULL)`);
    await withPipeline('docs', async (_p, q) => {
      await waitFor('snapshot', async () => (await q(`SELECT count(*) FROM public.docs`))[0]![0] === 2n);
      await db.sql(`UPDATE docs SET title = 'a2' WHERE id = 1`); // body unchanged, from the snapshot row
      await waitFor('merged', async () => (await q(`SELECT title FROM public.docs WHERE id = 1`))[0]![0] === 'a2');
      await db.sql(
        `BEGIN; UPDATE docs SET body = repeat('stream body ', 3000) WHERE id = 2; UPDATE docs SET title = 'b2' WHERE id = 2; UPDATE docs SET title = 'b3' WHERE id = 2; COMMIT`,
      );
      await db.sql(`UPDATE docs SET title = 'a3' WHERE id = 1`);
      await waitFor('merged', async () => (await q(`SELECT string_agg(title, ',' ORDER BY id) FROM public.docs`))[0]![0] === 'a3,b3');
      const rows = await q(
        `SELECT id, body = repeat('snapshot body ', 2000), body = repeat('stream body ', 3000) FROM public.docs ORDER BY id`,
      );
      expect(rows).toEqual([
        [1, true, false],
        [2, false, true],
      ]);
      // The journal says which updates did not carry the value.
      const unchanged = await q(`SELECT count(*) FROM _floe_journal."public.docs" WHERE list_contains(_floe_unchanged, 'body')`);
      expect(Number(unchanged[0]![0])).toBeGreaterThanOrEqual(2);
    });
  });

  it('follows added, dropped and retyped columns', async () => {
    await db.sql(`CREATE TABLE evo (id int PRIMARY KEY, a int, b text); INSERT INTO evo VALUES (1, 10, 'x')`);
    await withPipeline('evo', async (_p, q) => {
      await waitFor('snapshot', async () => (await q(`SELECT count(*) FROM public.evo`))[0]![0] === 1n);
      await db.sql(`ALTER TABLE evo ADD COLUMN c numeric(8,2); INSERT INTO evo VALUES (2, 20, 'y', 1.25)`);
      await waitFor('new column', async () => (await q(`SELECT c::VARCHAR FROM public.evo WHERE id = 2`))[0]?.[0] === '1.25');
      await db.sql(`ALTER TABLE evo DROP COLUMN b; INSERT INTO evo VALUES (3, 30, 2.5)`);
      await waitFor('after drop', async () => (await q(`SELECT count(*) FROM public.evo`))[0]![0] === 3n);
      // A dropped column stays in the destination and is no longer filled.
      expect(await q(`SELECT id, b FROM public.evo ORDER BY id`)).toEqual([
        [1, 'x'],
        [2, 'y'],
        [3, null],
      ]);
      // int -> bigint converts the target column; int -> text with non-numbers falls back to VARCHAR.
      await db.sql(`ALTER TABLE evo ALTER COLUMN a TYPE bigint; UPDATE evo SET a = 5000000000 WHERE id = 1`);
      await waitFor('bigint', async () => (await q(`SELECT a FROM public.evo WHERE id = 1`))[0]![0] === 5000000000n);
      await db.sql(`ALTER TABLE evo ALTER COLUMN a TYPE text; UPDATE evo SET a = 'not a number' WHERE id = 2`);
      await waitFor('text', async () => (await q(`SELECT a FROM public.evo WHERE id = 2`))[0]![0] === 'not a number');
      expect(await q(`SELECT id, a FROM public.evo ORDER BY id`)).toEqual([
        [1, '5000000000'],
        [2, 'not a number'],
        [3, '30'],
      ]);
      // A type change inside a transaction, with rows of the old type not merged yet: they are merged
      // with the old type first ('yes' is not a boolean text), then the column follows the new type.
      await db.sql(`BEGIN; UPDATE evo SET a = 'yes' WHERE id = 1; ALTER TABLE evo ALTER COLUMN a TYPE boolean USING a = 'yes';
        UPDATE evo SET a = false WHERE id = 2; COMMIT`);
      await waitFor('boolean', async () => (await q(`SELECT a FROM public.evo WHERE id = 2`))[0]![0] === 'false');
      expect(await q(`SELECT id, a FROM public.evo ORDER BY id`)).toEqual([
        [1, 'yes'],
        [2, 'false'],
        [3, '30'],
      ]);
    });
  });

  it('replicates a keyless REPLICA IDENTITY FULL table as append-only history', async () => {
    await db.sql(
      `CREATE TABLE log (at int, msg text); ALTER TABLE log REPLICA IDENTITY FULL; INSERT INTO log VALUES (1, 'one'), (1, 'one')`,
    );
    await withPipeline('log', async (_p, q) => {
      await waitFor('snapshot', async () => (await q(`SELECT count(*) FROM public.log`))[0]![0] === 2n);
      await db.sql(
        `INSERT INTO log VALUES (2, 'two'); UPDATE log SET msg = 'TWO' WHERE at = 2; DELETE FROM log WHERE ctid = (SELECT min(ctid) FROM log WHERE at = 1)`,
      );
      await waitFor('history', async () => (await q(`SELECT count(*) FROM public.log`))[0]![0] === 6n);
      expect(await q(`SELECT _floe_op, "at", msg FROM public.log ORDER BY _floe_seq`)).toEqual([
        ['r', 1, 'one'],
        ['r', 1, 'one'],
        ['i', 2, 'two'],
        ['d', 2, 'two'],
        ['u', 2, 'TWO'],
        ['d', 1, 'one'],
      ]);
      // The current state derives from the history: images in minus images out.
      const current = await q(
        `SELECT "at", msg FROM public.log WHERE _floe_op <> 'd' EXCEPT ALL SELECT "at", msg FROM public.log WHERE _floe_op = 'd' ORDER BY "at"`,
      );
      expect(current).toEqual([
        [1, 'one'],
        [2, 'TWO'],
      ]);
    });
  });

  it('soft deletes keep the last image; delete and re-insert in one window; truncate then insert', async () => {
    await db.sql(`CREATE TABLE soft (id int PRIMARY KEY, v text); INSERT INTO soft VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
    await withPipeline(
      'soft',
      async (_p, q) => {
        await waitFor('snapshot', async () => (await q(`SELECT count(*) FROM public.soft`))[0]![0] === 3n);
        await db.sql(
          `DELETE FROM soft WHERE id = 1; BEGIN; DELETE FROM soft WHERE id = 2; INSERT INTO soft VALUES (2, 'two again'); COMMIT`,
        );
        await waitFor('deleted', async () => (await q(`SELECT _floe_deleted FROM public.soft WHERE id = 1`))[0]?.[0] === true);
        expect(await q(`SELECT id, v, _floe_deleted FROM public.soft ORDER BY id`)).toEqual([
          [1, 'one', true],
          [2, 'two again', false],
          [3, 'three', false],
        ]);
        await db.sql(`TRUNCATE soft; INSERT INTO soft VALUES (9, 'nine')`);
        await waitFor('truncated', async () => (await q(`SELECT count(*) FROM public.soft WHERE NOT _floe_deleted`))[0]![0] === 1n);
        expect(await q(`SELECT id, v FROM public.soft WHERE NOT _floe_deleted`)).toEqual([[9, 'nine']]);
      },
      'soft',
    );
  });
});

describe.each(testClusters('every'))('primary key change with an unchanged TOAST value on PostgreSQL $major', (cluster) => {
  it('moves the TOASTed value to the new key', async () => {
    const db = await createTestDatabase(cluster);
    try {
      await db.sql(`CREATE TABLE mv (id int PRIMARY KEY, title text, body text); ALTER TABLE mv ALTER body SET STORAGE EXTERNAL;
        INSERT INTO mv VALUES (1, 'one', repeat('first body ', 2000)), (2, 'two', repeat('second body ', 2000));
        CREATE PUBLICATION pmv FOR TABLE mv`);
      const destination = new DuckDbDestination({ path: ':memory:' });
      const p = startPipeline({ source: { url: db.url }, publication: 'pmv', slotName: 'mv_slot', destination, mergeIntervalMs: 100 });
      try {
        const q = (sql: string) => destination.query(sql);
        await waitFor('snapshot', async () => (await q(`SELECT count(*) FROM public.mv`))[0]![0] === 2n);
        // Key change of a row whose body only the target holds (snapshot merged earlier) ...
        await db.sql(`UPDATE mv SET id = 10 WHERE id = 1`);
        // ... and of a row whose body is in the same merge window, then a second move.
        await db.sql(
          `BEGIN; UPDATE mv SET body = repeat('new second ', 2500) WHERE id = 2; UPDATE mv SET id = 20 WHERE id = 2; UPDATE mv SET id = 21, title = 'moved twice' WHERE id = 20; COMMIT`,
        );
        await waitFor('moved', async () => (await q(`SELECT string_agg(id::VARCHAR, ',' ORDER BY id) FROM public.mv`))[0]![0] === '10,21');
        expect(
          await q(`SELECT id, title, body = repeat('first body ', 2000), body = repeat('new second ', 2500) FROM public.mv ORDER BY id`),
        ).toEqual([
          [10, 'one', true, false],
          [21, 'moved twice', false, true],
        ]);
      } finally {
        await p.stop();
        await destination.close();
        await db.dropSlot('mv_slot');
      }
    } finally {
      await db.drop();
    }
  });
});
