/**
 * Exactly what the publication publishes (design.md invariant 8), through the replicate path into DuckDB:
 * column lists and row filters in the snapshot (combined over several publications), FOR ALL TABLES
 * without floe's own tables, a table dropped and created again under the same name, partitions published
 * via the root (attached and detached later), and PostgreSQL 18's published generated columns.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { join } from 'node:path';
import { startPipeline, tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';
import type { Failpoints, PipelineOptions } from '../src/pipeline/pipeline.js';

describe.each(testClusters())('what the publication publishes on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let seq = 0;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
  });
  afterAll(async () => {
    await db.drop();
  });

  /** Runs a pipeline on `publication` into an in-memory DuckDB; `body` gets a query function. */
  async function replicate(
    publication: string,
    body: (q: (sql: string) => Promise<unknown[][]>, destination: DuckDbDestination) => Promise<void>,
    extra: Partial<PipelineOptions> = {},
    database: TestDatabase = db,
  ): Promise<void> {
    const slotName = `pub_slot${++seq}`;
    const destination = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({ source: { url: database.url }, publication, slotName, publicationPollMs: 300, destination, ...extra });
    try {
      await body((sql) => destination.query(sql), destination);
    } finally {
      await p.stop();
      await destination.close();
      await database.dropSlot(slotName);
    }
  }

  const rows = async (q: (sql: string) => Promise<unknown[][]>, sql: string): Promise<string> =>
    JSON.stringify(await q(sql).catch(() => null), (_, v) => (typeof v === 'bigint' ? Number(v) : v));

  /** Source and target agree value by value (once the merges caught up). */
  async function expectVerified(publication: string, destination: DuckDbDestination, database: TestDatabase = db): Promise<void> {
    let last = '';
    await waitFor(`source and target to agree (${last})`, async () => {
      const report = await verifyDuckDb({ url: database.url }, publication, destination);
      last = JSON.stringify(report.tables);
      return report.mismatches === 0;
    }).catch((err: Error) => {
      throw new Error(`${err.message}: ${last}`);
    });
  }

  it.skipIf(cluster.major < 15)('copies only the published columns and the rows of the row filter, and streams the same', async () => {
    await db.sql(`CREATE TABLE cl (id int PRIMARY KEY, x int, secret text);
      INSERT INTO cl VALUES (1, 1, 's1'), (2, 2, 's2');
      CREATE TABLE rf (id int PRIMARY KEY, x int, note text);
      -- A row filter may only use replica identity columns when updates and deletes are published.
      ALTER TABLE rf REPLICA IDENTITY FULL;
      INSERT INTO rf VALUES (1, 5, 'a'), (2, -1, 'b'), (3, 7, 'c');
      CREATE PUBLICATION pub_cl FOR TABLE cl (id, x), rf WHERE (x > 0)`);
    await replicate('pub_cl', async (q, destination) => {
      await waitFor('snapshot', async () => (await rows(q, `SELECT id FROM public.rf ORDER BY id`)) === '[[1],[3]]');
      const clColumns = await q(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'cl'`);
      expect(clColumns.map((r) => r[0])).not.toContain('secret');
      expect(await rows(q, `SELECT id, x FROM public.cl ORDER BY id`)).toBe('[[1,1],[2,2]]');
      // The stream is filtered at the source: an update out of the filter arrives as a delete.
      await db.sql(`INSERT INTO rf VALUES (4, -3, 'd'), (5, 9, 'e'); UPDATE rf SET x = -1 WHERE id = 1; DELETE FROM rf WHERE id = 2;
        INSERT INTO cl VALUES (3, 3, 's3')`);
      await waitFor('stream', async () => (await rows(q, `SELECT id FROM public.rf WHERE NOT _floe_deleted ORDER BY id`)) === '[[3],[5]]');
      await waitFor('cl stream', async () => (await rows(q, `SELECT count(*) FROM public.cl`)) === '[[3]]');
      await expectVerified('pub_cl', destination);
    });
  });

  it.skipIf(cluster.major < 15)(
    'combines several publications as PostgreSQL does: rows of any filter; no filter publishes all',
    async () => {
      await db.sql(`CREATE TABLE cm (id int PRIMARY KEY, a int, b int, hidden text);
      INSERT INTO cm SELECT g, g % 3, g % 5, 'h' FROM generate_series(1, 30) g;
      CREATE TABLE cn (id int PRIMARY KEY, a int);
      INSERT INTO cn SELECT g, g FROM generate_series(1, 10) g;
      CREATE PUBLICATION pub_ma FOR TABLE cm (id, a, b) WHERE (a = 0), cn WHERE (a > 5);
      CREATE PUBLICATION pub_mb FOR TABLE cm (id, a, b) WHERE (b = 0), cn`);
      await replicate('pub_ma,pub_mb', async (q, destination) => {
        const expected = (await db.sql<{ n: string }>(`SELECT count(*)::text AS n FROM cm WHERE a = 0 OR b = 0`))[0]!.n;
        await waitFor('snapshot of cm', async () => (await rows(q, `SELECT count(*) FROM public.cm`)) === `[[${expected}]]`);
        await waitFor('snapshot of cn', async () => (await rows(q, `SELECT count(*) FROM public.cn`)) === '[[10]]');
        const columns = await q(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'cm'`);
        expect(columns.map((r) => r[0])).not.toContain('hidden');
        await expectVerified('pub_ma,pub_mb', destination);
      });
    },
  );

  it('never replicates its own tables from a FOR ALL TABLES publication, and does not feed back on its progress writes', async () => {
    // A database of its own: FOR ALL TABLES would publish the other tests' tables too.
    const own = await createTestDatabase(cluster, 'all');
    const store = new CountingStore(own.url);
    try {
      await own.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');
        CREATE PUBLICATION pub_all FOR ALL TABLES`);
      await replicate(
        'pub_all',
        async (q) => {
          await waitFor('snapshot', async () => (await rows(q, `SELECT count(*) FROM public.t`)) === '[[1]]');
          await own.sql(`INSERT INTO t VALUES (2, 'b')`);
          await waitFor('stream', async () => (await rows(q, `SELECT count(*) FROM public.t`)) === '[[2]]');
          const before = store.writes;
          // An observation window, not a wait for a condition: what is checked is that nothing happens.
          // With floe's progress table published, each progress write comes back as a transaction that
          // causes the next write, at every batch tick (100 ms here).
          await new Promise((r) => setTimeout(r, 2000));
          expect(store.writes - before).toBeLessThanOrEqual(1);
          const ownTables = await q(
            `SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'floe' OR table_name LIKE 'floe.%'`,
          );
          expect(ownTables).toEqual([]);
        },
        { store, batchMaxMs: 100 },
        own,
      );
    } finally {
      await store.close();
      await own.drop();
    }
  });

  it('follows a table dropped and created again under the same name: the old rows go', async () => {
    await db.sql(`CREATE TABLE dr (id int PRIMARY KEY, v text); INSERT INTO dr SELECT g, 'old' FROM generate_series(1, 5) g;
      CREATE PUBLICATION pub_dr FOR TABLE dr`);
    await replicate('pub_dr', async (q, destination) => {
      await waitFor('snapshot', async () => (await rows(q, `SELECT count(*) FROM public.dr`)) === '[[5]]');
      await db.sql(`BEGIN; DROP TABLE dr; CREATE TABLE dr (id int PRIMARY KEY, v text); INSERT INTO dr VALUES (10, 'new');
        ALTER PUBLICATION pub_dr ADD TABLE dr; COMMIT`);
      await db.sql(`INSERT INTO dr VALUES (11, 'new')`);
      await waitFor(
        'the new table only',
        async () => (await rows(q, `SELECT id, v FROM public.dr ORDER BY id`)) === '[[10,"new"],[11,"new"]]',
      );
      await expectVerified('pub_dr', destination);
    });
  });

  it('resyncs at the next start a table dropped and created again while floe was stopped', async () => {
    await db.sql(`CREATE TABLE rs (id int PRIMARY KEY, v text); INSERT INTO rs SELECT g, 'old' FROM generate_series(1, 5) g;
      CREATE PUBLICATION pub_rs FOR TABLE rs`);
    const store = new MemoryStateStore();
    const dir = tempDir();
    const path = join(dir.path, 'rs.duckdb');
    const run = async (
      body: (q: (sql: string) => Promise<unknown[][]>, d: DuckDbDestination, streaming: () => boolean) => Promise<void>,
    ) => {
      const destination = new DuckDbDestination({ path });
      let streaming = false;
      const events = { phase: (ph: string) => void (ph === 'streaming' && (streaming = true)) };
      const p = startPipeline({ source: { url: db.url }, publication: 'pub_rs', slotName: 'rs_slot', destination, store, events });
      try {
        await body(
          (sql) => destination.query(sql),
          destination,
          () => streaming,
        );
      } finally {
        await p.stop();
        await destination.close();
      }
    };
    try {
      await run(async (q, _, streaming) => {
        // Until the snapshot is complete (the target fills range by range before that), a restart resumes it.
        await waitFor('snapshot', async () => streaming() && (await rows(q, `SELECT count(*) FROM public.rs`)) === '[[5]]');
      });
      await db.sql(`DROP TABLE rs; CREATE TABLE rs (id int PRIMARY KEY, v text); INSERT INTO rs VALUES (10, 'new');
        ALTER PUBLICATION pub_rs ADD TABLE rs`);
      await run(async (q, destination) => {
        await waitFor('the new table only', async () => (await rows(q, `SELECT id, v FROM public.rs ORDER BY id`)) === '[[10,"new"]]');
        await expectVerified('pub_rs', destination);
      });
    } finally {
      await db.dropSlot('rs_slot');
      dir.remove();
    }
  });

  it('resyncs at the next start a table dropped and created again while floe was stopped in the middle of its snapshot', async () => {
    // Two ranges: floe stops after the first is loaded, before the snapshot completes. The ranges copied
    // hold the old table's rows; resuming the snapshot would keep them and skip the new table's rows there.
    await db.sql(`CREATE TABLE rm (id int PRIMARY KEY, v text); INSERT INTO rm SELECT g, 'old' FROM generate_series(1, 400) g;
      CREATE PUBLICATION pub_rm FOR TABLE rm; ANALYZE rm`);
    const [[pages]] = (await db.sql(`SELECT relpages FROM pg_class WHERE relname = 'rm'`)).map((r) => Object.values(r)) as [[number]];
    expect(pages).toBeGreaterThan(1);
    const store = new MemoryStateStore();
    const dir = tempDir();
    const path = join(dir.path, 'rm.duckdb');
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const holding = new Promise<void>((r) => (reached = r));
    const failpoints: Failpoints = {
      async beforeRecordRange() {
        reached();
        await released;
      },
    };
    const start = (extra: Partial<PipelineOptions>) => {
      const destination = new DuckDbDestination({ path });
      const p = startPipeline({
        source: { url: db.url },
        publication: 'pub_rm',
        slotName: 'rm_slot',
        destination,
        store,
        snapshotRangePages: 1,
        snapshotParallelism: 1,
        ...extra,
      });
      return { p, destination };
    };
    try {
      const first = start({ failpoints });
      await holding;
      const stopping = first.p.stop();
      release();
      await stopping;
      await first.destination.close();
      await db.sql(`DROP TABLE rm; CREATE TABLE rm (id int PRIMARY KEY, v text); INSERT INTO rm SELECT g, 'new' FROM generate_series(1, 400, 2) g;
        ALTER PUBLICATION pub_rm ADD TABLE rm`);
      const second = start({});
      try {
        await waitFor(
          'the new table only',
          async () =>
            (await rows((sql) => second.destination.query(sql), `SELECT count(*), count(*) FILTER (WHERE v = 'new') FROM public.rm`)) ===
            '[[200,200]]',
        );
        await expectVerified('pub_rm', second.destination);
      } finally {
        await second.p.stop();
        await second.destination.close();
      }
    } finally {
      release();
      await db.dropSlot('rm_slot');
      dir.remove();
    }
  });

  it('replicates a partitioned table published via its root into one target, following partitions attached and detached later', async () => {
    await db.sql(`CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
      CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
      INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' FROM generate_series(1, 20) g;
      CREATE PUBLICATION pub_m FOR TABLE m WITH (publish_via_partition_root = true)`);
    await replicate('pub_m', async (q, destination) => {
      await waitFor('snapshot', async () => (await rows(q, `SELECT count(*) FROM public.m`)) === '[[20]]');
      await db.sql(`INSERT INTO m VALUES (21, 'eu', 'streamed'), (22, 'us', 'streamed')`);
      await waitFor('stream', async () => (await rows(q, `SELECT count(*) FROM public.m`)) === '[[22]]');
      const partitions = await q(`SELECT table_name FROM information_schema.tables WHERE table_name IN ('m_eu', 'm_us', 'm_asia')`);
      expect(partitions).toEqual([]);
      // A partition with rows attached later: its rows are the root's now, without a change in the stream.
      await db.sql(`CREATE TABLE m_asia (id int, region text, v text, PRIMARY KEY (id, region));
        INSERT INTO m_asia SELECT g, 'asia', 'attached' FROM generate_series(100, 104) g;
        ALTER TABLE m ATTACH PARTITION m_asia FOR VALUES IN ('asia')`);
      await waitFor('attached rows', async () => (await rows(q, `SELECT count(*) FROM public.m WHERE region = 'asia'`)) === '[[5]]');
      await db.sql(`ALTER TABLE m DETACH PARTITION m_us`);
      await waitFor('detached rows gone', async () => (await rows(q, `SELECT count(*) FROM public.m WHERE region = 'us'`)) === '[[0]]');
      await expectVerified('pub_m', destination);
    });
  });

  it.skipIf(cluster.major < 18)(
    'follows publish_generated_columns: generated columns in snapshot and stream only when published',
    async () => {
      await db.sql(`CREATE TABLE gen (id int PRIMARY KEY, x int, twice int GENERATED ALWAYS AS (x * 2) STORED);
      INSERT INTO gen (id, x) VALUES (1, 1), (2, 2);
      CREATE PUBLICATION pub_gen FOR TABLE gen WITH (publish_generated_columns = stored);
      CREATE PUBLICATION pub_nogen FOR TABLE gen`);
      await replicate('pub_gen', async (q, destination) => {
        await waitFor('snapshot', async () => (await rows(q, `SELECT id, twice FROM public.gen ORDER BY id`)) === '[[1,2],[2,4]]');
        await db.sql(`INSERT INTO gen (id, x) VALUES (3, 3)`);
        await waitFor('stream', async () => (await rows(q, `SELECT id, twice FROM public.gen ORDER BY id`)) === '[[1,2],[2,4],[3,6]]');
        await expectVerified('pub_gen', destination);
      });
      await replicate('pub_nogen', async (q) => {
        await waitFor('snapshot', async () => (await rows(q, `SELECT count(*) FROM public.gen`)) === '[[3]]');
        await db.sql(`INSERT INTO gen (id, x) VALUES (4, 4)`);
        await waitFor('stream', async () => (await rows(q, `SELECT count(*) FROM public.gen`)) === '[[4]]');
        const columns = await q(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'gen'`);
        expect(columns.map((r) => r[0])).not.toContain('twice');
      });
    },
  );
});

/** The source-database state store, counting its progress writes. */
class CountingStore extends PostgresStateStore {
  writes = 0;
  override async recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    this.writes++;
    return super.recordDurable(pipeline, incarnation, durableLsn, ackLsn);
  }
}
