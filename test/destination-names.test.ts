/**
 * Source names a destination cannot keep apart (issue 11, item 6): tables or columns that differ only in
 * case, and columns named with floe's reserved prefix. `floe replicate` into DuckDB and into the Snowflake
 * emulator refuses them with one line naming the table and the names, before a row is written, and leaves
 * no replication slot behind. A table that joins the publication later with a clashing name stops the
 * pipeline with the same error rather than mixing its rows into another table.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { runFloe } from './helpers/cli.js';
import { startPipeline, tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';

const cluster = testClusters()[0]!;

describe('names a destination cannot keep apart', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'names');
    sf = await snowflakeFixture();
    await db.sql(`CREATE TABLE "Orders" (id int PRIMARY KEY, v text); CREATE TABLE orders (id int PRIMARY KEY, v text);
      INSERT INTO "Orders" VALUES (1, 'upper'); INSERT INTO orders VALUES (1, 'lower');
      CREATE TABLE cols (id int PRIMARY KEY, "V" text, v text);
      CREATE TABLE res (id int PRIMARY KEY, _floe_lsn text);
      CREATE TABLE fine (id int PRIMARY KEY);
      CREATE PUBLICATION p_tables FOR TABLE "Orders", orders;
      CREATE PUBLICATION p_cols FOR TABLE cols;
      CREATE PUBLICATION p_res FOR TABLE res;
      CREATE PUBLICATION p_late FOR TABLE orders`);
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
    dir.remove();
  });

  const cases: [string, string, RegExp][] = [
    ['tables differing in case', 'p_tables', /public\.Orders and public\.orders|public\.orders and public\.Orders/],
    ['columns differing in case', 'p_cols', /columns "V" and "v" of public\.cols map to the same/],
    ['a column with the reserved prefix', 'p_res', /column "_floe_lsn" of public\.res uses the prefix _floe_/],
  ];
  const destinations: [string, () => string][] = [
    ['DuckDB', () => `duckdb:${join(dir.path, `w${Math.random().toString(36).slice(2)}.duckdb`)}`],
    ['Snowflake', () => sf.url()],
  ];

  for (const [destination, url] of destinations) {
    // Snowflake keeps a mixed-case table name quoted ("PUBLIC_Orders" beside PUBLIC_ORDERS): no clash there,
    // and the emulator, whose identifiers match case-insensitively, cannot show it (docs/emulator.md).
    const mine = destination === 'Snowflake' ? cases.filter(([what]) => what !== 'tables differing in case') : cases;
    it.each(mine)(`${destination}: refuses %s in one line, no slot left`, async (_what, publication, expected) => {
      const r = await runFloe([
        ...['replicate', '--source', db.url, '--publication', publication, '--slot', 'names_slot'],
        ...['--state', 'memory', '--metrics-port', '0', '--destination', url()],
      ]);
      // The JSON log goes to stderr too; the error for the operator is the one `floe:` line.
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('floe:'));
      expect(r.code, r.stderr).toBe(1);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(expected);
      expect(await db.sql(`SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'names_slot'`)).toEqual([]);
    });
  }

  it('DuckDB: a table joining the publication later under a clashing name stops the pipeline; its rows never mix', async () => {
    const destination = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({
      source: { url: db.url },
      publication: 'p_late',
      slotName: 'names_late',
      destination,
      publicationPollMs: 200,
    });
    let failure: Error | undefined;
    void p.done.catch((err: Error) => (failure = err));
    try {
      await waitFor('orders replicated', async () => (await destination.query(`SELECT count(*) FROM public.orders`))[0]![0] === 1n);
      await db.sql(`ALTER PUBLICATION p_late ADD TABLE "Orders"`);
      await waitFor('the pipeline to stop', () => failure !== undefined);
      expect(failure!.message).toMatch(/public\.orders and public\.Orders map to the same DuckDB table/);
      expect(await destination.query(`SELECT id, v FROM public.orders`)).toEqual([[1, 'lower']]);
    } finally {
      await p.stop().catch(() => undefined);
      await destination.close();
      await db.dropSlot('names_late');
    }
  });
});
