/**
 * The one table that maps PostgreSQL column types to destination types.
 *
 * floe receives every value as PostgreSQL prints it (pgoutput text mode, COPY
 * text format) with the source session settings
 *
 *   DateStyle=ISO, IntervalStyle=postgres, extra_float_digits=3,
 *   TimeZone=UTC, bytea_output=hex
 *
 * The DuckDB journal keeps that text unchanged in VARCHAR columns (array
 * values are first rewritten to JSON by `pgArrayToJson`, see pg-array.ts),
 * so the journal is always a lossless image of the source. The typed target
 * table is filled with `INSERT ... SELECT <duckdbCast>(journal column)`; this
 * module gives, per column, the DuckDB type, the SQL that converts the journal
 * text into it, and the Snowflake type name.
 *
 * Where a DuckDB type cannot hold every PostgreSQL value, the rule is: choose
 * a type that holds the value exactly (VARCHAR if need be) when the limit is a
 * property of the column type; and when only a few *values* are out of reach
 * of an otherwise exact type, those values become NULL in the typed target
 * while the journal keeps their exact text. The cases (all covered by
 * test/type-map.test.ts):
 *
 * - numeric without typmod, or whose precision needs more than 38 digits:
 *   VARCHAR holding the exact decimal text (including NaN/Infinity). DuckDB's
 *   DECIMAL stops at 38 digits and DOUBLE would round, so text is the only
 *   lossless choice.
 * - numeric(p,s) -> DECIMAL: 'NaN' becomes NULL; DECIMAL has no such value.
 *   ('Infinity'/'-Infinity' cannot be stored with a typmod; they would be
 *   treated the same.)
 * - timestamp/timestamptz after 294247-01-10 04:00:54.775806 (PostgreSQL goes
 *   to 294276-12-31): NULL; DuckDB's timestamps end there. 'infinity' and
 *   '-infinity' are kept (DuckDB has them); BC values are kept exactly.
 * - interval 'infinity'/'-infinity' (PostgreSQL 17+): NULL; DuckDB intervals
 *   have no infinity.
 * - arrays: PostgreSQL does not fix the number of dimensions of an array
 *   column, DuckDB lists do. The list depth is the declared one (attndims,
 *   default 1); a value with another number of dimensions becomes NULL.
 *   Non-default lower bounds ('[0:1]={1,2}') are dropped, the elements kept.
 * - arrays of types whose array delimiter is not ',' (box) are kept as their
 *   PostgreSQL text in a VARCHAR column instead of a list.
 * - json (not jsonb) accepts unpaired surrogate escapes such as "\ud800"
 *   that DuckDB's JSON type rejects: such values become NULL. Everything else
 *   keeps its exact text (whitespace, key order, duplicate keys, big numbers).
 */
import { FloeError } from '../errors.js';

/** One pg_type row as TYPE_CATALOG_SQL returns it. */
export interface PgTypeInfo {
  readonly oid: number;
  /** pg_type.typname ('_int4' for int4[]). */
  readonly name: string;
  /** pg_type.typcategory. */
  readonly category: string;
  /** Element type of a true array type (typelem), 0 otherwise. */
  readonly elemOid: number;
  /** Base type of a domain (typbasetype), 0 otherwise. */
  readonly baseOid: number;
  readonly isEnum: boolean;
  /** typmod the domain applies to its base type (typtypmod), -1 when none. */
  readonly baseTypmod?: number;
  /** Array element delimiter (typdelim); ',' for everything but box. */
  readonly delimiter?: string;
}

export interface MappedType {
  /** Canonical name after resolving domains and arrays, e.g. 'int4', 'numeric(10,2)', 'text[]'; enums keep their own name. */
  readonly pgType: string;
  /** DuckDB type of the typed target column, e.g. 'INTEGER', 'DECIMAL(10,2)', 'VARCHAR[]'. */
  readonly duckdb: string;
  /** Snowflake type name, e.g. 'NUMBER(10,0)', 'TIMESTAMP_TZ(6)', 'VARIANT', 'ARRAY', 'BINARY', 'VARCHAR'. */
  readonly snowflake: string;
  /** SQL converting the VARCHAR journal value `textExpr` into the DuckDB type (NULL stays NULL). */
  duckdbCast(textExpr: string): string;
  /**
   * True when the journal must store the value as pgArrayToJson(text) (the
   * default ',' delimiter always applies) and the target is a LIST.
   */
  readonly isArray: boolean;
  /** List depth of the DuckDB type (0 for scalars). */
  readonly arrayDims: number;
}

