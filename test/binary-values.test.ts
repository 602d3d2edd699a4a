/**
 * Differential test of the binary decoders (src/postgres/binary-values.ts): every value is fetched
 * twice from the same session with floe's session settings, once as text and once as the type's
 * send function returns it (what pgoutput binary mode and binary COPY send), and the decoded binary
 * must equal the text exactly. Runs on every installed major, since
 * output functions differ between them (numeric and interval infinity, "char").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, testClusters, type TestDatabase } from './harness/database.js';
import { CASES, SETUP_SQL, type Value } from './helpers/type-cases.js';
import { EXTRA_CASES, randomInt, randomMicros, times, type BinaryCase } from './helpers/binary-cases.js';
import { SESSION_OPTIONS } from '../src/postgres/source.js';
import { binaryDecoderFor, UNSUPPORTED_BINARY_TYPES, type BinarySupport } from '../src/postgres/binary-values.js';
import { describeMapping, TYPE_CATALOG_SQL, typeInfoFromRow, type PgTypeInfo } from '../src/schema/type-map.js';

/** Timestamps across the whole range, built from random microsecond counts since 2000 on the server. */
const RANDOM_TIMESTAMPS = times(1500, () => randomMicros().toString());

const RAW_TYPES = { getTypeParser: () => (v: unknown) => v };

const valueText = (v: Value): string | null => (v === null || typeof v === 'string' ? v : v.text);
const valueMajor = (v: Value): number => (v !== null && typeof v === 'object' ? v.minMajor : 0);

