/**
 * Round trip of every row of the type table, value by value:
 * PostgreSQL value -> its text (source session settings) -> [pgArrayToJson for
 * arrays] -> DuckDB VARCHAR journal -> duckdbCast -> typed DuckDB table; then
 * PostgreSQL and DuckDB are each asked for a canonical text of every value
 * (epoch microseconds, exact decimal text, hex bytes, interval fields, exact
 * JSON text, float values, ...) and the two must agree. Values the table
 * documents as not representable in the typed target are listed per case in
 * `lost` and must come out NULL - and nothing else may.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import {
  mapColumnType,
  TYPE_CATALOG_SQL,
  BUILTIN_TYPES,
  typeInfoFromRow,
  describeMapping,
  type PgTypeInfo,
  type MappedType,
} from '../src/schema/type-map.js';
import { pgArrayToJson } from '../src/schema/pg-array.js';
import { CASES, SETUP_SQL, valueText, type Case } from './helpers/type-cases.js';
import { FloeError } from '../src/errors.js';

const SESSION_SQL = `SET DateStyle=ISO; SET IntervalStyle=postgres; SET extra_float_digits=3; SET TimeZone=UTC; SET bytea_output=hex`;

type Kind =
  'exact' | 'json' | 'float' | 'decimal' | 'text' | 'blob' | 'date' | 'time' | 'timetz' | 'timestamp' | 'timestamptz' | 'interval';

function kindOf(duckdb: string): Kind {
  const base = duckdb.replace(/(\[\])+$/, '');
  if (base.startsWith('DECIMAL')) return 'decimal';
  switch (base) {
    case 'BOOLEAN':
    case 'SMALLINT':
    case 'INTEGER':
    case 'BIGINT':
    case 'UINTEGER':
    case 'UUID':
      return 'exact';
    case 'JSON':
      return 'json';
    case 'FLOAT':
    case 'DOUBLE':
      return 'float';
    case 'VARCHAR':
      return 'text';
    case 'BLOB':
      return 'blob';
    case 'DATE':
      return 'date';
    case 'TIME':
      return 'time';
    case 'TIMETZ':
      return 'timetz';
    case 'TIMESTAMP':
      return 'timestamp';
    case 'TIMESTAMPTZ':
      return 'timestamptz';
    case 'INTERVAL':
      return 'interval';
  }
  throw new Error(`no canonical form for ${duckdb}`);
}

const LONE_SURROGATE = String.raw`\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}`;

/** Canonical text of a PostgreSQL value `v`, NULL where the mapping documents a loss. */
function pgCanon(kind: Kind, v: string): string {
  const c = ((): string => {
    switch (kind) {
      case 'exact':
        return `${v}::text`;
      case 'json':
        // Exact text, except that unpaired surrogate escapes (json accepts them, DuckDB's JSON does not) give NULL.
        return `CASE WHEN ${v}::text ~ ${literal(LONE_SURROGATE)} THEN NULL ELSE ${v}::text END`;
      case 'float':
        return `${v}::float8::text`;
      case 'decimal':
        return `CASE WHEN ${v}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE ${v}::text END`;
      case 'text':
        return `concat(${v})`; // the output function's text: keeps bpchar padding (::text would trim it)
      case 'blob':
        return `encode(${v}, 'hex')`;
      case 'date':
        return `CASE WHEN isfinite(${v}) THEN (${v} - date '1970-01-01')::text ELSE ${v}::text END`;
      case 'time':
        return `(extract(epoch from ${v}) * 1000000)::bigint::text`;
      case 'timetz':
        return `(extract(epoch from ${v}::time) * 1000000)::bigint::text || ' ' || extract(timezone from ${v})::int::text`;
      case 'timestamp':
      case 'timestamptz': {
        const max = kind === 'timestamp' ? `'294247-01-10 04:00:54.775806'::timestamp` : `'294247-01-10 04:00:54.775806+00'::timestamptz`;
        return `CASE WHEN NOT isfinite(${v}) THEN ${v}::text WHEN ${v} > ${max} THEN NULL ELSE trunc(extract(epoch from ${v}) * 1000000)::text END`;
      }
      case 'interval':
        return (
          `CASE WHEN ${v}::text IN ('infinity', '-infinity') THEN NULL ELSE ` +
          `(extract(year from ${v}) * 12 + extract(month from ${v}))::bigint::text || ' ' || extract(day from ${v})::bigint::text || ' ' || ` +
          `(extract(hour from ${v}) * 3600000000 + extract(minute from ${v}) * 60000000 + extract(microseconds from ${v}))::bigint::text END`
        );
    }
  })();
  return `CASE WHEN ${v} IS NULL THEN NULL ELSE ${c} END`;
}