export interface MapOptions {
  /**
   * Declared number of array dimensions (pg_attribute.attndims), for array
   * columns; 0 or absent means 1. Values of another dimensionality become NULL
   * in the typed target (the journal keeps them).
   */
  readonly arrayDims?: number;
}

// ---------------------------------------------------------------------------
// SQL helpers for the cast expressions (DuckDB dialect). `x` is the journal
// text; it may appear several times in an expression.

const sqlString = (s: string): string => `'${s.replaceAll("'", "''")}'`;

/** 'YYYY-MM-DD...rest BC' -> '-YYYY-MM-DD...rest' with the astronomical year (1 BC = year 0), which DuckDB parses. */
const bcToAstronomical = (x: string): string =>
  `printf('-%04d', CAST(split_part(${x}, '-', 1) AS INTEGER) - 1) || substr(${x}, strpos(${x}, '-'), length(${x}) - strpos(${x}, '-') - 2)`;

const dateCast = (x: string): string => `CASE WHEN ${x} LIKE '% BC' THEN CAST(${bcToAstronomical(x)} AS DATE) ELSE CAST(${x} AS DATE) END`;

/**
 * timestamp/timestamptz: BC values are rewritten to astronomical years; values
 * with six-digit years may lie beyond DuckDB's last timestamp (294247-01-10),
 * those become NULL (TRY_CAST) - PostgreSQL prints nothing else malformed there.
 */
const timestampCast =
  (type: 'TIMESTAMP' | 'TIMESTAMPTZ') =>
  (x: string): string =>
    `CASE WHEN ${x} LIKE '% BC' THEN CAST(${bcToAstronomical(x)} AS ${type}) ` +
    `WHEN ${x} LIKE '______-%' THEN TRY_CAST(${x} AS ${type}) ELSE CAST(${x} AS ${type}) END`;

/**
 * IntervalStyle=postgres prints '[N year[s]] [N mon[s]] [N day[s]] [[+-]H:MM:SS[.f]]'
 * (e.g. '-1 years -2 mons +3 days -04:05:06.5', '2562047788:00:54.775807').
 * DuckDB's own interval parser takes neither 'mons' nor signed or very large
 * hours, so the fields are taken apart and summed without normalising
 * (months, days and microseconds stay separate, as in PostgreSQL).
 */
const INTERVAL_RE =
  '^(?:([+-]?[0-9]+) years? ?)?(?:([+-]?[0-9]+) mons? ?)?(?:([+-]?[0-9]+) days? ?)?(?:([+-])?([0-9]+):([0-9]{2}):([0-9]{2}(?:\\.[0-9]{1,6})?))?$';

const intervalCast = (x: string): string => {
  const g = (n: number): string => `regexp_extract(${x}, ${sqlString(INTERVAL_RE)}, ${n})`;
  const num = (n: number, type: string): string => `CAST(coalesce(nullif(${g(n)}, ''), '0') AS ${type})`;
  const months = `to_months(CAST(${num(1, 'BIGINT')} * 12 + ${num(2, 'BIGINT')} AS INTEGER))`;
  const days = `to_days(${num(3, 'INTEGER')})`;
  const micros =
    `to_microseconds(CAST(CASE WHEN ${g(4)} = '-' THEN -1 ELSE 1 END * ` +
    `(${num(5, 'HUGEINT')} * 3600000000 + ${num(6, 'HUGEINT')} * 60000000 + CAST(${num(7, 'DECIMAL(8,6)')} * 1000000 AS HUGEINT)) AS BIGINT))`;
  return (
    `CASE WHEN ${x} IS NULL THEN NULL WHEN ${x} IN ('infinity', '-infinity') THEN NULL ` +
    `WHEN ${x} = '' OR NOT regexp_full_match(${x}, ${sqlString(INTERVAL_RE)}) THEN error('floe: interval text is not in IntervalStyle postgres') ` +
    `ELSE ${months} + ${days} + ${micros} END`
  );
};

const byteaCast = (x: string): string =>
  `CASE WHEN ${x} IS NULL THEN NULL WHEN starts_with(${x}, '\\x') THEN from_hex(substr(${x}, 3)) ` +
  `ELSE error('floe: bytea text is not in hex format (bytea_output=hex)') END`;

