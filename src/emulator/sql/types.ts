/**
 * Snowflake data types as the emulator models them, and their DuckDB storage
 * types. The Snowflake type of every column is kept as the DuckDB column's
 * COMMENT (transactional with the DDL, dropped with the table), so VARCHAR
 * lengths, TIMESTAMP_TZ vs TIMESTAMP_LTZ and VARIANT vs ARRAY vs OBJECT
 * survive even though DuckDB stores them alike.
 */
import { SqlFailure } from './failure.js';

export type SfBase =
  | 'NUMBER'
  | 'FLOAT'
  | 'VARCHAR'
  | 'BOOLEAN'
  | 'DATE'
  | 'TIME'
  | 'TIMESTAMP_NTZ'
  | 'TIMESTAMP_TZ'
  | 'TIMESTAMP_LTZ'
  | 'BINARY'
  | 'VARIANT'
  | 'ARRAY'
  | 'OBJECT';

export interface SfType {
  readonly base: SfBase;
  /** NUMBER precision, VARCHAR/BINARY length, TIME/TIMESTAMP fractional precision. */
  readonly size: number;
  /** NUMBER scale. */
  readonly scale: number;
}

const VARCHAR_MAX = 16_777_216;
const BINARY_MAX = 8_388_608;

const ALIASES: Record<string, SfBase> = {
  NUMBER: 'NUMBER',
  DECIMAL: 'NUMBER',
  NUMERIC: 'NUMBER',
  INT: 'NUMBER',
  INTEGER: 'NUMBER',
  BIGINT: 'NUMBER',
  SMALLINT: 'NUMBER',
  TINYINT: 'NUMBER',
  BYTEINT: 'NUMBER',
  FLOAT: 'FLOAT',
  FLOAT4: 'FLOAT',
  FLOAT8: 'FLOAT',
  DOUBLE: 'FLOAT',
  REAL: 'FLOAT',
  VARCHAR: 'VARCHAR',
  STRING: 'VARCHAR',
  TEXT: 'VARCHAR',
  CHAR: 'VARCHAR',
  CHARACTER: 'VARCHAR',
  NVARCHAR: 'VARCHAR',
  BOOLEAN: 'BOOLEAN',
  DATE: 'DATE',
  TIME: 'TIME',
  DATETIME: 'TIMESTAMP_NTZ',
  TIMESTAMP: 'TIMESTAMP_NTZ',
  TIMESTAMP_NTZ: 'TIMESTAMP_NTZ',
  TIMESTAMPNTZ: 'TIMESTAMP_NTZ',
  TIMESTAMP_TZ: 'TIMESTAMP_TZ',
  TIMESTAMPTZ: 'TIMESTAMP_TZ',
  TIMESTAMP_LTZ: 'TIMESTAMP_LTZ',
  TIMESTAMPLTZ: 'TIMESTAMP_LTZ',
  BINARY: 'BINARY',
  VARBINARY: 'BINARY',
  VARIANT: 'VARIANT',
  ARRAY: 'ARRAY',
  OBJECT: 'OBJECT',
};

/** Builds a type from its name and optional arguments (`NUMBER(10,2)` → name NUMBER, args [10, 2]). */
export function sfType(name: string, args: readonly number[] = []): SfType {
  const upper = name.toUpperCase();
  const base = ALIASES[upper];
  if (!base) throw SqlFailure.compilation(`Unsupported data type '${upper}'.`, '002040', '42601');
  const [a, b] = args;
  switch (base) {
    case 'NUMBER': {
      const isInt = upper !== 'NUMBER' && upper !== 'DECIMAL' && upper !== 'NUMERIC';
      const p = isInt ? 38 : (a ?? 38);
      const s = isInt ? 0 : (b ?? 0);
      if (p < 1 || p > 38) throw SqlFailure.compilation(`Unsupported data type 'NUMBER(${p}, ${s})'.`, '002040', '42601');
      if (s < 0 || s > 37 || s > p) throw SqlFailure.compilation(`Unsupported data type 'NUMBER(${p}, ${s})'.`, '002040', '42601');
      return { base, size: p, scale: s };
    }
    case 'VARCHAR': {
      const n = a ?? (upper === 'CHAR' || upper === 'CHARACTER' ? 1 : VARCHAR_MAX);
      if (n < 1 || n > 134_217_728) throw SqlFailure.compilation(`Unsupported data type 'VARCHAR(${n})'.`, '002040', '42601');
      return { base, size: n, scale: 0 };
    }
    case 'BINARY':
      return { base, size: a ?? BINARY_MAX, scale: 0 };
    case 'TIME':
    case 'TIMESTAMP_NTZ':
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ': {
      const p = a ?? 9;
      if (p < 0 || p > 9) throw SqlFailure.compilation(`Unsupported data type '${base}(${p})'.`, '002040', '42601');
      return { base, size: p, scale: 0 };
    }
    default:
      return { base, size: 0, scale: 0 };
  }
}

