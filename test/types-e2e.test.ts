/**
 * Snapshot + stream equality for every row of the type table: the same values
 * reach the target once through the snapshot (COPY) and once through the
 * stream (pgoutput); both must equal the type table's conversion of the
 * source's own text for that value (type-map.test.ts checks that conversion
 * against PostgreSQL value by value).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { CASES, SETUP_SQL, valueText } from './helpers/type-cases.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { quoteIdent } from '../src/schema/sql-quote.js';
import { SchemaCache, SESSION_OPTIONS } from '../src/postgres/source.js';
import { pgArrayToJson } from '../src/schema/pg-array.js';

const STREAM_OFFSET = 1000;

describe.each(testClusters('every'))('every type through snapshot and stream on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let client: pg.Client;
  let p: RunningPipeline;
  let dest: DuckDbDestination;
  const cases = CASES.filter((c) => cluster.major >= (c.minMajor ?? 0)).map((c, index) => ({
    ...c,
    index,
    values: c.values.filter((v) => v === null || typeof v === 'string' || cluster.major >= v.minMajor).map(valueText),
  }));

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'types');
    client = new pg.Client({ connectionString: db.url, options: SESSION_OPTIONS, types: { getTypeParser: () => (v: string) => v } });
    await client.connect();
    await client.query(SETUP_SQL);
    const insert = async (c: (typeof cases)[number], offset: number) => {
      const params = c.values.flatMap((v, i) => [offset + i, v]);
      await client.query(
        `INSERT INTO t_${c.index} (id, v) VALUES ${c.values.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ')}`,
        params,
      );
    };
    for (const c of cases) {
      await client.query(`CREATE TABLE t_${c.index} (id int PRIMARY KEY, v ${c.decl})`);
      await insert(c, 0);
    }
    await client.query(`CREATE PUBLICATION types_pub FOR TABLE ${cases.map((c) => `t_${c.index}`).join(', ')}`);
    dest = new DuckDbDestination({ path: ':memory:' });
    p = startPipeline({ source: { url: db.url }, publication: 'types_pub', slotName: 'types_slot', destination: dest });
    await waitFor(
      'snapshot of every table',
      async () => {
        for (const c of cases)
          if ((await dest.query(`SELECT count(*) FROM public.t_${c.index}`))[0]![0] !== BigInt(c.values.length)) return false;
        return true;
      },
      90_000,
    );
    for (const c of cases) await insert(c, STREAM_OFFSET);
    await waitFor(
      'stream of every table',
      async () => {
        for (const c of cases)
          if ((await dest.query(`SELECT count(*) FROM public.t_${c.index}`))[0]![0] !== BigInt(2 * c.values.length)) return false;
        return true;
      },
      90_000,
    );
  }, 180_000);

  afterAll(async () => {
    await p?.stop();
    await dest?.close();
    await db?.dropSlot('types_slot');
    await client?.end();
    await db?.drop();
  });

  it('snapshot rows, stream rows and the source text agree value by value', async () => {
    const cache = new SchemaCache(client);
    const tables = new Map((await cache.publishedTables('types_pub')).map((t) => [t.name, t]));
    const failures: string[] = [];
    for (const c of cases) {
      const table = tables.get(`t_${c.index}`)!;
      const col = table.columns.find((x) => x.name === 'v')!;
      // The source's own text for each value, converted by the type table in DuckDB.
      const src = (
        await client.query<{ id: number; v: string | null }>(`SELECT id, v FROM t_${c.index} WHERE id < ${STREAM_OFFSET} ORDER BY id`)
      ).rows;
      for (const { id: idText, v } of src) {
        const row = { id: Number(idText), v };
        const text = row.v === null ? null : col.type.isArray ? pgArrayToJson(row.v) : row.v;
        const lit = text === null ? 'NULL::VARCHAR' : `'${text.replaceAll("'", "''")}'::VARCHAR`;
        const [expected] = await dest.query(`SELECT CAST(${col.type.duckdbCast(lit)} AS VARCHAR)`);
        const got = await dest.query(
          `SELECT id, CAST(${quoteIdent('v')} AS VARCHAR) FROM public.t_${c.index} WHERE id IN (${row.id}, ${row.id + STREAM_OFFSET}) ORDER BY id`,
        );
        const want = [
          [row.id, expected![0]],
          [row.id + STREAM_OFFSET, expected![0]],
        ];
        if (JSON.stringify(got) !== JSON.stringify(want))
          failures.push(`${c.decl} ${JSON.stringify(row.v)}: got ${JSON.stringify(got)} want ${JSON.stringify(want)}`);
      }
    }
    expect(failures).toEqual([]);
  });
});
