/**
 * Which pipe a journal is loaded through (issue 9, fidelity). Snowpipe Streaming path segments are
 * documented as case-insensitive, and how the default pipe of a mixed-case table name is addressed is
 * not documented; the emulator resolves a segment as its upper-cased spelling, exactly, so a client that
 * depends on either reading fails here. A table whose Snowflake name is upper-case-safe keeps its
 * default pipe `<TABLE>-STREAMING`; any other gets a named pipe floe creates, with an upper-case-safe
 * name. Both replicate, across a restart; a table from before named pipes moves to its named pipe.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import { pipeNameFor } from '../src/destination/snowflake/sql.js';

const cluster = testClusters()[0]!;

describe('Snowpipe Streaming pipes of mixed-case tables', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfpipes');
    sf = await snowflakeFixture();
    await db.sql(`CREATE TABLE "Orders" (id int PRIMARY KEY, "Note" text);
      CREATE TABLE "Audit Log" (at int, what text);
      ALTER TABLE "Audit Log" REPLICA IDENTITY FULL;
      CREATE TABLE plain (id int PRIMARY KEY, v text);
      INSERT INTO "Orders" VALUES (1, 'a'), (2, 'b');
      INSERT INTO "Audit Log" VALUES (1, 'x');
      INSERT INTO plain VALUES (1, 'p');
      CREATE PUBLICATION p_pipes FOR TABLE "Orders", "Audit Log", plain`);
  });
  afterAll(async () => {
    await db?.dropSlot('sfpipes_slot');
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  const store = () => new PostgresStateStore(db.url);
  const rows = async (sql: string) => JSON.stringify(await sf.rows(sql).catch((e: Error) => e.message));
  const orders = `SELECT "ID", "Note" FROM ANALYTICS.PUBLIC."PUBLIC_Orders" ORDER BY 1`;
  const audit = `SELECT "AT", "WHAT" FROM ANALYTICS.PUBLIC."PUBLIC_Audit Log" WHERE "_FLOE_OP" <> 't' ORDER BY 1`;
  const plain = `SELECT ID, V FROM ANALYTICS.PUBLIC.PUBLIC_PLAIN ORDER BY 1`;

  async function run(body: () => Promise<void>): Promise<void> {
    const destination = sf.destination();
    const p = startPipeline({ source: { url: db.url }, publication: 'p_pipes', slotName: 'sfpipes_slot', destination, store: store() });
    try {
      await body();
    } finally {
      await p.stop();
      await destination.close();
    }
  }

  it('names a pipe only for names that are not upper-case-safe, unique per exact name', () => {
    expect(pipeNameFor('PUBLIC_PLAIN')).toEqual({ name: 'PUBLIC_PLAIN-STREAMING', named: false });
    expect(pipeNameFor('PUBLIC_Orders')).toEqual({ name: expect.stringMatching(/^FLOE_PIPE_PUBLIC_ORDERS_[0-9A-F]{10}$/), named: true });
    expect(pipeNameFor('PUBLIC_Audit Log').name).toMatch(/^FLOE_PIPE_PUBLIC_AUDIT_LOG_[0-9A-F]{10}$/);
    expect(pipeNameFor('PUBLIC_Orders').name).not.toBe(pipeNameFor('PUBLIC_orders').name);
  });

  it('mixed-case tables load through named pipes, upper-case-safe ones through their default pipe, across a restart', async () => {
    await run(async () => {
      await waitFor('snapshot', async () => (await rows(orders)) === '[["1","a"],["2","b"]]' && (await rows(plain)) === '[["1","p"]]');
      await db.sql(
        `INSERT INTO "Orders" VALUES (3, 'c'); UPDATE "Orders" SET "Note" = 'B' WHERE id = 2; INSERT INTO "Audit Log" VALUES (2, 'y')`,
      );
      await waitFor(
        'stream',
        async () => (await rows(orders)) === '[["1","a"],["2","B"],["3","c"]]' && (await rows(audit)) === '[["1","x"],["2","y"]]',
        30_000,
      );
    });
    const pipes = (await sf.rows(`SHOW PIPES IN SCHEMA ANALYTICS.PUBLIC_FLOE_LANDING`)).map((r) => String(r[1]));
    expect(pipes).toContain(pipeNameFor('PUBLIC_Orders').name);
    expect(pipes).toContain(pipeNameFor('PUBLIC_Audit Log').name);
    expect(pipes).toContain('PUBLIC_PLAIN-STREAMING');
    expect(pipes.filter((p) => /-STREAMING$/.test(p))).toEqual(['PUBLIC_PLAIN-STREAMING']);

    await run(async () => {
      await db.sql(`DELETE FROM "Orders" WHERE id = 1; INSERT INTO plain VALUES (2, 'q')`);
      await waitFor(
        'stream after restart',
        async () => (await rows(orders)) === '[["2","B"],["3","c"]]' && (await rows(plain)) === '[["1","p"],["2","q"]]',
        30_000,
      );
    });
  });

  it('a mixed-case table recorded before named pipes moves to its named pipe and keeps replicating', async () => {
    // What an earlier floe left: no PIPE recorded. Its default pipe never resolves in the emulator.
    await sf.rows(`UPDATE ANALYTICS.PUBLIC_FLOE_LANDING._FLOE_TABLES SET PIPE = NULL WHERE SOURCE_TABLE = 'public.Orders'`);
    await run(async () => {
      await db.sql(`INSERT INTO "Orders" VALUES (4, 'd')`);
      await waitFor('stream after the move', async () => (await rows(orders)) === '[["2","B"],["3","c"],["4","d"]]', 30_000);
    });
    const journal = await sf.rows(
      `SELECT "ID", COUNT(*) FROM ANALYTICS.PUBLIC_FLOE_LANDING."PUBLIC_Orders" WHERE "_FLOE_OP" <> 'r' GROUP BY 1 HAVING COUNT(*) > 1 AND "ID" = '4'`,
    );
    expect(journal).toEqual([]);
  });
});