/** Snowflake's canonical rendering, as DESCRIBE TABLE shows it. */
export function renderSfType(t: SfType): string {
  switch (t.base) {
    case 'NUMBER':
      return `NUMBER(${t.size},${t.scale})`;
    case 'VARCHAR':
    case 'BINARY':
    case 'TIME':
    case 'TIMESTAMP_NTZ':
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ':
      return `${t.base}(${t.size})`;
    default:
      return t.base;
  }
}

/** Parses a rendering produced by `renderSfType` (column comments). */
export function parseSfType(text: string): SfType | undefined {
  const m = /^([A-Z_]+)(?:\((\d+)(?:,(\d+))?\))?$/.exec(text.trim());
  if (!m) return undefined;
  try {
    return sfType(m[1]!, [m[2], m[3]].filter((x): x is string => x !== undefined).map(Number));
  } catch {
    return undefined;
  }
}

/** The DuckDB type a Snowflake type is stored as. */
export function duckType(t: SfType): string {
  switch (t.base) {
    case 'NUMBER':
      return `DECIMAL(${t.size},${t.scale})`;
    case 'FLOAT':
      return 'DOUBLE';
    case 'VARCHAR':
      return 'VARCHAR';
    case 'BOOLEAN':
      return 'BOOLEAN';
    case 'DATE':
      return 'DATE';
    case 'TIME':
      return 'TIME';
    case 'TIMESTAMP_NTZ':
      return 'TIMESTAMP';
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ':
      return 'TIMESTAMPTZ';
    case 'BINARY':
      return 'BLOB';
    case 'VARIANT':
    case 'ARRAY':
    case 'OBJECT':
      return 'JSON';
  }
}

/** Best-effort Snowflake type of a DuckDB column that has no comment (expressions, DuckDB-created tables). */
export function sfTypeOfDuck(duck: string): SfType {
  const d = duck.toUpperCase();
  const dec = /^DECIMAL\((\d+),\s*(\d+)\)$/.exec(d);
  if (dec) return { base: 'NUMBER', size: Number(dec[1]), scale: Number(dec[2]) };
  if (/^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT)$/.test(d)) {
    return { base: 'NUMBER', size: 38, scale: 0 };
  }
  if (d === 'DOUBLE' || d === 'FLOAT') return { base: 'FLOAT', size: 0, scale: 0 };
  if (d === 'BOOLEAN') return { base: 'BOOLEAN', size: 0, scale: 0 };
  if (d === 'DATE') return { base: 'DATE', size: 0, scale: 0 };
  if (d.startsWith('TIME WITH') || d === 'TIME') return { base: 'TIME', size: 9, scale: 0 };
  if (d === 'TIMESTAMP WITH TIME ZONE' || d === 'TIMESTAMPTZ') return { base: 'TIMESTAMP_TZ', size: 9, scale: 0 };
  if (d.startsWith('TIMESTAMP')) return { base: 'TIMESTAMP_NTZ', size: 9, scale: 0 };
  if (d === 'BLOB') return { base: 'BINARY', size: BINARY_MAX, scale: 0 };
  if (d === 'JSON' || d.endsWith('[]') || d.startsWith('STRUCT') || d.startsWith('MAP')) return { base: 'VARIANT', size: 0, scale: 0 };
  return { base: 'VARCHAR', size: VARCHAR_MAX, scale: 0 };
}

/** The lower-case `rowType[].type` name of the SQL API. */
export function apiTypeName(t: SfType): string {
  switch (t.base) {
    case 'NUMBER':
      return 'fixed';
    case 'FLOAT':
      return 'real';
    case 'VARCHAR':
      return 'text';
    default:
      return t.base.toLowerCase();
  }
}

/**
 * Whether ALTER COLUMN ... SET DATA TYPE may change `from` to `to`: Snowflake only
 * lengthens VARCHAR and raises NUMBER precision at the same scale.
 */
export function isWidening(from: SfType, to: SfType): boolean {
  if (from.base !== to.base) return false;
  if (from.base === 'VARCHAR' || from.base === 'BINARY') return to.size >= from.size;
  if (from.base === 'NUMBER') return to.scale === from.scale && to.size >= from.size;
  return to.size === from.size && to.scale === from.scale;
}
