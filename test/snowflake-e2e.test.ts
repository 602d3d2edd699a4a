/**
 * PostgreSQL → Snowflake emulator, end to end through the real wire clients (JWT, Snowpipe Streaming,
 * SQL API): snapshot and stream, targets equal the source (merge semantics: updates, deletes, unchanged
 * TOAST across a primary-key change, truncate, keyless history), the journal holds every change, and
 * every value of the type table arrives through snapshot and stream alike.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { CASES, SETUP_SQL, valueText } from './helpers/type-cases.js';
import type { SnowflakeDestination } from '../src/destination/snowflake/snowflake-destination.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { snowflakeCast } from '../src/destination/snowflake/casts.js';
import { literal } from '../src/destination/snowflake/sql.js';
import { SchemaCache, SESSION_OPTIONS } from '../src/postgres/source.js';
import { pgArrayToJson } from '../src/schema/pg-array.js';

const cluster = testClusters()[0]!;

describe('PostgreSQL → Snowflake emulator', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  let p: RunningPipeline | undefined;
  let dest: SnowflakeDestination;
  const T = (name: string) => `"ANALYTICS"."PUBLIC"."PUBLIC_${name}"`;
  const J = (name: string) => `"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_${name}"`;

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfe2e');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await p?.stop();
    await dest?.close();
    await db?.dropSlot('sf_e2e');
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('snapshot + stream: targets equal the source and the journal holds every change', async () => {
    await db.sql(`
      CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric(10,2), doc jsonb, tags text[], data bytea, at timestamptz);
      INSERT INTO orders SELECT g, 'new', g * 1.5, jsonb_build_object('n', g), ARRAY['a', 'b'], '\\xdead', '2024-01-02 03:04:05+00'
        FROM generate_series(1, 50) g;
      CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
      ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
      INSERT INTO docs VALUES (1, 'a', repeat('snapshot body ', 2000)), (2, 'b', 'short');
      CREATE TABLE trunc (id int PRIMARY KEY, v text);
      INSERT INTO trunc VALUES (1, 'x'), (2, 'y');
      CREATE TABLE hist (a int, b text);
      ALTER TABLE hist REPLICA IDENTITY FULL;
      INSERT INTO hist VALUES (1, 'one');
      CREATE PUBLICATION sf_pub FOR TABLE orders, docs, trunc, hist;`);
    dest = sf.destination();
    p = startPipeline({ source: { url: db.url }, publication: 'sf_pub', slotName: 'sf_e2e', destination: dest });
    const count = async (t: string) => Number((await sf.rows(`SELECT COUNT(*) FROM ${T(t)}`))[0]![0]);
    await waitFor('snapshot merged', async () => (await count('ORDERS')) === 50 && (await count('DOCS')) === 2, 60_000);

    await db.sql(`
      UPDATE orders SET status = 'paid', doc = '{"n": 1, "paid": true}' WHERE id <= 10;
      DELETE FROM orders WHERE id > 45;
      INSERT INTO orders VALUES (100, 'late', 9.99, NULL, '{}', NULL, 'infinity');
      BEGIN; UPDATE docs SET title = 'a2' WHERE id = 1; UPDATE docs SET id = 10 WHERE id = 1; COMMIT;
      TRUNCATE trunc; INSERT INTO trunc VALUES (3, 'z');
      UPDATE hist SET b = 'uno' WHERE a = 1; INSERT INTO hist VALUES (2, 'two');`);
    await waitFor(
      'stream merged',
      async () =>
        (await count('ORDERS')) === 46 &&
        (await sf.rows(`SELECT "ID" FROM ${T('DOCS')} ORDER BY "ID"`)).map((r) => r[0]).join() === '2,10' &&
        (await count('TRUNC')) === 1 &&
        // hist's changes come last: waiting for them keeps a slow machine from reading its history early.
        (await count('HIST')) === 5,
      60_000,
    );
    expect(await sf.rows(`SELECT "STATUS", COUNT(*) FROM ${T('ORDERS')} GROUP BY "STATUS" ORDER BY "STATUS"`)).toEqual([
      ['late', '1'],
      ['new', '35'],
      ['paid', '10'],
    ]);
    const [first] = await sf.rows(`SELECT "ID", "TOTAL", "DOC", "TAGS", "DATA", "AT" FROM ${T('ORDERS')} WHERE "ID" = 1`);
    expect([first![0], first![1], JSON.parse(first![2]!), JSON.parse(first![3]!), first![4]]).toEqual([
      '1',
      '1.50',
      { n: 1, paid: true },
      ['a', 'b'],
      'DEAD',
    ]);
    expect(first![5]).toMatch(/^1704164645\.0+ 1440$/); // 2024-01-02 03:04:05 UTC
    // infinity has no TIMESTAMP_TZ value: NULL in the target, exact text in the journal.
    expect(await sf.rows(`SELECT "AT" FROM ${T('ORDERS')} WHERE "ID" = 100`)).toEqual([[null]]);
    expect(await sf.rows(`SELECT "AT" FROM ${J('ORDERS')} WHERE "ID" = '100'`)).toEqual([['infinity']]);
    // The key move kept the TOAST value it did not resend, and the title of the same transaction.
    expect(
      await sf.rows(`SELECT "ID", "TITLE", "BODY" = ${literal('snapshot body '.repeat(2000))} FROM ${T('DOCS')} ORDER BY "ID"`),
    ).toEqual([
      ['2', 'b', 'false'],
      ['10', 'a2', 'true'],
    ]);
    expect(await sf.rows(`SELECT "ID", "V" FROM ${T('TRUNC')}`)).toEqual([['3', 'z']]);
    // Keyless: typed history, in load order (after the marker of the snapshot's start).
    expect(await sf.rows(`SELECT "_FLOE_OP", "A", "B" FROM ${T('HIST')} ORDER BY "_FLOE_SEQ"`)).toEqual([
      ['t', null, null],
      ['r', '1', 'one'],
      ['d', '1', 'one'],
      ['u', '1', 'uno'],
      ['i', '2', 'two'],
    ]);
    // No key twice; the journal holds the snapshot and every streamed change exactly once.
    expect(await sf.rows(`SELECT "ID" FROM ${T('ORDERS')} GROUP BY "ID" HAVING COUNT(*) > 1`)).toEqual([]);
    expect(await sf.rows(`SELECT "_FLOE_OP", COUNT(*) FROM ${J('ORDERS')} GROUP BY "_FLOE_OP" ORDER BY "_FLOE_OP"`)).toEqual([
      ['d', '5'],
      ['i', '1'],
      ['r', '50'],
      ['t', '1'], // the marker of the snapshot's start
      ['u', '10'],
    ]);
    expect(
      await sf.rows(
        `SELECT "_FLOE_LSN", "_FLOE_ORDINAL" FROM ${J('ORDERS')} GROUP BY "_FLOE_LSN", "_FLOE_ORDINAL", "ID" HAVING COUNT(*) > 1`,
      ),
    ).toEqual([]);
    await p.stop();
    p = undefined;
  }, 120_000);
});

describe('every type through snapshot and stream into Snowflake', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let sf: SnowflakeFixture;
  let p: RunningPipeline | undefined;
  let dest: SnowflakeDestination;
  const STREAM_OFFSET = 1000;
  const cases = CASES.filter((c) => cluster.major >= (c.minMajor ?? 0)).map((c, index) => ({
    ...c,
    index,
    values: c.values.filter((v) => v === null || typeof v === 'string' || cluster.major >= v.minMajor).map(valueText),
  }));

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sftypes');
    sf = await snowflakeFixture();
    client = new pg.Client({ connectionString: db.url, options: SESSION_OPTIONS, types: { getTypeParser: () => (v: string) => v } });
    await client.connect();
    await client.query(SETUP_SQL);
    // One table holds every case as a column, so the test stays fast against one warehouse.
    await client.query(`CREATE TABLE types (id int PRIMARY KEY, ${cases.map((c) => `c${c.index} ${c.decl}`).join(', ')})`);
    const rows = Math.max(...cases.map((c) => c.values.length));
    const insert = async (offset: number) => {
      for (let r = 0; r < rows; r++) {
        const cols = cases.filter((c) => r < c.values.length);
        await client.query(
          `INSERT INTO types (id, ${cols.map((c) => `c${c.index}`).join(', ')}) VALUES (${offset + r}, ${cols.map((_, i) => `$${i + 1}`).join(', ')})`,
          cols.map((c) => c.values[r]),
        );
      }
    };
    await insert(0);
    await client.query(`CREATE PUBLICATION types_pub FOR TABLE types`);
    dest = sf.destination();
    p = startPipeline({ source: { url: db.url }, publication: 'types_pub', slotName: 'sf_types', destination: dest });
    const count = async () => Number((await sf.rows(`SELECT COUNT(*) FROM "ANALYTICS"."PUBLIC"."PUBLIC_TYPES"`))[0]![0]);
    await waitFor('snapshot', async () => (await count()) === rows, 60_000);
    await insert(STREAM_OFFSET);
    await waitFor('stream', async () => (await count()) === 2 * rows, 60_000);
  }, 120_000);

  afterAll(async () => {
    await p?.stop();
    await dest?.close();
    await db?.dropSlot('sf_types');
    await client?.end();
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('snapshot rows, stream rows and the cast of the source text agree value by value', async () => {
    const table = (await new SchemaCache(client).publishedTables('types_pub'))[0]!;
    const failures: string[] = [];
    const src = (await client.query<Record<string, string | null>>(`SELECT * FROM types WHERE id < ${STREAM_OFFSET} ORDER BY id`)).rows;
    for (const c of cases) {
      const col = table.columns.find((x) => x.name === `c${c.index}`)!;
      const name = `"C${c.index}"`;
      for (const row of src.slice(0, c.values.length)) {
        const v = row[`c${c.index}`] ?? null;
        const text = v === null ? null : col.type.isArray ? pgArrayToJson(v) : v;
        const [expected] = text === null ? [[null]] : await sf.rows(`SELECT ${snowflakeCast(col.type, literal(text))}`);
        const got = await sf.rows(
          `SELECT "ID", ${name} FROM "ANALYTICS"."PUBLIC"."PUBLIC_TYPES" WHERE "ID" IN (${row.id}, ${Number(row.id) + STREAM_OFFSET}) ORDER BY "ID"`,
        );
        const want = [
          [String(row.id), expected![0]],
          [String(Number(row.id) + STREAM_OFFSET), expected![0]],
        ];
        if (JSON.stringify(got) !== JSON.stringify(want))
          failures.push(`${c.decl} ${JSON.stringify(v)}: got ${JSON.stringify(got)} want ${JSON.stringify(want)}`);
      }
    }
    expect(failures).toEqual([]);
  }, 120_000);
});

describe('soft deletes into Snowflake', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfsoft');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('a deleted row stays with _FLOE_DELETED and its latest image; a re-insert revives it; truncate marks all', async () => {
    await db.sql(
      `CREATE TABLE soft (id int PRIMARY KEY, v text); INSERT INTO soft VALUES (1, 'a'), (2, 'b'); CREATE PUBLICATION soft_pub FOR TABLE soft`,
    );
    const dest = sf.destination('&delete_mode=soft');
    const p = startPipeline({ source: { url: db.url }, publication: 'soft_pub', slotName: 'sf_soft', destination: dest });
    const T = '"ANALYTICS"."PUBLIC"."PUBLIC_SOFT"';
    const state = () => sf.rows(`SELECT "ID", "V", "_FLOE_DELETED" FROM ${T} ORDER BY "ID"`);
    try {
      await waitFor('snapshot', async () => (await state()).length === 2, 60_000);
      await db.sql(
        `BEGIN; UPDATE soft SET v = 'a2' WHERE id = 1; DELETE FROM soft WHERE id = 1; COMMIT; DELETE FROM soft WHERE id = 2; INSERT INTO soft VALUES (3, 'c')`,
      );
      await waitFor('deletes merged', async () => (await state()).length === 3, 30_000);
      expect(await state()).toEqual([
        ['1', 'a2', 'true'],
        ['2', 'b', 'true'],
        ['3', 'c', 'false'],
      ]);
      await db.sql(`INSERT INTO soft VALUES (2, 'b2')`);
      await waitFor('revived', async () => JSON.stringify((await state())[1]) === '["2","b2","false"]', 30_000);
      await db.sql(`TRUNCATE soft`);
      await waitFor('truncate merged', async () => (await state()).every((r) => r[2] === 'true'), 30_000);
      expect((await state()).length).toBe(3);
    } finally {
      await p.stop().catch(() => undefined);
      await dest.close();
      await db.dropSlot('sf_soft');
    }
  }, 90_000);
});

describe('journal retention', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfret');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('deletes journal rows once their merge is older than journal_retention; targets keep everything', async () => {
    await db.sql(
      `CREATE TABLE ret (id int PRIMARY KEY, v text); INSERT INTO ret VALUES (1, 'a'); CREATE PUBLICATION ret_pub FOR TABLE ret`,
    );
    const dest = sf.destination('&journal_retention=1ms');
    const p = startPipeline({ source: { url: db.url }, publication: 'ret_pub', slotName: 'sf_ret', destination: dest });
    try {
      const T = '"ANALYTICS"."PUBLIC"."PUBLIC_RET"';
      const J = '"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_RET"';
      await waitFor('snapshot', async () => (await sf.rows(`SELECT COUNT(*) FROM ${T}`))[0]![0] === '1', 60_000);
      await db.sql(`INSERT INTO ret SELECT g, 'b' FROM generate_series(2, 100) g; UPDATE ret SET v = 'c' WHERE id = 1`);
      await waitFor('merged', async () => (await sf.rows(`SELECT COUNT(*), MIN("V") FROM ${T}`))[0]!.join() === '100,b', 60_000);
      await waitFor('journal emptied by retention', async () => (await sf.rows(`SELECT COUNT(*) FROM ${J}`))[0]![0] === '0', 30_000);
      expect(await sf.rows(`SELECT "V" FROM ${T} WHERE "ID" = 1`)).toEqual([['c']]);
      // New changes after retention still merge, on top of what the target holds.
      await db.sql(`UPDATE ret SET v = 'd' WHERE id = 2`);
      await waitFor('merged again', async () => (await sf.rows(`SELECT "V" FROM ${T} WHERE "ID" = 2`))[0]![0] === 'd', 30_000);
      expect((await sf.rows(`SELECT COUNT(*) FROM ${T}`))[0]![0]).toBe('100');
    } finally {
      await p.stop().catch(() => undefined);
      await dest.close();
      await db.dropSlot('sf_ret');
    }
  }, 90_000);
});