const plainCast =
  (type: string) =>
  (x: string): string =>
    `CAST(${x} AS ${type})`;

const identity = (x: string): string => x;

// ---------------------------------------------------------------------------
// numeric typmod

/** Decodes a numeric typmod into precision and scale (scale may be negative or exceed precision since PostgreSQL 15). */
export function decodeNumericTypmod(typmod: number): { precision: number; scale: number } | undefined {
  if (typmod < 4) return undefined;
  const t = typmod - 4;
  return { precision: (t >> 16) & 0xffff, scale: ((t & 0x7ff) ^ 1024) - 1024 };
}

/**
 * DECIMAL(p,s) needs 0 <= s <= p <= 38. numeric(p,s) holds p significant
 * digits ending at 10^-s: with a negative scale the values are integers of up
 * to p-s digits; with s > p they are fractions below 10^(p-s) with s decimals.
 */
function decimalFor(typmod: number): { precision: number; scale: number; pgType: string } | undefined {
  const d = decodeNumericTypmod(typmod);
  if (!d) return undefined;
  const scale = Math.max(d.scale, 0);
  const precision = Math.max(d.precision - d.scale, 0) + scale;
  const pgType = `numeric(${d.precision},${d.scale})`;
  return { precision, scale, pgType };
}

// ---------------------------------------------------------------------------
// The table

interface Scalar {
  readonly pgType: string;
  readonly duckdb: string;
  readonly snowflake: string;
  readonly cast: (x: string) => string;
}

interface Rule {
  /** pg_type.typname values this row covers. */
  readonly names: readonly string[];
  /** For docs: how the DuckDB and Snowflake types are chosen. */
  readonly doc: { readonly duckdb: string; readonly snowflake: string; readonly note?: string };
  readonly map: (name: string, typmod: number) => Scalar;
}

const fixed =
  (duckdb: string, snowflake: string, cast: (x: string) => string, withTypmod?: (typmod: number) => string | undefined) =>
  (name: string, typmod: number): Scalar => {
    const mod = typmod >= 0 && withTypmod ? withTypmod(typmod) : undefined;
    return { pgType: mod === undefined ? name : `${name}(${mod})`, duckdb, snowflake, cast };
  };

/** time/timestamp typmod is the fractional-second precision. */
const precisionMod = (typmod: number): string => String(typmod);
/** varchar/bpchar typmod is the length + 4. */
const lengthMod = (typmod: number): string | undefined => (typmod >= 4 ? String(typmod - 4) : undefined);

const numericRule = (name: string, typmod: number): Scalar => {
  const dec = decimalFor(typmod);
  if (dec && dec.precision <= 38 && dec.precision >= 1) {
    const duckdb = `DECIMAL(${dec.precision},${dec.scale})`;
    return {
      pgType: dec.pgType,
      duckdb,
      // Snowflake's NUMBER allows a scale of at most 37.
      snowflake: dec.scale <= 37 ? `NUMBER(${dec.precision},${dec.scale})` : 'VARCHAR',
      // NaN/±Infinity have no DECIMAL value: NULL in the typed table, exact text in the journal.
      cast: (x) => `CASE WHEN ${x} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE CAST(${x} AS ${duckdb}) END`,
    };
  }
  // Unconstrained numeric or more than 38 digits: exact text (see module comment).
  return { pgType: dec ? dec.pgType : name, duckdb: 'VARCHAR', snowflake: 'VARCHAR', cast: identity };
};

/** Types kept as their PostgreSQL text, listed for the docs; any type not in the table is treated the same. */
const TEXT_FORM_TYPES = [
  'inet',
  'cidr',
  'macaddr',
  'macaddr8',
  'money',
  'xml',
  'tsvector',
  'tsquery',
  'point',
  'line',
  'lseg',
  'box',
  'path',
  'polygon',
  'circle',
  'pg_lsn',
  'xid',
  'xid8',
  'cid',
  'tid',
  'regclass',
  'regtype',
  'regproc',
  'int2vector',
  'oidvector',
  'jsonpath',
  'txid_snapshot',
  'pg_snapshot',
  'int4range',
  'int8range',
  'numrange',
  'daterange',
  'tsrange',
  'tstzrange',
  '*multirange',
  'composite types',
] as const;