describe.each(testClusters('every'))('binary values on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let client: pg.Client;
  let major: number;
  const catalog = new Map<number, PgTypeInfo>();

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'binary');
    await db.sql(SETUP_SQL);
    await db.sql(`CREATE TYPE floe_pair AS (a int, b text)`);
    await db.sql(`CREATE TYPE floe_floatrange AS RANGE (subtype = float8)`);
    client = new pg.Client({ connectionString: db.url, options: SESSION_OPTIONS, types: RAW_TYPES });
    await client.connect();
    major = Math.floor(Number((await client.query('SHOW server_version_num')).rows[0].server_version_num) / 10000);
  });

  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  async function loadCatalog(oid: number): Promise<void> {
    if (catalog.has(oid)) return;
    const rows = (await client.query({ text: TYPE_CATALOG_SQL, values: [[oid]], types: pg.types })).rows;
    for (const row of rows) catalog.set(Number(row.oid), typeInfoFromRow(row));
  }

  async function support(oid: number): Promise<BinarySupport> {
    await loadCatalog(oid);
    return binaryDecoderFor(oid, { serverMajor: major, lookup: (o) => catalog.get(o) });
  }

  /**
   * [text, binary] of `expr` (over $1::text[] as `u.v`) for every input. The binary form comes from
   * the type's send function called in SQL (the function pgoutput and binary COPY call), as a bytea:
   * pg itself would decode binary result columns as UTF-8 text.
   */
  async function fetchBoth(expr: string, inputs: readonly string[]): Promise<{ oid: number; pairs: [string | null, Buffer | null][] }> {
    const from = `FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i) ORDER BY u.i`;
    const asText = await client.query({ text: `SELECT ${expr} AS v ${from}`, values: [inputs] });
    const oid = asText.fields[0]!.dataTypeID;
    const send = (await client.query({ text: `SELECT typsend::regproc::text AS f FROM pg_type WHERE oid = $1`, values: [oid] })).rows[0]
      .f as string;
    const asBinary = await client.query({ text: `SELECT ${send}(${expr}) AS v ${from}`, values: [inputs] });
    const pairs = asText.rows.map((r, i): [string | null, Buffer | null] => {
      const hex = asBinary.rows[i].v as string | null;
      return [r.v as string | null, hex === null ? null : Buffer.from(hex.slice(2), 'hex')];
    });
    return { oid, pairs };
  }

  /** The inputs whose decoded binary differs from the text, as [input, text, decoded]. */
  async function mismatches(expr: string, inputs: readonly string[]): Promise<string[][]> {
    const { oid, pairs } = await fetchBoth(expr, inputs);
    const s = await support(oid);
    if (!s.ok) {
      // Refused by design (asserted below): nothing to compare.
      const name = (await client.query({ text: `SELECT typname FROM pg_type WHERE oid = $1`, values: [oid] })).rows[0].typname as string;
      if (UNSUPPORTED_BINARY_TYPES.has(name)) return [];
      throw new Error(`${expr}: unsupported: ${s.reason}`);
    }
    const bad: string[][] = [];
    pairs.forEach(([text, bin], i) => {
      const decoded = bin === null ? null : s.decode(bin, 0, bin.length);
      if (decoded !== text) bad.push([inputs[i]!, String(text), String(decoded), bin?.toString('hex') ?? '']);
    });
    return bad;
  }

  const allCases: BinaryCase[] = [...CASES.map((c) => ({ decl: c.decl, values: c.values, minMajor: c.minMajor })), ...EXTRA_CASES];

  it.each(allCases.map((c, i) => ({ ...c, name: `${c.decl} #${i}` })))('$name: decoded binary equals text', async (c) => {
    if ((c.minMajor ?? 0) > major) return;
    if (c.decl === 'pg_lsn' && major > 18) return;
    const inputs = c.values.filter((v) => valueMajor(v) <= major && v !== null).map((v) => valueText(v)!);
    const withNull = [...inputs, null as unknown as string];
    expect(await mismatches(`u.v::${c.decl}`, withNull)).toEqual([]);
  });

  it('decodes timestamps and timestamptz across their whole range', async () => {
    for (const type of ['timestamp', 'timestamptz']) {
      const expr = `('2000-01-01 00:00:00+00'::timestamptz + u.v::int8 * interval '1 microsecond')::${type}`;
      expect(await mismatches(expr, RANDOM_TIMESTAMPS)).toEqual([]);
    }
  });

  it('decodes every date from Julian day numbers', async () => {
    const days = times(1000, () => String(randomInt(2147483494)));
    expect(await mismatches(`('J' || u.v)::date`, days)).toEqual([]);
  });

  it('prints the all-maximum and all-minimum intervals as numbers before 17', async () => {
    // 14 cannot read (or print) more than 2^31 hours; 17 reads these as infinity (covered by CASES).
    if (major < 15 || major >= 17) return;
    // The minimum time part cannot be typed in; it is reached by subtracting one more microsecond.
    const expr = `CASE u.v WHEN 'max' THEN interval '178956970 years 7 mons 2147483647 days 2562047788:00:54.775807'
      ELSE interval '-178956970 years -8 mons -2147483648 days' + (interval '-2562047788:00:54.775807' - interval '1 microsecond') END`;
    expect(await mismatches(expr, ['max', 'min'])).toEqual([]);
  });

  it('supports or explicitly refuses every type of the type table', async () => {
    const names = new Set<string>();
    for (const row of describeMapping()) {
      const list = row.pg.startsWith('anything else (') ? row.pg.slice('anything else ('.length, -1) : row.pg;
      if (row.pg === 'enum types' || row.pg === 'domains' || row.pg.startsWith('T[]')) continue;
      for (const name of list.split(', ')) names.add(name);
    }
    const refused: string[] = [];
    const unaccounted: string[] = [];
    const check = async (name: string, oid: number, arrayOid: number): Promise<void> => {
      const s = await support(oid);
      if (!s.ok && !UNSUPPORTED_BINARY_TYPES.has(name)) unaccounted.push(`${name}: ${s.reason}`);
      if (!s.ok) refused.push(name);
      // Arrays of every supported type decode too.
      if (s.ok && arrayOid !== 0 && !(await support(arrayOid)).ok) unaccounted.push(`${name}[]`);
    };
    for (const name of names) {
      const where =
        name === '*multirange'
          ? `t.typtype = 'm' AND t.oid < 16384`
          : name === 'composite types'
            ? `t.typname = 'floe_pair'`
            : `t.typname = '${name}' AND t.typnamespace = 'pg_catalog'::regnamespace`;
      const rows = (
        await client.query({
          text: `SELECT t.oid::int8 AS oid, t.typname, t.typarray::int8 AS arr FROM pg_type t WHERE ${where}`,
          types: pg.types,
        })
      ).rows;
      if (rows.length === 0 && name === 'xid8' && major < 13) continue;
      expect(rows.length, name).toBeGreaterThan(0);
      for (const row of rows) await check(name === 'composite types' ? 'composite' : name, Number(row.oid), Number(row.arr));
    }
    expect(unaccounted).toEqual([]);
    // The refusals are the documented ones, and nothing else.
    expect(new Set(refused)).toEqual(
      new Set(['money', 'regclass', 'regtype', 'regproc', 'tsquery', 'composite', ...(major > 18 ? ['pg_lsn'] : [])]),
    );
  });

  it('refuses user-defined ranges and composites with a reason, and arrays of refused types', async () => {
    for (const type of ['floe_floatrange', 'floe_pair', 'money[]', 'floe_pair[]']) {
      const oid = Number(
        (await client.query({ text: `SELECT $1::regtype::oid::int8 AS oid`, values: [type], types: pg.types })).rows[0].oid,
      );
      const s = await support(oid);
      expect(s.ok, type).toBe(false);
      if (!s.ok) expect(s.reason).toMatch(/subtype|attribute|lc_monetary/);
    }
  });
});
