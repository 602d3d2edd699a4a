/**
 * Binary streaming end to end: the same changes replicated by two pipelines from one database, one
 * with `binary: 'off'` and one with `binary: 'on'`, must leave identical journals (every value's exact
 * text, positions, ops, unchanged-TOAST lists) and identical targets. Every type of the type table and
 * every edge value of the binary decoder tests, in inserts, key-changing updates (old key tuples),
 * REPLICA IDENTITY FULL updates and deletes (old tuples), unchanged TOAST, small transactions and ones
 * the server streams while they run (logical_decoding_work_mem 64 kB: decoded from floe's spool). The
 * walsender's own record of the START_REPLICATION command shows that binary was requested and kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, testClusters, type TestDatabase } from './harness/database.js';
import { startPipeline, tempDir, type RunningPipeline } from './helpers/pipeline.js';
import { waitForSlotPastWrites, walsenderCommand } from './helpers/slot.js';
import { waitFor } from './helpers/wait.js';
import { CASES, SETUP_SQL, type Value } from './helpers/type-cases.js';
import { EXTRA_CASES } from './helpers/binary-cases.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { SESSION_OPTIONS } from '../src/postgres/source.js';
import { binaryDecoderFor } from '../src/postgres/binary-values.js';
import { TYPE_CATALOG_SQL, typeInfoFromRow, type PgTypeInfo } from '../src/schema/type-map.js';

const valueText = (v: Value): string | null => (v === null || typeof v === 'string' ? v : v.text);
const valueMajor = (v: Value): number => (v !== null && typeof v === 'object' ? v.minMajor : 0);

interface Column {
  readonly name: string;
  readonly decl: string;
  readonly values: readonly (string | null)[];
}

describe.each(testClusters('every'))('binary streaming on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let client: pg.Client;
  const pipelines: RunningPipeline[] = [];
  // The comparison reads each whole journal, TOASTed values included, into one result; DuckDB holds a
  // result in memory, and an in-memory database's tables count against the same limit.
  const text = new DuckDbDestination({ path: ':memory:', memoryLimit: '256MB' });
  const binary = new DuckDbDestination({ path: ':memory:', memoryLimit: '256MB' });
  const spool = tempDir('floe-spool-binary-');
  const cases = [...CASES, ...EXTRA_CASES]
    .filter((c) => (c.minMajor ?? 0) <= cluster.major)
    .map((c) => ({ decl: c.decl, values: c.values.filter((v) => valueMajor(v) <= cluster.major).map(valueText) }));
  /** Cases binary mode refuses by design (their tables would keep the stream in text mode). */
  const refused: string[] = [];
  let columns: Column[] = [];
  /** Tables of at most 20 of the columns (DuckDB merges of far wider tables outgrow DuckDB's default memory limit). */
  const tables: { name: string; columns: Column[] }[] = [];

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'binstream');
    // The walsender reads the database's settings: larger transactions arrive in stream blocks.
    await db.sql(`ALTER DATABASE "${db.name}" SET logical_decoding_work_mem = '64kB'`);
    client = new pg.Client({ connectionString: db.url, options: SESSION_OPTIONS });
    await client.connect();
    await client.query(SETUP_SQL);
    // Which declared types binary mode decodes: a probe table, its column types, the catalog.
    await client.query(`CREATE TABLE probe (${cases.map((c, i) => `c${i} ${c.decl}`).join(', ')})`);
    const types = (
      await client.query<{ oid: string }>(
        `SELECT atttypid::int8::text AS oid FROM pg_attribute WHERE attrelid = 'probe'::regclass AND attnum > 0 ORDER BY attnum`,
      )
    ).rows.map((r) => Number(r.oid));
    const catalog = new Map<number, PgTypeInfo>();
    for (const row of (await client.query(TYPE_CATALOG_SQL, [types])).rows) catalog.set(Number(row.oid), typeInfoFromRow(row));
    await client.query('DROP TABLE probe');
    const supported = cases.filter((c, i) => {
      const ok = binaryDecoderFor(types[i]!, { serverMajor: cluster.major, lookup: (o) => catalog.get(o) }).ok;
      if (!ok) refused.push(c.decl);
      return ok;
    });
    columns = supported.map((c, i) => ({ name: `c${i}`, decl: c.decl, values: c.values }));
    for (let k = 0; k * 20 < columns.length; k++) {
      const group = columns.slice(k * 20, k * 20 + 20);
      const defs = group.map((c) => `${c.name} ${c.decl}`).join(', ');
      for (const name of [`g${k}`, `g${k}_full`]) {
        await client.query(`CREATE TABLE ${name} (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, big text, ${defs})`);
        tables.push({ name, columns: group });
      }
      await client.query(`ALTER TABLE g${k}_full REPLICA IDENTITY FULL`);
    }
    await client.query(`CREATE PUBLICATION binpub FOR TABLE ${tables.map((t) => t.name).join(', ')}`);

    const common = { source: { url: db.url }, publication: 'binpub', spoolDir: spool.path };
    pipelines.push(startPipeline({ ...common, slotName: 'bin_off', destination: text, binary: 'off' }));
    pipelines.push(startPipeline({ ...common, slotName: 'bin_on', destination: binary, binary: 'on' }));
    // Both stream (slots created, snapshots of the empty tables done) before the first change.
    await waitForSlotPastWrites(db, 'bin_off');
    await waitForSlotPastWrites(db, 'bin_on');
    await changes();
    await waitForSlotPastWrites(db, 'bin_off', 120_000);
    await waitForSlotPastWrites(db, 'bin_on', 120_000);
  }, 240_000);

  afterAll(async () => {
    for (const p of pipelines) await p.stop();
    await text.close();
    await binary.close();
    spool.remove();
    await db?.dropSlot('bin_off');
    await db?.dropSlot('bin_on');
    await client?.end();
    await db?.drop();
  });

  /** Row r holds the r-th value of every case that has one (NULL elsewhere); rows 0..19 a TOASTed `big`. */
  async function changes(): Promise<void> {
    for (const { name: table, columns } of tables) {
      // At least 10 rows, so that some survive the deletes below.
      const rows = Math.max(10, ...columns.map((c) => c.values.length));
      const select = columns.map((c, i) => `u.v${i}::${c.decl}`).join(', ');
      const arrays = columns.map((_, i) => `$${i + 2}::text[]`).join(', ');
      // Transactions of 500 rows: the first ones (every column set) exceed 64 kB and are streamed, later ones are not.
      for (let lo = 0; lo < rows; lo += 500) {
        const hi = Math.min(rows, lo + 500);
        const ids = Array.from({ length: hi - lo }, (_, k) => lo + k);
        await client.query(
          `INSERT INTO ${table} (id, big, ${columns.map((c) => c.name).join(', ')})
             SELECT u.id, CASE WHEN u.id < 20 THEN (SELECT string_agg(md5(u.id::text || g::text), '') FROM generate_series(1, 400) g) END,
                    ${select}
               FROM unnest($1::int[], ${arrays}) AS u(id, ${columns.map((_, i) => `v${i}`).join(', ')})`,
          [ids, ...columns.map((c) => ids.map((r) => c.values[r] ?? null))],
        );
      }
      // Unchanged TOAST ('u') in the new tuple; FULL: the whole old tuple in binary.
      await client.query(`UPDATE ${table} SET n = n + 1 WHERE id < 600`);
      // Key changes: the old key tuple (DEFAULT) or old tuple (FULL), then the new one.
      await client.query(`UPDATE ${table} SET id = id + 100000 WHERE id % 5 = 1`);
      await client.query(`DELETE FROM ${table} WHERE id % 3 = 0`);
    }
  }

  const rowsOf = async (dest: DuckDbDestination, sql: string): Promise<string[]> => (await dest.query(sql)).map((r) => String(r[0]));

  it('requests binary on one pipeline and text on the other, and the binary one never left binary', async () => {
    expect(await walsenderCommand(db, 'bin_on')).toMatch(/binary 'true'/);
    expect(await walsenderCommand(db, 'bin_off')).toMatch(/^START_REPLICATION/);
    expect(await walsenderCommand(db, 'bin_off')).not.toMatch(/binary/);
    // Some transactions reached the binary pipeline in stream blocks (decoded from its spool at their commit).
    await waitFor('the slot statistics to count streamed transactions', async () => {
      const [s] = await db.sql<{ n: string }>(`SELECT stream_txns::text AS n FROM pg_stat_replication_slots WHERE slot_name = 'bin_on'`);
      return Number(s?.n) > 0;
    });
  });

  it('refuses exactly the documented types of the type table', () => {
    expect(refused).toEqual(['money', ...(cluster.major > 18 ? ['pg_lsn'] : [])]);
    expect(columns.length).toBeGreaterThan(140);
    expect(tables.length).toBe(2 * Math.ceil(columns.length / 20));
  });

  it('journals are identical, value by value, positions and unchanged lists included', async () => {
    let unchanged = 0;
    for (const { name, columns } of tables) unchanged += await sameJournal(name, columns);
    // Unchanged TOAST reached both (DEFAULT identity; FULL sends the old value along).
    expect(unchanged).toBeGreaterThan(0);
  });

  async function sameJournal(table: string, columns: readonly Column[]): Promise<number> {
    const sql = `SELECT CAST(j AS VARCHAR) FROM (SELECT * EXCLUDE (_floe_seq) FROM _floe_journal."public.${table}") j
                  ORDER BY j._floe_lsn, j._floe_ordinal`;
    const want = await rowsOf(text, sql);
    const got = await rowsOf(binary, sql);
    expect(want.length, table).toBeGreaterThan(0);
    // Something of every column went through (the comparison is not over NULLs alone).
    for (const c of columns) {
      const [n] = await rowsOf(binary, `SELECT count(${c.name}) FROM _floe_journal."public.${table}"`);
      expect(Number(n), `${c.decl} values journaled`).toBeGreaterThan(0);
    }
    const diff = got.flatMap((g, i) => (g === want[i] ? [] : [`${table} row ${i}:\n  text:   ${want[i]}\n  binary: ${g}`]));
    expect(diff.slice(0, 3)).toEqual([]);
    expect(got.length, table).toBe(want.length);
    const [unchanged] = await rowsOf(binary, `SELECT count(*) FROM _floe_journal."public.${table}" WHERE len(_floe_unchanged) > 0`);
    return Number(unchanged);
  }

  it('targets are identical', async () => {
    // Both pipelines merge on their own cadence: merge now so both targets hold every journal row.
    await text.merge();
    await binary.merge();
    for (const { name } of tables) {
      const sql = `SELECT CAST(t AS VARCHAR) FROM (SELECT * EXCLUDE (_floe_synced_at) FROM public.${name}) t ORDER BY t.id`;
      const want = await rowsOf(text, sql);
      expect(want.length, name).toBeGreaterThan(0);
      expect(await rowsOf(binary, sql), name).toEqual(want);
    }
  });
});