const RULES: readonly Rule[] = [
  { names: ['bool'], doc: { duckdb: 'BOOLEAN', snowflake: 'BOOLEAN' }, map: fixed('BOOLEAN', 'BOOLEAN', plainCast('BOOLEAN')) },
  { names: ['int2'], doc: { duckdb: 'SMALLINT', snowflake: 'NUMBER(5,0)' }, map: fixed('SMALLINT', 'NUMBER(5,0)', plainCast('SMALLINT')) },
  { names: ['int4'], doc: { duckdb: 'INTEGER', snowflake: 'NUMBER(10,0)' }, map: fixed('INTEGER', 'NUMBER(10,0)', plainCast('INTEGER')) },
  { names: ['int8'], doc: { duckdb: 'BIGINT', snowflake: 'NUMBER(19,0)' }, map: fixed('BIGINT', 'NUMBER(19,0)', plainCast('BIGINT')) },
  { names: ['oid'], doc: { duckdb: 'UINTEGER', snowflake: 'NUMBER(10,0)' }, map: fixed('UINTEGER', 'NUMBER(10,0)', plainCast('UINTEGER')) },
  {
    names: ['float4'],
    doc: { duckdb: 'FLOAT', snowflake: 'FLOAT', note: "'NaN', 'Infinity', '-Infinity' and -0 kept" },
    map: fixed('FLOAT', 'FLOAT', plainCast('FLOAT')),
  },
  {
    names: ['float8'],
    doc: { duckdb: 'DOUBLE', snowflake: 'FLOAT', note: "'NaN', 'Infinity', '-Infinity' and -0 kept" },
    map: fixed('DOUBLE', 'FLOAT', plainCast('DOUBLE')),
  },
  {
    names: ['numeric'],
    doc: {
      duckdb: 'DECIMAL(p,s) when the digits fit in 38, else VARCHAR',
      snowflake: 'NUMBER(p,s) when the digits fit in 38 (scale <= 37), else VARCHAR',
      note: 'numeric without typmod or wider than 38 digits is kept as exact text; NaN/Infinity in a DECIMAL column become NULL (journal keeps the text); numeric(p,-s) -> DECIMAL(p+s,0), numeric(p,s>p) -> DECIMAL(s,s)',
    },
    map: numericRule,
  },
  { names: ['text'], doc: { duckdb: 'VARCHAR', snowflake: 'VARCHAR' }, map: fixed('VARCHAR', 'VARCHAR', identity) },
  { names: ['varchar'], doc: { duckdb: 'VARCHAR', snowflake: 'VARCHAR' }, map: fixed('VARCHAR', 'VARCHAR', identity, lengthMod) },
  {
    names: ['bpchar'],
    doc: { duckdb: 'VARCHAR', snowflake: 'VARCHAR', note: 'blank padding kept as PostgreSQL prints it' },
    map: fixed('VARCHAR', 'VARCHAR', identity, lengthMod),
  },
  { names: ['name', 'char'], doc: { duckdb: 'VARCHAR', snowflake: 'VARCHAR' }, map: fixed('VARCHAR', 'VARCHAR', identity) },
  {
    names: ['bytea'],
    doc: { duckdb: 'BLOB', snowflake: 'BINARY', note: "from the hex text '\\x..'" },
    map: fixed('BLOB', 'BINARY', byteaCast),
  },
  {
    names: ['date'],
    doc: { duckdb: 'DATE', snowflake: 'DATE', note: 'BC dates and ±infinity kept' },
    map: fixed('DATE', 'DATE', dateCast),
  },
  {
    names: ['time'],
    doc: { duckdb: 'TIME', snowflake: 'TIME(6)', note: "'24:00:00' kept" },
    map: fixed('TIME', 'TIME(6)', plainCast('TIME'), precisionMod),
  },
  {
    names: ['timetz'],
    doc: { duckdb: 'TIMETZ', snowflake: 'VARCHAR', note: 'the UTC offset is kept; Snowflake has no time-with-zone type' },
    map: fixed('TIMETZ', 'VARCHAR', plainCast('TIMETZ'), precisionMod),
  },
  {
    names: ['timestamp'],
    doc: { duckdb: 'TIMESTAMP', snowflake: 'TIMESTAMP_NTZ(6)', note: 'BC and ±infinity kept; after 294247-01-10 NULL' },
    map: fixed('TIMESTAMP', 'TIMESTAMP_NTZ(6)', timestampCast('TIMESTAMP'), precisionMod),
  },
  {
    names: ['timestamptz'],
    doc: { duckdb: 'TIMESTAMPTZ', snowflake: 'TIMESTAMP_TZ(6)', note: 'BC and ±infinity kept; after 294247-01-10 NULL' },
    map: fixed('TIMESTAMPTZ', 'TIMESTAMP_TZ(6)', timestampCast('TIMESTAMPTZ'), precisionMod),
  },
  {
    names: ['interval'],
    doc: {
      duckdb: 'INTERVAL',
      snowflake: 'VARCHAR',
      note: 'months, days and microseconds kept apart; ±infinity (PostgreSQL 17+) become NULL',
    },
    map: fixed('INTERVAL', 'VARCHAR', intervalCast, (typmod) => {
      const precision = typmod & 0xffff;
      return precision === 0xffff ? undefined : String(precision);
    }),
  },
  { names: ['uuid'], doc: { duckdb: 'UUID', snowflake: 'VARCHAR' }, map: fixed('UUID', 'VARCHAR', plainCast('UUID')) },
  {
    names: ['json'],
    doc: {
      duckdb: 'JSON',
      snowflake: 'VARIANT',
      note: 'DuckDB keeps the exact JSON text (whitespace, key order, duplicate keys, big numbers); text DuckDB rejects (a lone \\ud800 escape, which json accepts) becomes NULL. Snowflake: a duplicate key keeps its last value; numbers wider than 38 digits or with an exponent become DOUBLE',
    },
    // PostgreSQL's json only checks the syntax loosely enough to accept unpaired
    // surrogate escapes; DuckDB's JSON refuses them, so such values become NULL.
    map: fixed('JSON', 'VARIANT', (x) => `CASE WHEN json_valid(${x}) THEN CAST(${x} AS JSON) ELSE NULL END`),
  },
  {
    names: ['jsonb'],
    doc: {
      duckdb: 'JSON',
      snowflake: 'VARIANT',
      note: 'DuckDB keeps the exact JSON text; Snowflake: numbers wider than 38 digits or with an exponent become DOUBLE',
    },
    map: fixed('JSON', 'VARIANT', plainCast('JSON')),
  },
  {
    names: ['bit', 'varbit'],
    doc: { duckdb: 'VARCHAR', snowflake: 'VARCHAR', note: "the '0101' text" },
    map: fixed('VARCHAR', 'VARCHAR', identity, (typmod) => String(typmod)),
  },
];