/** Canonical text of a DuckDB value `v` of the mapped type. */
function duckCanon(kind: Kind, v: string): string {
  const c = ((): string => {
    switch (kind) {
      case 'exact':
      case 'json':
      case 'decimal':
      case 'text':
        return `CAST(${v} AS VARCHAR)`;
      case 'float':
        return `CAST(CAST(${v} AS DOUBLE) AS VARCHAR)`;
      case 'blob':
        return `lower(hex(${v}))`;
      case 'date':
        return `CASE WHEN isfinite(${v}) THEN CAST(${v} - DATE '1970-01-01' AS VARCHAR) ELSE CAST(${v} AS VARCHAR) END`;
      case 'time':
        return `CAST(epoch_us(${v}) AS VARCHAR)`;
      case 'timetz':
        return `CAST(epoch_us(CAST(${v} AS TIME)) AS VARCHAR) || ' ' || CAST(extract('timezone' FROM ${v}) AS VARCHAR)`;
      case 'timestamp':
      case 'timestamptz':
        return `CASE WHEN NOT isfinite(${v}) THEN CAST(${v} AS VARCHAR) ELSE CAST(epoch_us(${v}) AS VARCHAR) END`;
      case 'interval':
        return (
          `CAST(datepart('year', ${v}) * 12 + datepart('month', ${v}) AS VARCHAR) || ' ' || CAST(datepart('day', ${v}) AS VARCHAR) || ' ' || ` +
          `CAST(CAST(datepart('hour', ${v}) AS HUGEINT) * 3600000000 + datepart('minute', ${v}) * 60000000 + datepart('microseconds', ${v}) AS VARCHAR)`
        );
    }
  })();
  return `CASE WHEN ${v} IS NULL THEN NULL ELSE ${c} END`;
}

function normalizeFloat(s: string | null): string | null {
  if (s === null) return null;
  const l = s.toLowerCase();
  if (l === 'nan') return 'NaN';
  if (l === 'inf' || l === 'infinity') return 'Infinity';
  if (l === '-inf' || l === '-infinity') return '-Infinity';
  const n = Number(s);
  if (Number.isNaN(n)) throw new Error(`not a float: ${s}`);
  return Object.is(n, -0) ? '-0' : String(n);
}

/** DuckDB prints DECIMAL(p,p) without the leading zero ('.5'); PostgreSQL prints '0.5'. */
const normalizeDecimal = (s: string | null): string | null => (s === null ? null : s.replace(/^(-?)\./, '$10.'));

const normalize = (kind: Kind, s: string | null): string | null =>
  kind === 'float' ? normalizeFloat(s) : kind === 'decimal' ? normalizeDecimal(s) : s;

/** PostgreSQL: canonical of an array value as JSON {dims, elems}; NULL when its dimensionality differs from the declared one. */
function pgArrayCanon(kind: Kind, dims: number): string {
  return `CASE WHEN v IS NULL THEN NULL WHEN array_ndims(v) IS NOT NULL AND array_ndims(v) <> ${dims} THEN NULL ELSE json_build_object(
    'dims', coalesce((SELECT json_agg(array_length(v, d) ORDER BY d) FROM generate_series(1, array_ndims(v)) AS d), '[]'::json),
    'elems', coalesce((SELECT json_agg(${pgCanon(kind, 'e')} ORDER BY o) FROM unnest(v) WITH ORDINALITY AS u(e, o)), '[]'::json))::text END`;
}

