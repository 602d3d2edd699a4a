/**
 * Which key a table is merged on, and key values the usual paths get wrong (issue 10, keys half):
 * replica identity USING INDEX, TOASTed keys, a key moved onto a key deleted in the same window, key
 * values the target type cannot hold, tables that gain or lose their key, and JSON. Every scenario runs
 * through the replicate path into DuckDB and into the Snowflake emulator, from the same source, and
 * both targets must equal what PostgreSQL holds.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { memoryLog, startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import type { Destination } from '../src/destination/destination.js';

const cluster = testClusters()[0]!;

type Row = (string | null)[];
/** A filter on a target, given a function that names a column as the destination spells it, and the target's name. */
type Where = (col: (name: string) => string, table: string) => string;

/** Long values shown by length and ends, so a failure message stays readable. */
const short = (v: unknown): string | null => {
  if (v === null || v === undefined) return null;
  const s = String(v);
  return s.length > 80 ? `${s.slice(0, 8)}…${s.slice(-8)} (${s.length})` : s;
};
const long = (s: string): string => short(s)!;

/** A pipeline into one destination, and how to read a target table from it as text. */
interface Target {
  readonly kind: 'duckdb' | 'snowflake';
  readonly pipeline: RunningPipeline;
  readonly destination: Destination;
  /** The pipeline's recent log, shown when a step fails. */
  logTail(): string;
  /** The rows of `table`'s target, the given columns as text, ordered by the first. */
  rows(table: string, columns: readonly string[], where?: Where): Promise<Row[]>;
}