const RULE_BY_NAME = new Map<string, Rule>(RULES.flatMap((r) => r.names.map((n) => [n, r] as const)));

const textForm = (pgType: string): Scalar => ({ pgType, duckdb: 'VARCHAR', snowflake: 'VARCHAR', cast: identity });

export interface MappingDescription {
  readonly pg: string;
  readonly duckdb: string;
  readonly snowflake: string;
  readonly note?: string;
}

/** The mapping table, one row per rule, for generated docs. */
export function describeMapping(): MappingDescription[] {
  return [
    ...RULES.map((r) => ({ pg: r.names.join(', '), ...r.doc })),
    { pg: 'enum types', duckdb: 'VARCHAR', snowflake: 'VARCHAR', note: 'the label text' },
    { pg: 'domains', duckdb: "the base type's mapping", snowflake: "the base type's mapping", note: "the domain's typmod applies" },
    {
      pg: 'T[] (arrays of any type above)',
      duckdb: "T's DuckDB type as a LIST, one [] per declared dimension",
      snowflake: 'ARRAY',
      note: 'journal holds the array as JSON (pgArrayToJson); values with another number of dimensions become NULL; lower bounds dropped; box[] kept as text',
    },
    {
      pg: `anything else (${TEXT_FORM_TYPES.join(', ')})`,
      duckdb: 'VARCHAR',
      snowflake: 'VARCHAR',
      note: 'the PostgreSQL text form',
    },
  ];
}

// ---------------------------------------------------------------------------
// Built-in types, so that a caller can map them without a catalog round trip.
// [oid, typname, typcategory, elemOid(for arrays)]; the test checks these against pg_type.