function duckArrayCanon(kind: Kind, dims: number): string {
  if (dims === 1) {
    return `CASE WHEN v IS NULL THEN NULL ELSE CAST(to_json({'dims': CASE WHEN len(v) = 0 THEN []::BIGINT[] ELSE [len(v)] END,
      'elems': list_transform(v, lambda e: ${duckCanon(kind, 'e')})}) AS VARCHAR) END`;
  }
  return `CASE WHEN v IS NULL THEN NULL ELSE CAST(to_json({'dims': CASE WHEN len(v) = 0 THEN []::BIGINT[] ELSE [len(v), len(v[1])] END,
    'elems': flatten(list_transform(v, lambda r: list_transform(r, lambda e: ${duckCanon(kind, 'e')})))}) AS VARCHAR) END`;
}

const literal = (s: string): string => `'${s.replaceAll("'", "''")}'`;

describe.each(testClusters('every'))('type map round trip on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let client: pg.Client;
  let duck: DuckDBInstance;
  let conn: DuckDBConnection;
  const catalog = new Map<number, PgTypeInfo>();
  const columns = new Map<number, { oid: number; typmod: number; dims: number }>();

  const valuesOf = (c: Case): (string | null)[] =>
    c.values.filter((v) => v === null || typeof v === 'string' || cluster.major >= v.minMajor).map(valueText);
  const cases = CASES.filter((c) => cluster.major >= (c.minMajor ?? 0)).map((c, i) => ({ ...c, index: i, label: c.decl }));

  type Row = { [column: string]: string | null };
  const raw = async (sql: string, params?: unknown[]): Promise<Row[]> => (await client.query(sql, params)).rows as Row[];

  const duckRows = async (sql: string): Promise<unknown[][]> => (await conn.runAndReadAll(sql)).getRowsJS();

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'typemap');
    // Every value comes back as PostgreSQL's text, exactly as pgoutput/COPY would send it.
    client = new pg.Client({ connectionString: db.url, types: { getTypeParser: () => (v: string) => v } });
    await client.connect();
    await client.query(SESSION_SQL);
    await client.query(SETUP_SQL);
    for (const c of cases) {
      await client.query(`CREATE TABLE t_${c.index} (id int PRIMARY KEY, v ${c.decl})`);
      const vals = valuesOf(c);
      const params = vals.flatMap((v, i) => [i, v]);
      await client.query(
        `INSERT INTO t_${c.index} (id, v) VALUES ${vals.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ')}`,
        params,
      );
    }
    const atts = await raw(
      `SELECT c.relname, a.atttypid, a.atttypmod, a.attndims FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
       WHERE c.relname ~ '^t_[0-9]+$' AND c.relnamespace = 'public'::regnamespace AND a.attname = 'v'`,
    );
    for (const a of atts) {
      columns.set(Number(a.relname!.slice(2)), { oid: Number(a.atttypid), typmod: Number(a.atttypmod), dims: Number(a.attndims) });
    }
    const oids = [...new Set([...columns.values()].map((c) => c.oid))];
    for (const row of await raw(TYPE_CATALOG_SQL, [oids])) {
      const info = typeInfoFromRow(row);
      catalog.set(info.oid, info);
    }
    duck = await DuckDBInstance.create(':memory:');
    conn = await duck.connect();
  });

  afterAll(async () => {
    conn?.closeSync();
    duck?.closeSync();
    await client?.end();
    await db?.drop();
  });

  const mapped = (index: number): MappedType => {
    const col = columns.get(index);
    if (!col) throw new Error(`no column for case ${index}`);
    return mapColumnType(col.oid, col.typmod, (oid) => catalog.get(oid), { arrayDims: col.dims });
  };

  it('the built-in type table agrees with pg_type', async () => {
    const rows = await raw(TYPE_CATALOG_SQL, [[...BUILTIN_TYPES.keys()]]);
    const fromCatalog = new Map(rows.map((r) => [Number(r.oid), typeInfoFromRow(r)]));
    // "char" moved from category S (string) to Z (internal) in PostgreSQL 15; it maps the same either way.
    const expected = (oid: number, info: PgTypeInfo) => (oid === 18 && cluster.major < 15 ? { ...info, category: 'S' } : info);
    for (const [oid, info] of BUILTIN_TYPES) expect(fromCatalog.get(oid), info.name).toEqual(expected(oid, info));
    // Built-ins map the same with and without the catalog.
    for (const oid of BUILTIN_TYPES.keys()) {
      const a = mapColumnType(oid, -1, () => undefined);
      const b = mapColumnType(oid, -1, (o) => fromCatalog.get(o));
      expect([a.pgType, a.duckdb, a.snowflake, a.duckdbCast('x')]).toEqual([b.pgType, b.duckdb, b.snowflake, b.duckdbCast('x')]);
    }
  });

  it('int2vector and oidvector are not taken for arrays', async () => {
    const rows = await raw(TYPE_CATALOG_SQL, [[22, 30, 19, 600]]);
    for (const r of rows) expect(typeInfoFromRow(r).elemOid).toBe(0);
    const lookup = new Map(rows.map((r) => [Number(r.oid), typeInfoFromRow(r)]));
    expect(mapColumnType(22, -1, (o) => lookup.get(o))).toMatchObject({ duckdb: 'VARCHAR', isArray: false });
  });

  it.each(cases)('$label', async (c) => {
    const m = mapped(c.index);
    expect({ pgType: m.pgType, duckdb: m.duckdb }).toEqual({ pgType: c.pgType, duckdb: c.duckdb });
    if (c.snowflake) expect(m.snowflake).toBe(c.snowflake);
    const kind = kindOf(m.duckdb);

    // Source texts, as the replication stream would carry them.
    const src = await raw(`SELECT id, v FROM t_${c.index} ORDER BY id`);
    const journalText = (t: string | null): string | null => (t === null ? null : m.isArray ? pgArrayToJson(t) : t);

    // Journal: VARCHAR image; typed table: the mapped type filled by duckdbCast.
    const j = `j_${c.index}`;
    const y = `y_${c.index}`;
    await conn.run(`CREATE TABLE ${j} (id INTEGER, v VARCHAR)`);
    await conn.run(
      `INSERT INTO ${j} VALUES ${src.map((r) => `(${r.id}, ${r.v == null ? 'NULL' : literal(journalText(r.v)!)})`).join(', ')}`,
    );
    await conn.run(`CREATE TABLE ${y} (id INTEGER, v ${m.duckdb})`);
    const [[castType, declaredType]] = (await duckRows(
      `SELECT typeof(${m.duckdbCast('v')}), typeof(CAST(NULL AS ${m.duckdb})) FROM ${j} LIMIT 1`,
    )) as [[string, string]];
    expect(castType).toBe(declaredType);
    await conn.run(`INSERT INTO ${y} SELECT id, ${m.duckdbCast('v')} FROM ${j}`);

    // The journal keeps the exact text.
    const journal = await duckRows(`SELECT id, v FROM ${j} ORDER BY id`);
    expect(journal.map((r) => r[1])).toEqual(src.map((r) => journalText(r.v ?? null)));

    const pgSql = m.isArray ? pgArrayCanon(kind, m.arrayDims) : pgCanon(kind, 'v');
    const duckSql = m.isArray ? duckArrayCanon(kind, m.arrayDims) : duckCanon(kind, 'v');
    const expected = await raw(`SELECT id, ${pgSql} AS canon FROM t_${c.index} ORDER BY id`);
    const actual = await duckRows(`SELECT id, ${duckSql}, CAST(v AS VARCHAR) FROM ${y} ORDER BY id`);
    expect(actual.length).toBe(expected.length);

    const inputs = valuesOf(c);
    const lost: string[] = [];
    for (let i = 0; i < expected.length; i++) {
      const input = inputs[Number(expected[i]!.id)] ?? null;
      const want = expected[i]!.canon ?? null;
      const got = (actual[i]![1] as string | null) ?? null;
      const label = `${c.decl} value ${JSON.stringify(input)} (source text ${JSON.stringify(src[i]!.v)})`;
      if (want === null && input !== null) lost.push(input);
      if (m.isArray && want !== null && got !== null) {
        const w = JSON.parse(want) as { dims: number[]; elems: (string | null)[] };
        const g = JSON.parse(got) as { dims: number[]; elems: (string | null)[] };
        expect(g.dims, label).toEqual(w.dims);
        expect(
          g.elems.map((e) => normalize(kind, e)),
          label,
        ).toEqual(w.elems.map((e) => normalize(kind, e)));
      } else {
        expect(normalize(kind, got), label).toBe(normalize(kind, want));
      }
      const text = input === null ? undefined : c.duckText?.[input];
      if (text !== undefined) expect(actual[i]![2], label).toBe(text);
    }
    // Exactly the documented values are lost, on this server version.
    expect(lost).toEqual((c.lost ?? []).filter((l) => inputs.includes(l)));
  });

  it('describeMapping lists every rule', () => {
    const rows = describeMapping();
    const names = rows.map((r) => r.pg).join(' | ');
    for (const n of ['bool', 'int4', 'numeric', 'bpchar', 'bytea', 'timestamptz', 'interval', 'jsonb', 'enum', 'domain', '[]', 'inet']) {
      expect(names).toContain(n);
    }
    for (const r of rows) expect(r.duckdb.length > 0 && r.snowflake.length > 0).toBe(true);
  });
});