describe('merge keys into DuckDB and Snowflake', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  let seq = 0;

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'keys');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  interface Step {
    /** Source statements run once, before every target is checked. */
    readonly sql?: string;
    readonly table: string;
    readonly columns: readonly string[];
    readonly want: Row[];
    readonly what: string;
    /** A destination whose target differs from the source by a documented rule expects these rows instead. */
    readonly wantIn?: Partial<Record<Target['kind'], Row[]>>;
    readonly where?: Where;
    /** Applied to the Snowflake rows before comparing. */
    readonly compact?: (rows: Row[]) => Row[];
  }

  /** Replicates `tables` into DuckDB and into Snowflake at once (one slot each); after each step both targets must show `want`. */
  async function scenario(tables: string, steps: readonly Step[]): Promise<void> {
    const n = ++seq;
    await db.sql(`CREATE PUBLICATION kp${n} FOR TABLE ${tables}`);
    const [duckLog, sfLog] = [memoryLog(), memoryLog()];
    const duck = new DuckDbDestination({ path: ':memory:', log: duckLog.log });
    const sfDest = sf.destination('', sfLog.log);
    const targets: Target[] = [
      {
        kind: 'duckdb',
        destination: duck,
        logTail: duckLog.tail,
        pipeline: startPipeline({
          source: { url: db.url },
          publication: `kp${n}`,
          slotName: `kd${n}`,
          destination: duck,
          log: duckLog.log,
        }),
        rows: async (table, columns, where) =>
          (
            await duck.query(
              `SELECT ${columns.map((c) => `"${c}"::VARCHAR`).join(', ')} FROM public."${table}" ${where ? `WHERE ${where((c) => `"${c}"`, `public."${table}"`)}` : ''} ORDER BY 1`,
            )
          ).map((r) => r.map(short)),
      },
      {
        kind: 'snowflake',
        destination: sfDest,
        logTail: sfLog.tail,
        pipeline: startPipeline({
          source: { url: db.url },
          publication: `kp${n}`,
          slotName: `ks${n}`,
          destination: sfDest,
          log: sfLog.log,
        }),
        rows: async (table, columns, where) =>
          (
            await sf.rows(
              `SELECT ${columns.map((c) => `"${c.toUpperCase()}"`).join(', ')} FROM "ANALYTICS"."PUBLIC"."PUBLIC_${table.toUpperCase()}" ${where ? `WHERE ${where((c) => `"${c.toUpperCase()}"`, `"ANALYTICS"."PUBLIC"."PUBLIC_${table.toUpperCase()}"`)}` : ''} ORDER BY 1`,
            )
          ).map((r) => r.map(short)),
      },
    ];
    try {
      for (const step of steps) {
        if (step.sql) await db.sql(step.sql);
        for (const t of targets)
          await expectRows(
            t,
            step.table,
            step.columns,
            step.wantIn?.[t.kind] ?? step.want,
            `${t.kind}: ${step.what}`,
            t.kind === 'snowflake' ? step.compact : undefined,
            step.where,
          );
      }
    } finally {
      for (const t of targets) await t.pipeline.stop().catch(() => undefined);
      await duck.close();
      await sfDest.close();
      await db.dropSlot(`kd${n}`);
      await db.dropSlot(`ks${n}`);
    }
  }

  /** Waits until the target equals `want` (the pipeline's failure, if any, ends the wait at once). */
  async function expectRows(
    t: Target,
    table: string,
    columns: readonly string[],
    want: Row[],
    what: string,
    map: (rows: Row[]) => Row[] = (rows) => rows,
    where?: Where,
  ): Promise<void> {
    let failed: unknown;
    t.pipeline.done.catch((err) => (failed = err));
    let last: Row[] | undefined;
    try {
      await waitFor(
        what,
        async () => {
          if (failed) return true;
          last = map(await t.rows(table, columns, where));
          return JSON.stringify(last) === JSON.stringify(want);
        },
        // A Snowflake step once timed out at 60 s in a loaded CI run (cause not found; not reproduced alone or under CPU stress).
        120_000,
      );
    } catch (err) {
      // A table not there yet or a query error: the message says which; else the comparison shows the difference.
      if (last === undefined) throw new Error(`${(err as Error).message}\n--- the pipeline's recent log:\n${t.logTail()}`);
    }
    if (failed) throw new Error(`${what}: the pipeline failed: ${(failed as Error).message}`);
    expect(last, `${what}\n--- the pipeline's recent log:\n${t.logTail()}`).toEqual(want);
  }

  it('REPLICA IDENTITY USING INDEX: the merge key is the identity index, so deletes and key updates apply', async () => {
    await db.sql(`CREATE TABLE ri (id int PRIMARY KEY, email text NOT NULL, v text);
      CREATE UNIQUE INDEX ri_email ON ri (email); ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_email;
      INSERT INTO ri VALUES (1, 'a', 'one'), (2, 'b', 'two'), (3, 'c', 'three')`);
    const cols = ['email', 'id', 'v'];
    await scenario('ri', [
      {
        table: 'ri',
        columns: cols,
        want: [
          ['a', '1', 'one'],
          ['b', '2', 'two'],
          ['c', '3', 'three'],
        ],
        what: 'snapshot',
      },
      {
        sql: `DELETE FROM ri WHERE id = 1; UPDATE ri SET email = 'b2' WHERE id = 2; UPDATE ri SET v = 'THREE' WHERE id = 3`,
        table: 'ri',
        columns: cols,
        want: [
          ['b2', '2', 'two'],
          ['c', '3', 'THREE'],
        ],
        what: 'delete and identity change merged',
      },
    ]);
  }, 180_000);

  it('a TOASTed key that did not change stays the key (filled from the old key tuple)', async () => {
    await db.sql(`CREATE TABLE tk (k text PRIMARY KEY, v int); ALTER TABLE tk ALTER k SET STORAGE EXTERNAL;
      INSERT INTO tk VALUES (repeat('k', 2560), 1), ('short', 1)`);
    const key = long('k'.repeat(2560));
    await scenario('tk', [
      {
        table: 'tk',
        columns: ['k', 'v'],
        want: [
          [key, '1'],
          ['short', '1'],
        ],
        what: 'snapshot',
      },
      {
        sql: `UPDATE tk SET v = 2; DELETE FROM tk WHERE k = 'short'`,
        table: 'tk',
        columns: ['k', 'v'],
        want: [[key, '2']],
        what: 'update merged',
      },
    ]);
  }, 180_000);

  it('a key moved onto a key deleted in the same window keeps its own unchanged TOAST value', async () => {
    await db.sql(`CREATE TABLE mv (id int PRIMARY KEY, body text); ALTER TABLE mv ALTER body SET STORAGE EXTERNAL;
      INSERT INTO mv VALUES (1, repeat('b', 22000)), (5, repeat('f', 22000))`);
    const [b, f] = [long('b'.repeat(22000)), long('f'.repeat(22000))];
    await scenario('mv', [
      {
        table: 'mv',
        columns: ['id', 'body'],
        want: [
          ['1', b],
          ['5', f],
        ],
        what: 'snapshot',
      },
      {
        // The insert of 2 is known in the window, but the row it belongs to is deleted before 1 moves onto 2.
        // Then 5 moves onto 1, which was itself deleted (moved away) in the same transaction.
        sql: `BEGIN; INSERT INTO mv VALUES (2, 'short'); DELETE FROM mv WHERE id = 2; UPDATE mv SET id = 2 WHERE id = 1;
          INSERT INTO mv VALUES (1, 'again'); DELETE FROM mv WHERE id = 1; UPDATE mv SET id = 1 WHERE id = 5; COMMIT`,
        table: 'mv',
        columns: ['id', 'body'],
        want: [
          ['1', f],
          ['2', b],
        ],
        what: 'moves merged',
      },
    ]);
  }, 180_000);

  it("keys the target type cannot hold ('infinity', a BC date, year 10000, NaN): no duplicate rows; updates and deletes apply", async () => {
    await db.sql(`CREATE TABLE hk (id int, valid_to timestamptz, d date, n numeric(10,2), v text, PRIMARY KEY (id, valid_to, d, n));
      INSERT INTO hk VALUES (1, 'infinity', '2020-01-01', 1, 'inf'), (2, '2020-01-01', '0044-03-15 BC', 1, 'bc'),
        (3, '10000-01-01', '2020-01-01', 1, 'y10k'), (4, '2020-01-01', '2020-01-01', 'NaN', 'nan'), (5, '2020-01-01', '2020-01-01', 1, 'plain')`);
    await scenario('hk', [
      { table: 'hk', columns: ['v'], want: [['bc'], ['inf'], ['nan'], ['plain'], ['y10k']], what: 'snapshot' },
      {
        sql: `UPDATE hk SET v = v || '2'`,
        table: 'hk',
        columns: ['v'],
        want: [['bc2'], ['inf2'], ['nan2'], ['plain2'], ['y10k2']],
        what: 'updates of every key (a NULL key would add rows instead)',
      },
      { sql: `DELETE FROM hk WHERE id <= 4`, table: 'hk', columns: ['v'], want: [['plain2']], what: 'deletes of those keys' },
    ]);
  }, 180_000);

  it('a table whose key moves to other columns is re-keyed (resynced): no duplicates, changes by the new key apply', async () => {
    await db.sql(`CREATE TABLE rk (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
      INSERT INTO rk SELECT g, 'c' || g, 'v' FROM generate_series(1, 5) g`);
    await scenario('rk', [
      {
        table: 'rk',
        columns: ['code', 'v'],
        want: [
          ['c1', 'v'],
          ['c2', 'v'],
          ['c3', 'v'],
          ['c4', 'v'],
          ['c5', 'v'],
        ],
        what: 'snapshot',
      },
      {
        sql: `ALTER TABLE rk DROP CONSTRAINT rk_pkey; ALTER TABLE rk ADD PRIMARY KEY (code);
          UPDATE rk SET v = 'x', id = id + 100 WHERE code = 'c2'; DELETE FROM rk WHERE code = 'c3'; INSERT INTO rk VALUES (6, 'c6', 'new')`,
        table: 'rk',
        columns: ['code', 'id', 'v'],
        want: [
          ['c1', '1', 'v'],
          ['c2', '102', 'x'],
          ['c4', '4', 'v'],
          ['c5', '5', 'v'],
          ['c6', '6', 'new'],
        ],
        what: 'after the key moved from id to code',
      },
    ]);
  }, 180_000);

  it('JSON: a duplicate key keeps its last value in Snowflake (not NULL); wide numbers follow the documented rule', async () => {
    await db.sql(`CREATE TABLE js (id int PRIMARY KEY, j json, jb jsonb);
      INSERT INTO js VALUES (1, '{"a": 1, "a": 2}', '{"n": 123456789012345678901234567890123456789012}'),
                            (2, '{"b": [1, 2.5, "x"]}', '{"m": 12345678901234567890123456789012345678}')`);
    // The emulator prints VARIANTs indented; compare them without whitespace (no value here has spaces).
    const compact = (rows: Row[]) => rows.map((r) => r.map((v) => (v === null ? null : v.replace(/\s+/g, ''))));
    const source: Row[] = [
      ['1', '{"a": 1, "a": 2}', '{"n": 123456789012345678901234567890123456789012}'],
      ['2', '{"b": [1, 2.5, "x"]}', '{"m": 12345678901234567890123456789012345678}'],
    ];
    const inSnowflake: Row[] = [
      ['1', '{"a":2}', '{"n":1.2345678901234568e+41}'],
      ['2', '{"b":[1,2.5,"x"]}', '{"m":12345678901234567890123456789012345678}'],
    ];
    await scenario('js', [
      { table: 'js', columns: ['id', 'j', 'jb'], want: source, wantIn: { snowflake: inSnowflake }, what: 'snapshot', compact },
      {
        sql: `UPDATE js SET j = '{"c": 1, "c": {"d": 2}}' WHERE id = 2`,
        table: 'js',
        columns: ['id', 'j'],
        want: [
          ['1', '{"a": 1, "a": 2}'],
          ['2', '{"c": 1, "c": {"d": 2}}'],
        ],
        wantIn: {
          snowflake: [
            ['1', '{"a":2}'],
            ['2', '{"c":{"d":2}}'],
          ],
        },
        what: 'stream',
        compact,
      },
    ]);
  }, 180_000);

  it('a keyless REPLICA IDENTITY FULL table that gains a primary key becomes keyed (resynced), and back', async () => {
    await db.sql(`CREATE TABLE kl (a int NOT NULL, b text); ALTER TABLE kl REPLICA IDENTITY FULL;
      INSERT INTO kl VALUES (1, 'one'), (2, 'two')`);
    await scenario('kl', [
      {
        table: 'kl',
        columns: ['a', 'b'],
        where: (c) => `${c('_floe_op')} = 'r'`,
        want: [
          ['1', 'one'],
          ['2', 'two'],
        ],
        what: 'snapshot as history',
      },
      {
        sql: `ALTER TABLE kl ADD PRIMARY KEY (a); UPDATE kl SET b = 'TWO' WHERE a = 2; DELETE FROM kl WHERE a = 1; INSERT INTO kl VALUES (3, 'three')`,
        table: 'kl',
        columns: ['a', 'b'],
        want: [
          ['2', 'TWO'],
          ['3', 'three'],
        ],
        what: 'keyed state after the primary key was added',
      },
      {
        sql: `UPDATE kl SET b = 'THREE' WHERE a = 3; DELETE FROM kl WHERE a = 2`,
        table: 'kl',
        columns: ['a', 'b'],
        want: [['3', 'THREE']],
        what: 'keyed merges go on',
      },
      {
        // History restarts at the resync's truncate marker, with the snapshot of the table as it is then.
        sql: `ALTER TABLE kl DROP CONSTRAINT kl_pkey; UPDATE kl SET b = 'three' WHERE a = 3`,
        table: 'kl',
        columns: ['a', 'b'],
        where: (c, t) =>
          `${c('_floe_op')} = 'r' AND ${c('_floe_lsn')} >= (SELECT MAX(${c('_floe_lsn')}) FROM ${t} WHERE ${c('_floe_op')} = 't')`,
        want: [['3', 'three']],
        what: 'history again after the key was dropped',
      },
      {
        sql: `INSERT INTO kl VALUES (4, 'four')`,
        table: 'kl',
        columns: ['a', 'b'],
        where: (c) => `${c('_floe_op')} = 'i' AND ${c('a')} = 4`,
        want: [['4', 'four']],
        what: 'history goes on',
      },
    ]);
  }, 240_000);
});