const BUILTIN_ROWS: readonly (readonly [number, string, string, number])[] = [
  [16, 'bool', 'B', 0],
  [17, 'bytea', 'U', 0],
  [18, 'char', 'Z', 0],
  [19, 'name', 'S', 0],
  [20, 'int8', 'N', 0],
  [21, 'int2', 'N', 0],
  [23, 'int4', 'N', 0],
  [25, 'text', 'S', 0],
  [26, 'oid', 'N', 0],
  [114, 'json', 'U', 0],
  [700, 'float4', 'N', 0],
  [701, 'float8', 'N', 0],
  [1042, 'bpchar', 'S', 0],
  [1043, 'varchar', 'S', 0],
  [1082, 'date', 'D', 0],
  [1083, 'time', 'D', 0],
  [1114, 'timestamp', 'D', 0],
  [1184, 'timestamptz', 'D', 0],
  [1186, 'interval', 'T', 0],
  [1266, 'timetz', 'D', 0],
  [1700, 'numeric', 'N', 0],
  [2950, 'uuid', 'U', 0],
  [3802, 'jsonb', 'U', 0],
  [199, '_json', 'A', 114],
  [1000, '_bool', 'A', 16],
  [1001, '_bytea', 'A', 17],
  [1002, '_char', 'A', 18],
  [1003, '_name', 'A', 19],
  [1005, '_int2', 'A', 21],
  [1007, '_int4', 'A', 23],
  [1009, '_text', 'A', 25],
  [1014, '_bpchar', 'A', 1042],
  [1015, '_varchar', 'A', 1043],
  [1016, '_int8', 'A', 20],
  [1021, '_float4', 'A', 700],
  [1022, '_float8', 'A', 701],
  [1028, '_oid', 'A', 26],
  [1115, '_timestamp', 'A', 1114],
  [1182, '_date', 'A', 1082],
  [1183, '_time', 'A', 1083],
  [1185, '_timestamptz', 'A', 1184],
  [1187, '_interval', 'A', 1186],
  [1231, '_numeric', 'A', 1700],
  [1270, '_timetz', 'A', 1266],
  [2951, '_uuid', 'A', 2950],
  [3807, '_jsonb', 'A', 3802],
];

export const BUILTIN_TYPES: ReadonlyMap<number, PgTypeInfo> = new Map(
  BUILTIN_ROWS.map(([oid, name, category, elemOid]) => [
    oid,
    { oid, name, category, elemOid, baseOid: 0, isEnum: false, baseTypmod: -1, delimiter: ',' },
  ]),
);

/**
 * Returns PgTypeInfo rows (column names as in the interface) for the type oids
 * in $1::oid[] and, transitively, for their array element types and domain
 * base types, so that `mapColumnType` finds everything it needs. A type is an
 * array when it is its element type's array type (this excludes int2vector,
 * oidvector, name and point, which have a typelem but print differently).
 */
export const TYPE_CATALOG_SQL = `
WITH RECURSIVE wanted(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT x.oid
    FROM wanted w
    JOIN pg_catalog.pg_type t ON t.oid = w.oid
    CROSS JOIN LATERAL (VALUES (t.typelem), (t.typbasetype)) AS x(oid)
    WHERE x.oid <> 0
)
SELECT t.oid::int8 AS "oid",
       t.typname::text AS "name",
       t.typcategory::text AS "category",
       (CASE WHEN t.typelem <> 0 AND e.typarray = t.oid THEN t.typelem ELSE 0 END)::int8 AS "elemOid",
       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE 0 END)::int8 AS "baseOid",
       t.typtypmod AS "baseTypmod",
       t.typtype = 'e' AS "isEnum",
       t.typdelim::text AS "delimiter"
FROM wanted w
JOIN pg_catalog.pg_type t ON t.oid = w.oid
LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem`;

/** Builds a PgTypeInfo from a TYPE_CATALOG_SQL row, whatever the client's type parsers did to the values. */
export function typeInfoFromRow(row: Record<string, unknown>): PgTypeInfo {
  const bool = (v: unknown): boolean => v === true || v === 't' || v === 'true';
  return {
    oid: Number(row.oid),
    name: String(row.name),
    category: String(row.category),
    elemOid: Number(row.elemOid),
    baseOid: Number(row.baseOid),
    isEnum: bool(row.isEnum),
    baseTypmod: row.baseTypmod === undefined || row.baseTypmod === null ? -1 : Number(row.baseTypmod),
    delimiter: row.delimiter === undefined || row.delimiter === null ? ',' : String(row.delimiter),
  };
}

// ---------------------------------------------------------------------------
// Mapping

const arrayElemVar = (level: number): string => `floe_e${level}`;

/**
 * The list cast: the journal holds pgArrayToJson's JSON; JSON -> VARCHAR lists
 * of the declared depth -> each element through the element's cast. A value
 * whose depth differs from the declared one becomes NULL.
 */
