/**
 * The emulator's Snowflake → DuckDB translator, construct by construct, and
 * the engine's Snowflake semantics on a real DuckDB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { translateOne, type TranslateContext } from '../src/emulator/sql/translate.js';
import { tokenize, splitStatements } from '../src/emulator/sql/tokenizer.js';
import { SqlFailure } from '../src/emulator/sql/failure.js';
import { SqlEngine, type Session } from '../src/emulator/sql/engine.js';
import { coerceValue } from '../src/emulator/rows.js';
import { sfType } from '../src/emulator/sql/types.js';

const ctx: TranslateContext = { database: 'DB', schema: 'S', user: 'U', role: 'R', warehouse: 'WH', account: 'ACC' };

/** The DuckDB SQL of a statement, without the result-column names the translator adds (tested on their own). */
function sqlOf(text: string, c: TranslateContext = ctx): string {
  const cmd = translateOne(text, c);
  if (cmd.kind !== 'query' && cmd.kind !== 'merge') throw new Error(`not a query: ${cmd.kind}`);
  return cmd.sql.replace(/ AS "((?:[^"]|"")*)"/g, (all, name: string) => (/^[A-Za-z_][A-Za-z0-9_$]*$/.test(name) ? all : ''));
}

function failure(text: string, c: TranslateContext = ctx): SqlFailure {
  try {
    translateOne(text, c);
  } catch (err) {
    if (err instanceof SqlFailure) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

describe('tokenizer', () => {
  it('lexes quoted identifiers, string escapes, casts, paths and params', () => {
    const t = tokenize(`SELECT "a""b", 'it''s\\n', x::NUMBER(10,2), v:"k", $1:k, ? -- c\n/* d */ FROM t`);
    expect(t.map((x) => x.kind)).toEqual([
      'word',
      'quoted',
      'op',
      'string',
      'op',
      'word',
      'op',
      'word',
      'op',
      'number',
      'op',
      'number',
      'op',
      'op',
      'word',
      'op',
      'quoted',
      'op',
      'param',
      'op',
      'word',
      'op',
      'param',
      'word',
      'word',
      'eof',
    ]);
    expect(t[1]!.value).toBe('a"b');
    expect(t[3]!.value).toBe("it's\n");
  });

  it('splits on top-level semicolons only', () => {
    const parts = splitStatements(`SELECT ';'; SELECT 2;; `);
    expect(parts.map((p) => p.text)).toEqual([`SELECT ';'`, 'SELECT 2']);
  });
});

describe('translation', () => {
  it('maps one-, two- and three-part table names to the DuckDB schema "DB.SCHEMA"', () => {
    expect(sqlOf('SELECT * FROM T')).toBe('SELECT * FROM "DB.S"."T"');
    expect(sqlOf('SELECT * FROM X.T')).toBe('SELECT * FROM "DB.X"."T"');
    expect(sqlOf('SELECT * FROM "Db"."x".t')).toBe('SELECT * FROM "Db.x"."T"');
    expect(sqlOf('SELECT * FROM a x JOIN b ON x.id = b.id')).toContain('FROM "DB.S"."A" "X" JOIN "DB.S"."B" ON');
    expect(sqlOf('WITH w AS (SELECT 1 AS c) SELECT * FROM w')).toContain('FROM "W"');
  });

  it('needs a current database and schema for unqualified names', () => {
    expect(failure('SELECT * FROM T', { ...ctx, database: null }).code).toBe('090105');
    expect(failure('SELECT * FROM T', { ...ctx, schema: null }).code).toBe('090106');
  });

  it('keeps unquoted identifiers upper-case and quoted ones as written', () => {
    expect(sqlOf('SELECT id, "Id" FROM t')).toBe('SELECT "ID" , "Id" FROM "DB.S"."T"');
  });

  it('rewrites variant paths, keeping key case', () => {
    expect(sqlOf('SELECT v:"Key", v:k.sub[0], v:a["b c"] FROM t')).toBe(
      `SELECT json_extract("V", '$."Key"') , json_extract("V", '$."k"."sub"[0]') , json_extract("V", '$."a"."b c"') FROM "DB.S"."T"`,
    );
  });

  it('rewrites casts with Snowflake semantics', () => {
    expect(
      sqlOf('SELECT v:k::STRING, x::NUMBER(10,2), y::TIMESTAMP_TZ(6), z::VARIANT, w::BINARY, CAST(a AS INT), TRY_CAST(b AS DATE) FROM t'),
    ).toBe(
      `SELECT sf_str(json_extract("V", '$."k"')) , CAST("X" AS DECIMAL(10,2)) , CAST("Y" AS TIMESTAMPTZ) , sf_variant("Z") , sf_binary("W") , CAST("A" AS DECIMAL(38,0)) , TRY_CAST("B" AS DATE) FROM "DB.S"."T"`,
    );
  });

  it('rewrites the supported functions and rejects unknown ones', () => {
    expect(sqlOf(`SELECT IFF(a, 1, 2), NVL(a, b), PARSE_JSON(s), TRY_PARSE_JSON(s), TO_VARIANT(a) FROM t`)).toBe(
      `SELECT (CASE WHEN "A" THEN 1 ELSE 2 END) , coalesce("A", "B") , sf_parse_json("S") , sf_try_parse_json("S", 's') , sf_variant("A") FROM "DB.S"."T"`,
    );
    expect(sqlOf(`SELECT ARRAY_CONTAINS('x'::VARIANT, ARRAY_CONSTRUCT()), ARRAY_SIZE(a)`)).toBe(
      `SELECT list_contains(CAST(CAST('[]' AS JSON) AS JSON[]), sf_variant(sf_variant('x'))) , CAST(json_array_length("A") AS DECIMAL(38,0))`,
    );
    expect(sqlOf(`SELECT TO_BINARY(s, 'BASE64'), TO_BINARY(s, 'HEX'), BASE64_DECODE_BINARY(s)`)).toBe(
      `SELECT from_base64(sf_str("S")) , unhex(sf_str("S")) , from_base64(sf_str("S"))`,
    );
    expect(sqlOf(`SELECT TRY_TO_NUMBER(s, 10, 2), TRY_TO_DECIMAL(s), TRY_TO_TIMESTAMP_TZ(s), TO_TIMESTAMP_TZ(s), TRY_TO_DATE(s)`)).toBe(
      `SELECT TRY_CAST("S" AS DECIMAL(10,2)) , TRY_CAST("S" AS DECIMAL(38,0)) , TRY_CAST("S" AS TIMESTAMPTZ) , CAST("S" AS TIMESTAMPTZ) , TRY_CAST("S" AS DATE)`,
    );
    expect(
      sqlOf(
        `SELECT SYSDATE(), CURRENT_TIMESTAMP(), CURRENT_TIMESTAMP, CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE(), CURRENT_DATABASE()`,
      ),
    ).toBe(`SELECT (now() AT TIME ZONE 'UTC') , current_timestamp , current_timestamp , 'U' , 'R' , 'WH' , 'DB'`);
    expect(sqlOf(`SELECT GET(v, 'k'), GET(v, 0), OBJECT_CONSTRUCT('a', 1)`)).toContain(
      `json_extract("V", '$."k"') , json_extract("V", '$[0]')`,
    );
    expect(failure('SELECT FROBNICATE(1)')).toMatchObject({ code: '002140', sqlState: '42601' });
  });

  it('translates QUALIFY with ROW_NUMBER() OVER and aggregates as DuckDB understands them', () => {
    expect(sqlOf('SELECT k, MAX(v), COUNT(*) FROM t WHERE v > 1 GROUP BY k ORDER BY k DESC LIMIT 5')).toBe(
      'SELECT "K" , max("V") , count(*) FROM "DB.S"."T" WHERE "V" > 1 GROUP BY "K" ORDER BY "K" DESC LIMIT 5',
    );
    expect(sqlOf('SELECT * FROM t QUALIFY ROW_NUMBER() OVER (PARTITION BY k ORDER BY l DESC) = 1')).toBe(
      'SELECT * FROM "DB.S"."T" QUALIFY row_number() OVER (PARTITION BY "K" ORDER BY "L" DESC) = 1',
    );
  });

  it('names unaliased result columns after their expression text, as Snowflake does', () => {
    const c = translateOne(`SELECT current_user(), t.id, x AS y, COUNT(*) n, v:k::string, * FROM t`, ctx);
    expect(c).toMatchObject({
      sql: `SELECT 'U' AS "CURRENT_USER()" , "T"."ID" , "X" AS "Y" , count(*) "N" , sf_str(json_extract("V", '$."k"')) AS "V:K::STRING" , * FROM "DB.S"."T"`,
    });
  });

  it('moves IGNORE NULLS into the window function call', () => {
    expect(sqlOf('SELECT LAST_VALUE(v) IGNORE NULLS OVER (PARTITION BY k ORDER BY l) AS x FROM t')).toBe(
      'SELECT last_value("V" IGNORE NULLS) OVER (PARTITION BY "K" ORDER BY "L") AS "X" FROM "DB.S"."T"',
    );
    expect(sqlOf('SELECT LAST_VALUE(v IGNORE NULLS) OVER (ORDER BY l) AS x FROM t')).toBe(
      'SELECT last_value("V" IGNORE NULLS) OVER (ORDER BY "L") AS "X" FROM "DB.S"."T"',
    );
  });

  it('strips target qualifiers in UPDATE SET and MERGE UPDATE SET', () => {
    expect(sqlOf(`UPDATE t x SET x.a = 1, b = 'q' WHERE x.id = 2`)).toBe(`UPDATE "DB.S"."T" "X" SET "A" = 1, "B" = 'q' WHERE "X"."ID" = 2`);
    const m = translateOne(
      `MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.a = s.a WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.a)`,
      ctx,
    );
    expect(m.kind).toBe('merge');
    if (m.kind === 'merge') {
      expect(m.sql).toBe(
        `MERGE INTO "DB.S"."T" USING "DB.S"."S" ON "T"."ID" = "S"."ID" WHEN MATCHED THEN UPDATE SET "A" = "S"."A" WHEN NOT MATCHED THEN INSERT ("ID", "A") VALUES ("S"."ID" , "S"."A")`,
      );
      expect(m.clauses.map((c) => c.action)).toEqual(['update', 'insert']);
    }
  });

  it('rejects a MERGE whose unconditional clause is not the last of its kind', () => {
    expect(
      failure(`MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN MATCHED AND s.x THEN UPDATE SET a = 1`).message,
    ).toMatch(/Unreachable/);
  });

  it('parses DDL into commands with Snowflake types', () => {
    const c = translateOne(
      `CREATE TABLE IF NOT EXISTS "DB"."S"."T" (ID INT NOT NULL, N NUMBER(10,2), V VARCHAR(5), S STRING, TS TIMESTAMP_TZ(6), B BINARY, X VARIANT, A ARRAY, O OBJECT, PRIMARY KEY (ID))`,
      ctx,
    );
    expect(c.kind).toBe('create-table');
    if (c.kind === 'create-table') {
      expect(c.columns.map((x) => [x.name, x.type.base, x.type.size, x.type.scale, x.notNull])).toEqual([
        ['ID', 'NUMBER', 38, 0, true],
        ['N', 'NUMBER', 10, 2, false],
        ['V', 'VARCHAR', 5, 0, false],
        ['S', 'VARCHAR', 16_777_216, 0, false],
        ['TS', 'TIMESTAMP_TZ', 6, 0, false],
        ['B', 'BINARY', 8_388_608, 0, false],
        ['X', 'VARIANT', 0, 0, false],
        ['A', 'ARRAY', 0, 0, false],
        ['O', 'OBJECT', 0, 0, false],
      ]);
    }
    expect(translateOne('ALTER TABLE t ADD COLUMN IF NOT EXISTS "c" VARCHAR', ctx)).toMatchObject({
      kind: 'add-columns',
      ifNotExists: true,
    });
    expect(translateOne('ALTER TABLE t ALTER COLUMN c SET DATA TYPE NUMBER(20,0)', ctx)).toMatchObject({
      kind: 'alter-column-type',
      column: 'C',
    });
    expect(translateOne('USE WAREHOUSE wh', ctx)).toEqual({ kind: 'use', what: 'warehouse', name: 'WH' });
    expect(translateOne('USE "DB"."x"', ctx)).toEqual({ kind: 'use', what: 'schema', database: 'DB', name: 'x' });
    expect(failure('CREATE TABLE t (a GEOGRAPHY)')).toMatchObject({ code: '002040' });
    expect(failure('CREATE STAGE s')).toMatchObject({ code: '001003', sqlState: '42000' });
    expect(failure('ALTER SESSION SET TIMEZONE = UTC').message).toMatch(/^SQL compilation error:/);
  });

  it('parses the named streaming pipe form', () => {
    const c = translateOne(
      `CREATE PIPE IF NOT EXISTS RAW.P AS COPY INTO RAW.T (A, B) FROM (SELECT $1:A, $1:"b".c::NUMBER FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING')))`,
      ctx,
    );
    expect(c).toMatchObject({ kind: 'create-pipe', targetColumns: ['A', 'B'], columns: [{ path: ['A'] }, { path: ['b', 'c'] }] });
  });

  it('binds ? placeholders from SQL API bindings', () => {
    const b: TranslateContext = { ...ctx, bindings: { '1': { type: 'FIXED', value: '12' }, '2': { type: 'TEXT', value: "o'k" } } };
    expect(sqlOf('SELECT ? + 1 AS a, ? AS b', b)).toBe(`SELECT 12 + 1 AS "A" , 'o''k' AS "B"`);
  });
});

describe('engine', () => {
  let engine: SqlEngine;
  const session: Session = { database: null, schema: null, warehouse: 'WH', role: 'R', user: 'U' };
  const run = async (sql: string) => {
    const conn = await engine.connect();
    try {
      let last: (string | null)[][] = [];
      for (const st of engine.split(sql)) last = (await engine.execute(conn, session, st)).rows;
      return last;
    } finally {
      conn.closeSync();
    }
  };

  beforeAll(async () => {
    engine = await SqlEngine.open(':memory:', 'ACC', ['WH']);
    await run(`CREATE DATABASE IF NOT EXISTS D; CREATE SCHEMA IF NOT EXISTS D.S; USE SCHEMA D.S`);
  });
  afterAll(() => engine.close());

  it('renders cells as the SQL API does', async () => {
    const rows = await run(
      `SELECT 12.5::NUMBER(5,2), 1.5::FLOAT, TRUE, '1970-01-02'::DATE, '00:00:01.5'::TIME, '1969-12-31 23:59:59.5'::TIMESTAMP_NTZ, '2021-03-19T17:06:59+01:00'::TIMESTAMP_TZ, TO_BINARY('ab', 'HEX'), PARSE_JSON('[1]'), NULL`,
    );
    expect(rows).toEqual([
      ['12.50', '1.5', 'true', '1', '1.500000000', '-0.500000000', '1616170019.000000000 1440', 'AB', '[\n  1\n]', null],
    ]);
  });

  it("types result columns from the referenced tables' Snowflake types", async () => {
    await run(`CREATE TABLE IF NOT EXISTS R1 (A ARRAY, L TIMESTAMP_LTZ, Z TIMESTAMP_TZ, V VARCHAR(7), N NUMBER(5,1))`);
    await run(`INSERT INTO R1 SELECT ARRAY_CONSTRUCT(1), '1970-01-01 00:00:01+00:00', '1970-01-01 00:00:01+00:00', 'x', 1.5`);
    const conn = await engine.connect();
    try {
      const [stmt] = engine.split('SELECT A, L, Z, V, N, N + 1 AS M FROM R1');
      const r = await engine.execute(conn, session, stmt!);
      expect(r.columns.map((c) => [c.name, c.type.base, c.type.size])).toEqual([
        ['A', 'ARRAY', 0],
        ['L', 'TIMESTAMP_LTZ', 9],
        ['Z', 'TIMESTAMP_TZ', 9],
        ['V', 'VARCHAR', 7],
        ['N', 'NUMBER', 5],
        ['M', 'NUMBER', 12], // DuckDB's decimal arithmetic widens differently from Snowflake's
      ]);
      expect(r.rows).toEqual([['[\n  1\n]', '1.000000000', '1.000000000 1440', 'x', '1.5', '2.5']]);
    } finally {
      conn.closeSync();
    }
  });

  it("TRY_PARSE_JSON follows Snowflake: duplicate keys are NULL (strict) or the last value ('d'); wide numbers are DOUBLE", async () => {
    const rows = await run(
      `SELECT TRY_PARSE_JSON('{"a": 1, "a": 2}'), TRY_PARSE_JSON('{"a": 1, "a": 2}', 'd'), TRY_PARSE_JSON('{"a": {"b": 1, "b": 2}}', 's'),
              TRY_PARSE_JSON('[12345678901234567890123456789012345678, 123456789012345678901234567890123456789, 1.5e3, -0.25]'),
              TRY_PARSE_JSON('{"a": '), TRY_PARSE_JSON(NULL, 'd')`,
    );
    expect(rows).toEqual([
      [
        null,
        '{\n  "a": 2\n}',
        null,
        '[\n  12345678901234567890123456789012345678,\n  1.2345678901234568e+38,\n  1500,\n  -0.25\n]',
        null,
        null,
      ],
    ]);
  });

  it('casts a VARIANT string to VARCHAR without its quotes, and strings to VARIANT as JSON strings', async () => {
    expect(await run(`SELECT PARSE_JSON('{"a":"x"}'):a::STRING, 'y'::VARIANT, TO_VARIANT(2)`)).toEqual([['x', '"y"', '2']]);
  });

  it('keeps Snowflake types through DESCRIBE and only widens with ALTER COLUMN', async () => {
    await run(`CREATE TABLE IF NOT EXISTS T1 (A NUMBER(10,2), B VARCHAR(5), C TIMESTAMP_LTZ, D ARRAY)`);
    await run(`ALTER TABLE T1 ALTER COLUMN B SET DATA TYPE VARCHAR(50); ALTER TABLE T1 ALTER COLUMN A SET DATA TYPE NUMBER(20,2)`);
    const desc = await run('DESCRIBE TABLE T1');
    expect(desc.map((r) => [r[0], r[1]])).toEqual([
      ['A', 'NUMBER(20,2)'],
      ['B', 'VARCHAR(50)'],
      ['C', 'TIMESTAMP_LTZ(9)'],
      ['D', 'ARRAY'],
    ]);
    await expect(run('ALTER TABLE T1 ALTER COLUMN B SET DATA TYPE VARCHAR(10)')).rejects.toMatchObject({ code: '002108' });
    await expect(run('ALTER TABLE T1 ALTER COLUMN A SET DATA TYPE NUMBER(20,3)')).rejects.toMatchObject({ code: '002108' });
  });

  it('reports Snowflake errors for missing objects, duplicates and NOT NULL', async () => {
    await expect(run('SELECT * FROM NOPE')).rejects.toMatchObject({ code: '002003', sqlState: '42S02' });
    await expect(run('CREATE TABLE T1 (A INT)')).rejects.toMatchObject({ code: '002002' });
    await expect(run('USE DATABASE NOPE')).rejects.toMatchObject({ code: '002003' });
    await run('CREATE TABLE IF NOT EXISTS T2 (A INT NOT NULL)');
    await expect(run('INSERT INTO T2 VALUES (NULL)')).rejects.toMatchObject({ code: '100072' });
    expect(await run('DROP TABLE IF EXISTS T2; DROP TABLE IF EXISTS T2')).toHaveLength(1);
  });

  it('allows several source rows that only DELETE one target row', async () => {
    await run(`CREATE TABLE IF NOT EXISTS M (ID INT, V INT); INSERT INTO M VALUES (1, 1), (2, 2)`);
    const r = await run(`MERGE INTO M USING (SELECT 1 AS ID UNION ALL SELECT 1) s ON M.ID = s.ID WHEN MATCHED THEN DELETE`);
    expect(r[0]![0]).toBe('0');
    expect(await run('SELECT ID FROM M')).toEqual([['2']]);
    // Unmatched duplicates are each inserted.
    await run(`MERGE INTO M USING (SELECT 5 AS ID UNION ALL SELECT 5) s ON M.ID = s.ID WHEN NOT MATCHED THEN INSERT (ID) VALUES (s.ID)`);
    expect(await run('SELECT COUNT(*) FROM M WHERE ID = 5')).toEqual([['2']]);
  });

  it('types a column added in another connection once its transaction commits (a reader meanwhile must not keep the old columns)', async () => {
    await run(`CREATE TABLE IF NOT EXISTS CV (A INT); INSERT INTO CV VALUES (1)`);
    const [writer, reader] = [await engine.connect(), await engine.connect()];
    const on = async (conn: typeof writer, sql: string) => (await engine.execute(conn, session, engine.split(sql)[0]!)).rows;
    const types = async (conn: typeof writer, sql: string) =>
      (await engine.execute(conn, session, engine.split(sql)[0]!)).columns.map((c) => `${c.name} ${c.type.base}(${c.type.size})`);
    try {
      await on(writer, 'USE SCHEMA D.S');
      await on(reader, 'USE SCHEMA D.S');
      await on(writer, 'BEGIN');
      await on(writer, 'ALTER TABLE CV ADD COLUMN B VARCHAR(7)');
      // Uncommitted: the reader still sees the table without B (and reads its columns now).
      expect(await on(reader, 'SELECT * FROM CV')).toEqual([['1']]);
      await on(writer, 'COMMIT');
      expect(await types(reader, 'SELECT A, B FROM CV')).toEqual(['A NUMBER(38)', 'B VARCHAR(7)']);
    } finally {
      writer.closeSync();
      reader.closeSync();
    }
  });
});

describe('streaming value coercion', () => {
  const ok = (v: unknown, t: string, args: number[] = []) => coerceValue(v, 'C', sfType(t, args), true, 'BASE64');
  it('accepts values that fit and refuses values that do not', () => {
    expect(ok('12.345', 'NUMBER', [10, 2])).toEqual({ ok: true, text: '12.35' });
    expect(ok('-0.005', 'NUMBER', [10, 2])).toEqual({ ok: true, text: '-0.01' });
    expect(ok(1.5e-7, 'NUMBER', [10, 9])).toEqual({ ok: true, text: '0.000000150' });
    expect(ok(1e3, 'NUMBER', [4, 0])).toMatchObject({ ok: true });
    expect(ok(12345, 'NUMBER', [4, 0])).toMatchObject({ ok: false });
    expect(ok('abc', 'NUMBER')).toMatchObject({ ok: false });
    expect(ok('abcdef', 'VARCHAR', [5])).toMatchObject({ ok: false });
    expect(ok('2024-02-30', 'DATE')).toMatchObject({ ok: false });
    expect(ok('2024-02-29T10:00:00.123456789Z', 'TIMESTAMP_TZ')).toEqual({ ok: true, text: '2024-02-29 10:00:00.123456+00:00' });
    expect(ok('2024-02-29T10:00:00+05:30', 'TIMESTAMP_NTZ')).toEqual({ ok: true, text: '2024-02-29 10:00:00' });
    expect(ok(86400, 'DATE')).toEqual({ ok: true, text: '1970-01-02' });
    expect(ok('25:00:00', 'TIME')).toMatchObject({ ok: false });
    expect(ok('maybe', 'BOOLEAN')).toMatchObject({ ok: false });
    expect(ok('not base64!', 'BINARY')).toMatchObject({ ok: false });
    expect(ok('[1]', 'ARRAY')).toEqual({ ok: true, text: '["[1]"]' }); // type-strict: a string stays a string
    expect(ok('{"a":1}', 'OBJECT')).toEqual({ ok: true, text: '{"a":1}' });
    expect(coerceValue(null, 'C', sfType('INT'), false, 'BASE64')).toMatchObject({ ok: false });
  });
});