describe('type map without a database', () => {
  const none = (): undefined => undefined;

  it('refuses unknown type oids', () => {
    expect(() => mapColumnType(99999, -1, none)).toThrow(FloeError);
    try {
      mapColumnType(99999, -1, none);
    } catch (e) {
      expect((e as FloeError).kind).toBe('schema');
    }
  });

  it('decodes numeric typmods', () => {
    const numeric = (p: number, s: number): MappedType => mapColumnType(1700, ((p << 16) | (s & 0x7ff)) + 4, none);
    expect(numeric(10, 2)).toMatchObject({ pgType: 'numeric(10,2)', duckdb: 'DECIMAL(10,2)', snowflake: 'NUMBER(10,2)' });
    expect(numeric(38, 0)).toMatchObject({ duckdb: 'DECIMAL(38,0)', snowflake: 'NUMBER(38,0)' });
    expect(numeric(39, 0)).toMatchObject({ pgType: 'numeric(39,0)', duckdb: 'VARCHAR', snowflake: 'VARCHAR' });
    expect(numeric(36, -3)).toMatchObject({ pgType: 'numeric(36,-3)', duckdb: 'VARCHAR' });
    expect(numeric(35, -3)).toMatchObject({ pgType: 'numeric(35,-3)', duckdb: 'DECIMAL(38,0)' });
    expect(numeric(1, 38)).toMatchObject({ pgType: 'numeric(1,38)', duckdb: 'DECIMAL(38,38)', snowflake: 'VARCHAR' });
    expect(mapColumnType(1700, -1, none)).toMatchObject({ pgType: 'numeric', duckdb: 'VARCHAR' });
  });

  it('fails loudly on text that is not in the expected source format', async () => {
    const duck = await DuckDBInstance.create(':memory:');
    const conn = await duck.connect();
    try {
      const cast = async (oid: number, text: string): Promise<unknown> =>
        (await conn.runAndReadAll(`SELECT ${mapColumnType(oid, -1, none).duckdbCast(literal(text))}`)).getRowsJS()[0]?.[0];
      await expect(cast(17, 'plain\\000text')).rejects.toThrow(/bytea_output=hex/); // bytea_output=escape
      await expect(cast(1186, 'P1Y2M')).rejects.toThrow(/IntervalStyle/); // IntervalStyle=iso_8601
      await expect(cast(1186, '@ 1 year')).rejects.toThrow(/IntervalStyle/); // IntervalStyle=postgres_verbose
      await expect(cast(1082, '01/02/2024')).rejects.toThrow(); // DateStyle=SQL
      await expect(cast(1007, '{1,2}')).rejects.toThrow(); // array not converted by pgArrayToJson
      expect(await cast(1186, '-1 days +00:00:01')).toBeTruthy();
    } finally {
      conn.closeSync();
      duck.closeSync();
    }
  });
});