function arrayCast(dims: number, elemCast: (x: string) => string): (x: string) => string {
  return (x) => {
    const j = `CAST(${x} AS JSON)`;
    const path = (n: number): string => sqlString('$' + '[0]'.repeat(n));
    const wrongDepth =
      `(json_array_length(${j}) > 0 AND json_type(${j}, ${path(dims - 1)}) IS DISTINCT FROM 'ARRAY') ` +
      `OR json_type(${j}, ${path(dims)}) = 'ARRAY'`;
    let body = elemCast(arrayElemVar(dims));
    for (let level = dims; level >= 1; level--) {
      const source = level === 1 ? `CAST(${j} AS VARCHAR${'[]'.repeat(dims)})` : arrayElemVar(level - 1);
      body = `list_transform(${source}, lambda ${arrayElemVar(level)}: ${body})`;
    }
    return `CASE WHEN ${x} IS NULL THEN NULL WHEN ${wrongDepth} THEN NULL ELSE ${body} END`;
  };
}

const MAX_DOMAIN_DEPTH = 32;

function resolve(oid: number, lookup: (oid: number) => PgTypeInfo | undefined): PgTypeInfo {
  const info = lookup(oid) ?? BUILTIN_TYPES.get(oid);
  if (!info) {
    throw new FloeError('schema', `unknown type oid ${oid}`, {
      hint: 'load the type catalog (TYPE_CATALOG_SQL) for every column type before mapping',
      retry: 'none',
    });
  }
  return info;
}

function mapScalar(info: PgTypeInfo, typmod: number): Scalar {
  if (info.isEnum) return textForm(info.name);
  const rule = RULE_BY_NAME.get(info.name);
  // Rules are keyed by name: only trust them for built-in types (oids below FirstNormalObjectId).
  if (rule && info.oid < 16384) return rule.map(info.name, typmod);
  return textForm(info.name);
}

/**
 * Maps one source column (pgoutput's type oid and typmod) to its destination
 * types. `lookup` returns catalog rows (TYPE_CATALOG_SQL); built-in types are
 * known without it.
 */
export function mapColumnType(
  typeOid: number,
  typeMod: number,
  lookup: (oid: number) => PgTypeInfo | undefined,
  options: MapOptions = {},
): MappedType {
  let info = resolve(typeOid, lookup);
  let typmod = typeMod;
  for (let depth = 0; info.baseOid !== 0; depth++) {
    if (depth >= MAX_DOMAIN_DEPTH) throw new FloeError('schema', `domain nesting too deep for type oid ${typeOid}`, { retry: 'none' });
    // The column's typmod wins; else the nearest domain that constrains its base type.
    if (typmod < 0) typmod = info.baseTypmod ?? -1;
    info = resolve(info.baseOid, lookup);
  }

  if (info.elemOid !== 0) {
    let elem = resolve(info.elemOid, lookup);
    for (let depth = 0; elem.baseOid !== 0; depth++) {
      if (depth >= MAX_DOMAIN_DEPTH) throw new FloeError('schema', `domain nesting too deep for type oid ${typeOid}`, { retry: 'none' });
      if (typmod < 0) typmod = elem.baseTypmod ?? -1;
      elem = resolve(elem.baseOid, lookup);
    }
    const delimiter = info.delimiter ?? elem.delimiter ?? ',';
    // Arrays of arrays (a domain over an array used as an element) and arrays
    // with another delimiter (box[]) are kept as their PostgreSQL text.
    if (elem.elemOid !== 0 || delimiter !== ',') {
      return finish(textForm(`${mapScalar(elem, typmod).pgType}[]`), false, 0);
    }
    const dims = Math.max(1, Math.floor(options.arrayDims ?? 1));
    const e = mapScalar(elem, typmod);
    return finish(
      {
        pgType: e.pgType + '[]'.repeat(dims),
        duckdb: e.duckdb + '[]'.repeat(dims),
        snowflake: 'ARRAY',
        cast: arrayCast(dims, e.cast),
      },
      true,
      dims,
    );
  }
  return finish(mapScalar(info, typmod), false, 0);
}

function finish(s: Scalar, isArray: boolean, arrayDims: number): MappedType {
  return {
    pgType: s.pgType,
    duckdb: s.duckdb,
    snowflake: s.snowflake,
    duckdbCast: s.cast,
    isArray,
    arrayDims,
  };
}
