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
import { SESSION_OPTIONS } from '../src/postgres/source.js';
import { binaryDecoderFor, UNSUPPORTED_BINARY_TYPES, type BinarySupport } from '../src/postgres/binary-values.js';
import { describeMapping, TYPE_CATALOG_SQL, typeInfoFromRow, type PgTypeInfo } from '../src/schema/type-map.js';

interface BinaryCase {
  readonly decl: string;
  readonly values: readonly Value[];
  readonly minMajor?: number;
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const random = rng(20240512);
const randomInt = (n: number): number => Math.floor(random() * n);
const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

function randomBitsFloat8(): string {
  const b = Buffer.alloc(8);
  for (;;) {
    b.writeUInt32BE(randomInt(2 ** 32), 0);
    b.writeUInt32BE(randomInt(2 ** 32), 4);
    const v = b.readDoubleBE(0);
    if (Number.isFinite(v)) return String(v);
  }
}

function randomBitsFloat4(): string {
  const b = Buffer.alloc(4);
  for (;;) {
    b.writeUInt32BE(randomInt(2 ** 32), 0);
    const v = b.readFloatBE(0);
    // Nine significant digits read back as the same float4.
    if (Number.isFinite(v)) return v.toPrecision(9);
  }
}

/** Decimals with few digits at every magnitude: where shortest-digit ties and midpoints live. */
function shortDecimal(maxExp: number): string {
  const digits = String(1 + randomInt(999_999_999)).slice(0, 1 + randomInt(9));
  const exp = randomInt(2 * maxExp) - maxExp;
  return `${random() < 0.5 ? '-' : ''}${digits}e${exp}`;
}

/**
 * Integer doubles above 2^53 for which V8's shortest digits lie exactly on the midpoint to a neighbour
 * (about 1.4% of those with an even significand): PostgreSQL never prints a midpoint, so these take
 * the decoder's exact path.
 */
function midpointDoubles(n: number): string[] {
  const out: string[] = [];
  const b = Buffer.alloc(8);
  while (out.length < n) {
    const e = 53 + randomInt(80);
    const v = Math.round(random() * 2 ** 53) * 2 ** (e - 53) + 2 ** e;
    b.writeDoubleBE(v);
    if (b.readUInt32BE(4) & 1) continue;
    const [mantissa, exp] = v.toExponential().split('e');
    const digits = mantissa!.replace('.', '');
    const shift = Number(exp) - (digits.length - 1);
    if (shift < 0) continue;
    const half = 1n << BigInt(((b.readUInt32BE(0) >>> 20) & 0x7ff) - 1076);
    const diff = BigInt(digits) * 10n ** BigInt(shift) - BigInt(v);
    if (diff === half || -diff === half) out.push(String(v));
  }
  return out;
}

const randomNumeric = (): string => {
  const int = times(randomInt(30), () => randomInt(10)).join('');
  const frac = times(randomInt(30), () => randomInt(10)).join('');
  return `${random() < 0.5 ? '-' : ''}${int || '0'}${frac ? '.' + frac : ''}`;
};

const randomMicros = (): bigint => {
  // Across timestamp's whole range, 4713 BC to 294276 AD.
  const min = -211813488000000000n;
  const max = 9223371331200000000n;
  const r = BigInt(randomInt(2 ** 30)) * BigInt(2 ** 30) + BigInt(randomInt(2 ** 30));
  return min + (r % (max - min));
};

const randomInterval = (): string => {
  const time = `${randomInt(200000)}:${randomInt(60)}:${randomInt(60)}.${String(randomInt(1e6)).padStart(6, '0')}`;
  const parts = [`${randomInt(4e6) - 2e6} mons`, `${randomInt(4e6) - 2e6} days`, `${random() < 0.5 ? '-' : '+'}${time}`];
  // Leave out fields at random: zero fields are not printed, and the sign rules depend on the neighbours.
  return parts.filter(() => random() < 0.7).join(' ') || '0';
};

const EXTRA_CASES: readonly BinaryCase[] = [
  { decl: 'bool', values: ['t', 'f'] },
  { decl: 'int2', values: ['-1', '1', '-32768'] },
  {
    decl: 'int8',
    values: [
      '-1',
      '9007199254740991',
      '9007199254740992',
      '9007199254740993',
      '-9007199254740992',
      '-9007199254740993',
      '4294967296',
      '-4294967297',
    ],
  },
  {
    decl: 'float8',
    values: [
      '1e+20',
      '1.5e-07',
      '1e15',
      '1e14',
      '123456789012345',
      '1234567890123456',
      '0.0001',
      '0.00001',
      '100',
      '-123.456',
      '18014398509481988',
      '18014398509481990',
      '1125899906842624.25',
      '1125899906842624.75',
      '9007199254740992',
      '9007199254740993',
      '4503599627370497.5',
      '67661223192077060',
      '25595080949915750',
      '187248113825385200',
      ...midpointDoubles(200),
      '1e22',
      '1e23',
      '5e-324',
      '1e308',
      ...times(3000, randomBitsFloat8),
      ...times(1500, () => shortDecimal(40)),
      // Integer-valued doubles between 2^53 and 1e40, where a shortest candidate can lie on a midpoint.
      ...times(1500, () => String(Math.round((2 ** 53 + random() * 2 ** 80) / 2 ** randomInt(2)) * 2 ** randomInt(50))),
    ],
  },
  {
    decl: 'float4',
    values: [
      '1e+20',
      '1.5e-07',
      '123456',
      '1234567',
      '100000',
      '1000000',
      '16777216',
      '16777218',
      '1048576.25',
      '1048576.75',
      '2097152.5',
      '0.3',
      '-0.1',
      '0.0001',
      '0.00001',
      '3.4028235e+38',
      '1.4e-45',
      '8.5e-38',
      '33554436',
      '2.5e9',
      ...times(3000, randomBitsFloat4),
      ...times(1500, () => shortDecimal(30)),
    ],
  },
  {
    decl: 'numeric',
    values: [
      '0.0',
      '-0.0',
      '0.000',
      '100',
      '10000',
      '100000000',
      '1e4',
      '12345678',
      '0.0001',
      '0.00010',
      '-1.5',
      '1e-20',
      '123.456e10',
      '9999.9999',
      '0.1234',
      '0.12345',
      '1e131071',
      '-1e-16383',
      ...times(500, randomNumeric),
    ],
  },
  { decl: 'numeric(5,-2)', values: ['12345'], minMajor: 15 },
  { decl: 'text', values: ['a\\b', '"', '\\', 'NULL', 'null', '\u000b', 'é'] },
  { decl: '"char"', values: ['é', 'z', '\\', ' '] },
  {
    decl: 'date',
    values: [
      '2000-01-01',
      '1999-12-31',
      '2000-03-01',
      '1900-02-28',
      '10000-01-01',
      '0099-01-01',
      '0001-02-29 BC',
      '0005-02-29 BC',
      '4714-11-24 BC',
    ],
  },
  { decl: 'time', values: ['00:00:00.000001', '12:00:00.1', '23:59:59.5', '01:02:03.000100'] },
  { decl: 'time(2)', values: ['12:34:56.789'] },
  { decl: 'timetz', values: ['12:00:00+00', '12:00:00-00:30', '12:00:00+15:59:59', '00:00:00.000001-15:59:59', '12:00:00+00:00:01'] },
  {
    decl: 'timestamp',
    values: [
      '2000-01-01 00:00:00',
      '1999-12-31 23:59:59.999999',
      '1715-06-01 12:00:00.000001',
      '2286-01-01 00:00:00.5',
      '10000-01-01 00:00:00',
      '4714-11-24 00:00:00 BC',
    ],
  },
  { decl: 'timestamptz(3)', values: ['2024-01-02 03:04:05.123456+05:30', '0001-01-01 00:00:00.5+00 BC'] },
  {
    decl: 'interval',
    values: [
      '1 day',
      '-1 day',
      '1 mon',
      '-1 mon',
      '1 year -1 mon',
      '-1 year +1 mon',
      '1 day -1 hour',
      '-1 day -00:00:00.5',
      '0.5 seconds',
      '-0.000001 seconds',
      '100 years',
      '1 year 1 day',
      '-1 year -1 day 1 hour',
      '1 mon -1 day',
      '99 hours',
      '100 hours',
      '-100 hours',
      { text: '2562047788 hours', minMajor: 15 },
      ...times(500, randomInterval),
    ],
  },
  { decl: 'interval(0)', values: ['1 day 00:00:01.6'] },
  { decl: 'uuid', values: ['01234567-89ab-cdef-0123-456789abcdef'] },
  { decl: 'jsonb', values: ['{"a":{"b":[1,2,{"c":"d"}]},"e":1.0e2, "a": 3}', '[]', '{}', '"\\u00e9\\n"', '1.000'] },
  { decl: 'json', values: ['{"a" :1 }', '"\\u00e9"'] },
  { decl: 'bytea', values: ['\\xff', ''] },
  { decl: 'bit(16)', values: ['1010101010101010'] },
  { decl: 'varbit', values: ['', '1', '10101010101', '111111111'] },
  {
    decl: 'inet',
    values: [
      '192.168.0.1/32',
      '10.0.0.1/8',
      '0.0.0.0/0',
      '255.255.255.255',
      '::',
      '::/0',
      '::ffff:1.2.3.4',
      '::1.2.3.4',
      '::0.0.0.2',
      '1::',
      '1:0:0:1::1',
      '2001:db8::1/64',
      '1:2:3:4:5:6:7:8',
      '1:0:2:0:3:0:4:0',
      '1:0:0:2:0:0:0:3',
      'fe80::1:0:0:1',
      '::ffff:0:0',
      '0:0:0:0:0:1:0:0',
      '::1:2:3:4:5:6',
      '::1:2:3:4:5:6:7',
    ],
  },
  { decl: 'cidr', values: ['192.168.1.0/24', '1.2.3.4/32', '2001:db8::/32', '::/0', '::1/128', '::ffff:1.2.3.0/120'] },
  { decl: 'macaddr', values: ['00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '08-00-2b-01-02-03'] },
  { decl: 'macaddr8', values: ['08:00:2b:01:02:03:04:05', '08:00:2b:01:02:03'] },
  { decl: 'point', values: ['(-0,1e300)', '(0.1,-1.5e-07)'] },
  { decl: 'lseg', values: ['[(1,2),(3,4.5)]'] },
  { decl: 'line', values: ['{1,-1,0.5}'] },
  { decl: 'path', values: ['[(1,2),(3,4)]', '((0,0),(1,1),(2,0))'] },
  { decl: 'polygon', values: ['((0,0),(1,1),(2,0.25))'] },
  { decl: 'circle', values: ['<(1,2),3.5>'] },
  { decl: 'pg_lsn', values: ['0/0', 'FFFFFFFF/FFFFFFFF', '1/A'] },
  { decl: 'xid', values: ['0', '4294967295'] },
  { decl: 'xid8', values: ['0', '18446744073709551615'] },
  { decl: 'cid', values: ['7'] },
  { decl: 'tid', values: ['(0,1)', '(4294967295,65535)'] },
  { decl: 'tsvector', values: ["'a':1A,2B,3C,4 'b\\\\c':5 'it''s' 'é x'", '', 'x:16383', "'a''b' c:1,1,2D"] },
  { decl: 'tsvector[]', values: ['{"a b",""}'] },
  { decl: 'jsonpath', values: ['$.a[*] ? (@ > 1)', 'strict $."x y"', '$'] },
  { decl: 'pg_snapshot', values: ['10:20:10,14,15', '1:1:'] },
  { decl: 'txid_snapshot', values: ['10:20:10,14,15'] },
  { decl: 'int2vector', values: ['1 2 3', '', '-5'] },
  { decl: 'oidvector', values: ['1 4294967295'] },
  { decl: 'xml', values: ['<a>b &amp; c</a>', '<?xml version="1.0"?><a/>', '<?xml version="1.1" standalone="yes"?><a/>', 'text only'] },
  { decl: 'int4range', values: ['[1,5)', 'empty', '(,)', '[1,]', '(,3]'] },
  { decl: 'int8range', values: ['[-9223372036854775808,9223372036854775807)'] },
  { decl: 'numrange', values: ['(1.5,2.50]', '[NaN,NaN]', '(,Infinity)'] },
  { decl: 'tsrange', values: ['["2024-01-01 00:00:00","infinity")', '[,"0044-03-15 12:00:00 BC")'] },
  { decl: 'tstzrange', values: ['["2024-01-01 00:00:00+00",)'] },
  { decl: 'daterange', values: ['[2024-01-01,2024-02-01)', '(-infinity,infinity)'] },
  { decl: 'int4multirange', values: ['{}', '{[1,3),[5,7)}', '{(,)}'] },
  { decl: 'nummultirange', values: ['{[1.5,2.5],(3,)}'] },
  { decl: 'tsmultirange', values: ['{["2024-01-01 00:00:00","2024-01-02 00:00:00")}'] },
  { decl: 'datemultirange', values: ['{[2024-01-01,2024-02-01)}'] },
  { decl: 'floe_mood', values: ['sad'] },
  { decl: 'floe_ints', values: ['{}', '[0:0]={5}'] },
  // Arrays
  {
    decl: 'text[]',
    values: [
      '{null,NULLx,"NULL",nUlL}',
      '{"\u000b"}',
      `{"a\vb","c\fd","e\rf"}`,
      '{"}","{",";","a,b"}',
      '{""}',
      '[-5:-4]={a,b}',
      '{é,"é x"}',
      '{"\\\\\\"",x}',
    ],
  },
  { decl: 'int4[]', values: ['[0:1][2:3]={{1,2},{3,4}}', '{{{1},{2}},{{3},{4}}}', '{NULL}', '{{NULL,NULL}}'] },
  { decl: 'box[]', values: ['{(1,1),(0,0);(2,2),(1,1)}', '{}'] },
  { decl: 'int4range[]', values: ['{"[1,2)",empty,NULL}'] },
  { decl: 'tsrange[]', values: ['{"[\\"2024-01-01 00:00:00\\",)"}'] },
  { decl: 'inet[]', values: ['{::1,10.0.0.0/8}'] },
  { decl: 'numeric[]', values: ['{NaN,-Infinity,0.00,1e-5}'] },
  { decl: 'varbit[]', values: ['{"",1}'] },
  { decl: 'bytea[]', values: ['{"\\\\x","\\\\x00"}'] },
  { decl: '"char"[]', values: ['{"",a,"\\\\",é}'] },
  { decl: 'point[]', values: ['{"(1,2)","(-0,0.5)"}'] },
  { decl: 'jsonb[]', values: ['{"{\\"a b\\": [1, 2]}","\\"\\""}'] },
  { decl: 'interval[]', values: ['{"-1 days +00:00:01","1 mon"}'] },
  { decl: 'floe_mood[]', values: ['{happy,NULL}'] },
  { decl: 'floe_money[]', values: ['{1.50,NULL}'] },
  { decl: 'int4multirange[]', values: ['{"{[1,3)}","{}"}'] },
  { decl: 'oidvector[]', values: ['{"1 2",""}'] },
];

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
