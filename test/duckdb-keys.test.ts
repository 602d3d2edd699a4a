/**
 * DuckDB merges match keys on their lossless text (`_floe_key`, issue 10 defect 5): a key the target
 * type cannot hold ('NaN' in a numeric(10,2) key) no longer fails every merge (it stopped the pipeline for
 * good) and its updates and deletes apply; other tables keep merging. A target from before `_floe_key`
 * gets the column filled from the journal at the next start, and keeps merging without duplicates.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';
import { MemoryStateStore } from '../src/store/memory-store.js';

const cluster = testClusters()[0]!;

describe('DuckDB keys the target type cannot hold', () => {
  let db: TestDatabase;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'dkeys');
  });
  afterAll(async () => {
    await db?.drop();
    dir.remove();
  });

  const text = (rows: unknown[][]) => JSON.stringify(rows, (_, v) => (typeof v === 'bigint' ? Number(v) : v));

  it("a 'NaN' numeric key merges, updates and deletes like any other; the other tables keep merging", async () => {
    await db.sql(`CREATE TABLE nk (k numeric(10,2) PRIMARY KEY, v text); CREATE TABLE ok (id int PRIMARY KEY);
      INSERT INTO nk VALUES (1.5, 'a'), ('NaN', 'nan'); CREATE PUBLICATION nk_pub FOR TABLE nk, ok`);
    const destination = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({ source: { url: db.url }, publication: 'nk_pub', slotName: 'nk_slot', destination });
    let failure: Error | undefined;
    void p.done.catch((err: Error) => (failure = err));
    const q = (sql: string) => destination.query(sql);
    try {
      await waitFor('snapshot', async () => text(await q(`SELECT count(*) FROM public.nk`)) === '[[2]]');
      await db.sql(
        `UPDATE nk SET v = 'b' WHERE k = 'NaN'; DELETE FROM nk WHERE k = 1.5; INSERT INTO nk VALUES (2, 'c'); INSERT INTO ok VALUES (1)`,
      );
      await waitFor('the other table merged', async () => text(await q(`SELECT count(*) FROM public.ok`)) === '[[1]]');
      await waitFor(
        'the changes merged',
        async () => text(await q(`SELECT k::VARCHAR, v, _floe_key FROM public.nk ORDER BY v`)) === '[[null,"b","NaN"],["2.00","c","2.00"]]',
      );
      await db.sql(`DELETE FROM nk WHERE k = 'NaN'`);
      await waitFor('the delete merged', async () => text(await q(`SELECT v FROM public.nk`)) === '[["c"]]');
      expect(failure).toBeUndefined();
    } finally {
      await p.stop();
      await destination.close();
      await db.dropSlot('nk_slot');
    }
  });

  it('a target from before _floe_key gets it filled from the journal and keeps merging without duplicates', async () => {
    await db.sql(`CREATE TABLE up (a int, b text, v text, PRIMARY KEY (a, b));
      INSERT INTO up SELECT g, 'k' || g, 'v' FROM generate_series(1, 50) g; CREATE PUBLICATION up_pub FOR TABLE up`);
    const path = join(dir.path, 'up.duckdb');
    const store = new MemoryStateStore();
    const run = async (body: (q: (sql: string) => Promise<unknown[][]>, d: DuckDbDestination) => Promise<void>) => {
      const destination = new DuckDbDestination({ path });
      const p = startPipeline({ source: { url: db.url }, publication: 'up_pub', slotName: 'up_slot', destination, store });
      try {
        await body((sql) => destination.query(sql), destination);
      } finally {
        await p.stop();
        await destination.close();
      }
    };
    try {
      await run(async (q) => {
        await waitFor('snapshot', async () => text(await q(`SELECT count(*) FROM public.up`)) === '[[50]]');
        await db.sql(`UPDATE up SET v = 'streamed' WHERE a <= 10`);
        await waitFor('stream', async () => text(await q(`SELECT count(*) FROM public.up WHERE v = 'streamed'`)) === '[[10]]');
        // What a target created by an earlier floe looks like: no _floe_key.
        await q(`ALTER TABLE public.up DROP COLUMN _floe_key`);
      });
      await db.sql(`UPDATE up SET v = 'after' WHERE a <= 20`);
      await run(async (q, destination) => {
        await waitFor('after the upgrade', async () => text(await q(`SELECT count(*) FROM public.up WHERE v = 'after'`)) === '[[20]]');
        expect(text(await q(`SELECT count(*), count(_floe_key) FROM public.up`))).toBe('[[50,50]]');
        expect(text(await q(`SELECT _floe_key FROM public.up WHERE a = 7`))).toBe('[["1:72:k7"]]');
        const report = await verifyDuckDb({ url: db.url }, 'up_pub', destination);
        expect(report.mismatches, JSON.stringify(report.tables)).toBe(0);
      });
    } finally {
      await db.dropSlot('up_slot');
    }
  });
});
