/**
 * Exactly what the publication publishes (design.md invariant 8), into the Snowflake emulator: the
 * same cases as test/publication.test.ts runs into DuckDB. Column lists and row filters in snapshot and
 * stream (nothing excluded reaches a journal or a target), FOR ALL TABLES without floe's own tables,
 * a table dropped and created again under the same name, and a partitioned table published via its
 * root: one target, no table, pipe or channel per partition, partitions attached and detached later.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import type { PipelineOptions } from '../src/pipeline/pipeline.js';

describe.each(testClusters())('what the publication publishes, into Snowflake, on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  let seq = 0;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'pubsf');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  /** Runs a pipeline on `publication` into the emulator's ANALYTICS.PUBLIC (every case has its own tables). */
  async function replicate(
    publication: string,
    body: (schema: string, slotName: string) => Promise<void>,
    extra: Partial<PipelineOptions> = {},
    database: TestDatabase = db,
  ): Promise<void> {
    const n = ++seq;
    const slotName = `pubsf_slot${n}`;
    const schema = 'PUBLIC';
    const destination = sf.destination();
    const p = startPipeline({ source: { url: database.url }, publication, slotName, publicationPollMs: 300, destination, ...extra });
    try {
      await body(schema, slotName);
    } finally {
      await p.stop();
      await destination.close();
      await database.dropSlot(slotName);
    }
  }

  /** A target's rows as text, ordered by the first column. */
  const target = async (schema: string, table: string, columns: string, where = 'true'): Promise<string> =>
    JSON.stringify(
      await sf.rows(`SELECT ${columns} FROM ANALYTICS.${schema}.PUBLIC_${table} WHERE ${where} ORDER BY 1`).catch((e: Error) => e.message),
    );

  /** Every table (targets and journals) and channel the emulator holds for the schema. */
  async function objects(schema: string): Promise<{ tables: string[]; channels: string[] }> {
    const state = await sf.emulator.state();
    return {
      tables: state.tables.filter((t) => t.schema === schema || t.schema.startsWith(`${schema}_`)).map((t) => `${t.schema}.${t.name}`),
      channels: state.channels.filter((c) => c.schema === schema || c.schema.startsWith(`${schema}_`)).map((c) => `${c.pipe}/${c.channel}`),
    };
  }

  /** The columns of every journal and target (any schema) of a source table. */
  async function columnsOf(table: string): Promise<string[]> {
    const columns: string[] = [];
    for (const t of (await sf.emulator.state()).tables.filter((t) => t.name === `PUBLIC_${table}`)) {
      for (const r of await sf.rows(`DESCRIBE TABLE ANALYTICS.${t.schema}.${t.name}`)) columns.push(`${t.schema}.${String(r[0])}`);
    }
    return columns;
  }

  it.skipIf(cluster.major < 15)('copies only the published columns and the rows of the row filter, and streams the same', async () => {
    await db.sql(`CREATE TABLE cl (id int PRIMARY KEY, x int, secret text);
      INSERT INTO cl VALUES (1, 1, 's1'), (2, 2, 's2');
      CREATE TABLE rf (id int PRIMARY KEY, x int, note text);
      ALTER TABLE rf REPLICA IDENTITY FULL;
      INSERT INTO rf VALUES (1, 5, 'a'), (2, -1, 'b'), (3, 7, 'c');
      CREATE PUBLICATION pub_cl FOR TABLE cl (id, x), rf WHERE (x > 0)`);
    await replicate('pub_cl', async (schema) => {
      await waitFor('snapshot', async () => (await target(schema, 'RF', 'ID')) === '[["1"],["3"]]');
      expect(await target(schema, 'CL', 'ID, X')).toBe('[["1","1"],["2","2"]]');
      // The stream is filtered at the source: an update out of the filter arrives as a delete.
      await db.sql(`INSERT INTO rf VALUES (4, -3, 'd'), (5, 9, 'e'); UPDATE rf SET x = -1 WHERE id = 1; DELETE FROM rf WHERE id = 2;
        INSERT INTO cl VALUES (3, 3, 's3')`);
      await waitFor('rf stream', async () => (await target(schema, 'RF', 'ID')) === '[["3"],["5"]]');
      await waitFor('cl stream', async () => (await target(schema, 'CL', 'ID, X')) === '[["1","1"],["2","2"],["3","3"]]');
      // Neither the journal nor the target of cl has the column the publication leaves out.
      const columns = await columnsOf('CL');
      expect(columns).toContain('PUBLIC.X');
      expect(columns).toContain('PUBLIC_FLOE_LANDING.X');
      expect(columns.filter((c) => c.endsWith('.SECRET'))).toEqual([]);
      expect(JSON.stringify(await sf.rows(`SELECT * FROM ANALYTICS.${schema}.PUBLIC_CL`))).not.toContain('s3');
    });
  });

  it('never replicates its own tables from a FOR ALL TABLES publication', async () => {
    const own = await createTestDatabase(cluster, 'allsf');
    const store = new PostgresStateStore(own.url);
    try {
      await own.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');
        CREATE PUBLICATION pub_all FOR ALL TABLES`);
      await replicate(
        'pub_all',
        async (schema, slotName) => {
          await waitFor('snapshot', async () => (await target(schema, 'T', 'ID, V')) === '[["1","a"]]');
          await own.sql(`INSERT INTO t VALUES (2, 'b')`);
          await waitFor('stream', async () => (await target(schema, 'T', 'ID, V')) === '[["1","a"],["2","b"]]');
          const { tables, channels } = await objects(schema);
          // Targets and journals are named SCHEMA_TABLE: floe's own would be FLOE_*.
          expect(tables.filter((t) => t.includes('.FLOE_'))).toEqual([]);
          // This pipeline's channels (named after its slot) are all the source table's.
          const mine = channels.filter((c) => c.includes(slotName.toUpperCase()));
          expect(mine.length).toBeGreaterThan(0);
          expect(mine.filter((c) => !c.split('/')[0]!.includes('PUBLIC_T'))).toEqual([]);
        },
        { store },
        own,
      );
    } finally {
      await store.close();
      await own.drop();
    }
  });

  // Timed out in 2 of ~10 full-suite runs under CI load (never alone, nor 7 times beside other load): one
  // retry, and a test timeout above the inner wait so a failure shows what the target held. Cause unknown.
  it('follows a table dropped and created again under the same name: the old rows go', { retry: 1, timeout: 240_000 }, async () => {
    await db.sql(`DROP PUBLICATION IF EXISTS pub_dr; DROP TABLE IF EXISTS dr;
      CREATE TABLE dr (id int PRIMARY KEY, v text); INSERT INTO dr SELECT g, 'old' FROM generate_series(1, 5) g;
      CREATE PUBLICATION pub_dr FOR TABLE dr`);
    await replicate('pub_dr', async (schema) => {
      await waitFor('snapshot', async () => (await target(schema, 'DR', 'count(*)')) === '[["5"]]');
      await db.sql(`BEGIN; DROP TABLE dr; CREATE TABLE dr (id int PRIMARY KEY, v text); INSERT INTO dr VALUES (10, 'new');
        ALTER PUBLICATION pub_dr ADD TABLE dr; COMMIT`);
      await db.sql(`INSERT INTO dr VALUES (11, 'new')`);
      // A live resync through the emulator's merges: generous under a loaded machine.
      let seen = '';
      await waitFor(
        'the new table only',
        async () => (seen = await target(schema, 'DR', 'ID, V')) === '[["10","new"],["11","new"]]',
        120_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; the target holds ${seen}`);
      });
    });
  });

  it('replicates a partitioned table published via its root into one target, following partitions attached and detached later', async () => {
    await db.sql(`CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
      CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
      INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' FROM generate_series(1, 20) g;
      CREATE PUBLICATION pub_m FOR TABLE m WITH (publish_via_partition_root = true)`);
    await replicate('pub_m', async (schema) => {
      await waitFor('snapshot', async () => (await target(schema, 'M', 'count(*)')) === '[["20"]]');
      await db.sql(`INSERT INTO m VALUES (21, 'eu', 'streamed'), (22, 'us', 'streamed')`);
      await waitFor('stream', async () => (await target(schema, 'M', 'count(*)')) === '[["22"]]');
      await db.sql(`CREATE TABLE m_asia (id int, region text, v text, PRIMARY KEY (id, region));
        INSERT INTO m_asia SELECT g, 'asia', 'attached' FROM generate_series(100, 104) g;
        ALTER TABLE m ATTACH PARTITION m_asia FOR VALUES IN ('asia')`);
      await waitFor('attached rows', async () => (await target(schema, 'M', 'count(*)', `REGION = 'asia'`)) === '[["5"]]');
      await db.sql(`ALTER TABLE m DETACH PARTITION m_us`);
      await waitFor('detached rows gone', async () => (await target(schema, 'M', 'count(*)', `REGION = 'us'`)) === '[["0"]]');
      // One journal and one target for the root; no table and no channel for any partition.
      const { tables, channels } = await objects(schema);
      expect(tables.filter((t) => /M_(EU|US|ASIA)/.test(t))).toEqual([]);
      expect(channels.filter((c) => /M_(EU|US|ASIA)/.test(c))).toEqual([]);
      expect(tables.filter((t) => t.endsWith('.PUBLIC_M')).length).toBeGreaterThanOrEqual(1);
    });
  });
});
