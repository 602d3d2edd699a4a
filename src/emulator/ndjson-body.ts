/**
 * An append's NDJSON body, checked and loaded by DuckDB itself where that is provably what the row-by-row
 * JavaScript path (`parseNdjson`, then `mapRow`/`coerceValue` in streaming.ts) would do.
 *
 * Why: parsing every row with JSON.parse, coercing it in JavaScript and appending each value through the
 * appender cost ~25 µs of emulator CPU per journal row, so the emulator, not floe, capped the emulator
 * benchmark. DuckDB's regular expressions and JSON functions check, parse and cast the rows in C++ for
 * less than half of that (bench/README.md).
 *
 * Strictness is kept by construction, never by approximation: every rule below either proves that the
 * JavaScript path accepts a row and stores the same values, or sends the whole body (at append) or batch
 * (at commit) down the JavaScript path, which stays the reference and owns every error message.
 * - Append (VALIDATE_SQL): a line is accepted when it matches a strict grammar of a flat JSON object, or
 *   when DuckDB's JSON reader accepts it and it holds nothing like what that reader takes and JSON.parse
 *   does not. Otherwise JSON.parse decides.
 * - Commit (plainInsertSql): one regular expression per batch, built from the first row's keys, proves each
 *   row plain: exactly those keys, once each, every value in a form whose coercion is the identity or a
 *   plain cast. If any row is not, the SQL raises, the transaction rolls back and the batch takes the
 *   JavaScript path, so rows keep their order and their errors.
 */
import type { DuckDBPreparedStatement } from '@duckdb/node-api';
import { DuckDBBlobValue } from '@duckdb/node-api';
import type { NamedPipe, TableColumn } from './sql/engine.js';
import type { SfType } from './sql/types.js';
import { columnExpr } from './rows.js';
import { quoteId, quoteStr } from './sql/tokenizer.js';
import { StreamingFailure } from './streaming.js';

/** The body's non-blank lines as SQL rows `l`, in order; `$1` is the body as a BLOB (decode() refuses bad UTF-8). */
const LINES = `(SELECT unnest(string_split(decode($1), chr(10))) AS l) WHERE NOT regexp_full_match(l, '[ \\t\\r]*')`;

/**
 * One character of a JSON string as JSON.parse and DuckDB read it alike: no raw control character, only
 * the standard escapes, each decoding to exactly one character, and no \u escape that JavaScript keeps but
 * DuckDB does not (NUL, surrogates).
 */
const STRING_CHAR = String.raw`(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:0(?:0(?:0[1-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F])|[1-9a-fA-F][0-9a-fA-F]{2})|[1-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))`;
const WS = String.raw`[ \t\r]*`;
const SCALAR = String.raw`(?:"${STRING_CHAR}*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)`;
const FLAT_VALUE = String.raw`(?:${SCALAR}|\[${WS}(?:${SCALAR}${WS}(?:,${WS}${SCALAR}${WS})*)?\])`;
const MEMBER = String.raw`"${STRING_CHAR}*"${WS}:${WS}${FLAT_VALUE}`;
/**
 * A line that is certainly one JSON object to JSON.parse: RFC 8259's grammar, restricted to values that are
 * scalars or arrays of scalars (what journals hold). One pass of RE2's automaton; strings are matched whole,
 * so their contents never look like anything else.
 */
const FLAT_OBJECT = String.raw`${WS}\{${WS}(?:${MEMBER}${WS}(?:,${WS}${MEMBER}${WS})*)?\}${WS}`;
/**
 * For other lines DuckDB's JSON reader decides, but it also takes what JSON.parse refuses (NaN, Infinity,
 * trailing commas): a line with anything like those anywhere, even inside a string, is left to JSON.parse,
 * as is one whose first character is not `{`.
 */
const NOT_SURE = String.raw`^[ \t\r]*[^ \t\r{]|[:,\[]\s*[-+]?(?i:nan|inf)|,\s*[}\]]`;

export const VALIDATE_SQL =
  `SELECT count(*)::INTEGER, coalesce(bool_and(regexp_full_match(l, ${quoteStr(FLAT_OBJECT)}) OR ` +
  `CASE WHEN json_valid(l) THEN NOT regexp_matches(l, ${quoteStr(NOT_SURE)}) ELSE false END), true) FROM ${LINES}`;

export interface CheckedBody {
  readonly bytes: Buffer;
  /** Non-blank lines, each one JSON object. */
  readonly count: number;
  /** DuckDB checked the body alone, so commit may load it by SQL; otherwise JSON.parse parsed it (`rows`). */
  readonly rows: unknown[] | undefined;
}

/**
 * Checks an append's body: every non-blank line one JSON object, or a 400 naming the first that is not.
 * `check` is VALIDATE_SQL prepared on a connection of the emulator's database.
 */
export async function checkBody(check: DuckDBPreparedStatement, bytes: Buffer): Promise<CheckedBody> {
  try {
    check.bind([new DuckDBBlobValue(bytes)]);
    const [count, sure] = (await check.runAndReadAll()).getRows()[0] as [number, boolean];
    if (sure) return { bytes, count, rows: undefined };
  } catch {
    // Not UTF-8, or DuckDB refused a line: JSON.parse decides.
  }
  return parsedBody(bytes);
}

/** A body checked by JSON.parse alone (the reference path). */
export function parsedBody(bytes: Buffer): CheckedBody {
  const rows = parseNdjson(bytes.toString('utf8'));
  return { bytes, count: rows.length, rows };
}

/** The rows of an NDJSON body: every non-blank line must be one JSON object (a 400 names the first that is not). */
export function parseNdjson(text: string): unknown[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  // One JSON.parse for the whole body is several times cheaper than one per line; it is only trusted when every
  // line is one object, otherwise the per-line pass below finds the offending line.
  if (lines.every((l) => l.startsWith('{') && (l.endsWith('}') || l.endsWith('}\r')))) {
    try {
      const all = JSON.parse(`[${lines.join(',')}]`) as unknown[];
      if (all.length === lines.length && all.every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) return all;
    } catch {
      // fall through to the per-line pass
    }
  }
  return lines.map((l, k) => {
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      v = undefined;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new StreamingFailure(400, 'ERR_INVALID_ROW_FORMAT', `Invalid row format: line ${k + 1} is not a JSON object.`);
    }
    return v;
  });
}

/** Raised by the SQL load for a row it cannot prove equal to the JavaScript path's result. */
export const NOT_PLAIN = 'floe-emulator: row needs the JavaScript path';

const regexText = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const TS = String.raw`[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?`;
const TIME = String.raw`(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?`;
/** An array of strings without escapes: JSON.stringify writes it back byte for byte. */
const PLAIN_ARRAY = String.raw`\[(?:"[^"\\\x00-\x1f]*"(?:,"[^"\\\x00-\x1f]*")*)?\]`;

/**
 * For a column: the JSON value texts (a regular expression) that coerceValue accepts and stores as the
 * value DuckDB's json_extract_string text casts to (columnExpr), and a check on that text `v` the
 * expression cannot make. A cast that fails sends the batch to the JavaScript path too, so dates such as
 * February 30 need no check here. Undefined when the type always takes the JavaScript path.
 */
function plainValue(type: SfType, v: string): { pattern: string; check?: string } | undefined {
  switch (type.base) {
    case 'NUMBER': {
      // plainInteger: integer strings of at most 18 digits, JSON integers of at most 15 (always safe), both
      // within the precision.
      const digits = type.size - type.scale;
      if (digits < 1) return { pattern: `"0"|0` };
      const inString = Math.min(18, digits) - 1;
      const inNumber = Math.min(15, digits) - 1;
      return { pattern: `"(?:0|-?[1-9][0-9]{0,${inString}})"|0|-?[1-9][0-9]{0,${inNumber}}` };
    }
    case 'VARCHAR':
      // Each STRING_CHAR is one character (code point) of the value, as `[...s].length` counts them. RE2
      // bounds repetitions at 1,000; longer limits are checked on the bytes, which bound characters from above.
      return type.size <= 1000
        ? { pattern: `"${STRING_CHAR}{0,${type.size}}"` }
        : { pattern: `"${STRING_CHAR}*"`, check: type.size < 16_777_216 ? `strlen(${v}) <= ${type.size}` : undefined };
    case 'BOOLEAN':
      return { pattern: 'true|false' };
    case 'DATE':
      return { pattern: `"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}"` };
    case 'TIME':
      return { pattern: `"${TIME}"` };
    case 'TIMESTAMP_NTZ':
      return { pattern: `"${TS}"` };
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ':
      return { pattern: `"${TS}(?:Z|[+-][0-9]{2}:[0-9]{2})"` };
    case 'ARRAY':
      // json_extract_string writes an array back minified: the same text as JSON.stringify for these.
      return { pattern: PLAIN_ARRAY };
    default:
      return undefined;
  }
}

/**
 * The INSERT that loads a checked body into `table` by SQL (`$1`: the body as a BLOB), raising NOT_PLAIN
 * unless every row is plain; undefined when this pipe, table or key order always takes the JavaScript path.
 *
 * `keys` is the key order of the batch's first row. Each row must match one regular expression built for
 * that order (one pass of RE2's automaton): it proves that the line is a JSON object with exactly these
 * keys, once each, every value in a form the JavaScript path accepts unchanged. Then json_extract_string
 * reads the values (a string decoded, anything else as its JSON text, null as NULL). A key that may be
 * left out (see mayLack) is optional in place; a row in any other order or shape takes the JavaScript
 * path with its batch.
 */
export function plainInsertSql(
  table: string,
  columns: readonly TableColumn[],
  named: NamedPipe | undefined,
  binaryFormat: 'BASE64' | 'HEX',
  keys: readonly string[],
): string | undefined {
  // Column paths and transformations stay in JavaScript.
  if (named?.columns || keys.length === 0) return undefined;
  const byName = new Map(columns.map((c, k) => [c.name, k]));
  const order = keys.map((key) => byName.get(key));
  if (order.some((k) => k === undefined) || new Set(order).size !== order.length) return undefined;
  // A key left out is NULL unless its column has a DEFAULT (JavaScript fills it) or is NOT NULL (JavaScript
  // refuses the row). A case-insensitive pipe would also look for a key that differs only in case; every key
  // of a plain row names a column exactly, so there is none unless two columns differ only in case.
  const byCase = named?.matchCase === 'sensitive' || new Set(columns.map((c) => c.name.toUpperCase())).size === columns.length;
  const mayLack = (c: TableColumn) => c.nullable && !c.hasDefault && byCase;
  if (columns.some((c, k) => !order.includes(k) && !mayLack(c))) return undefined;
  if (keys.some((key) => /["\\\x00-\x1f]/.test(key))) return undefined;
  let pattern = '';
  const checks: string[] = [];
  for (const [i, k] of (order as number[]).entries()) {
    const c = columns[k]!;
    const p = plainValue(c.type, `__v[${k + 1}]`);
    if (!p) return undefined;
    const value = `"${regexText(keys[i]!)}":(?:${c.nullable ? `null|${p.pattern}` : p.pattern})`;
    const optional = i > 0 && mayLack(c);
    pattern += i === 0 ? value : optional ? `(?:,${value})?` : `,${value}`;
    if (p.check) checks.push(`coalesce(${p.check}, true)`);
  }
  const regex = quoteStr(`[ \\t\\r]*\\{${pattern}\\}[ \\t\\r]*`);
  const notPlain = `error(${quoteStr(NOT_PLAIN)})`;
  const paths = columns.map((c) => quoteStr(`$."${c.name}"`)).join(', ');
  const casts = columns.map((c, k) => columnExpr(c.type, `__v[${k + 1}]`, binaryFormat)).join(', ');
  return (
    `INSERT INTO ${table} (${columns.map((c) => quoteId(c.name)).join(', ')}) ` +
    `SELECT ${casts} FROM (SELECT json_extract_string(l, [${paths}]) AS __v FROM ${LINES} ` +
    `AND CASE WHEN regexp_full_match(l, ${regex}) THEN true ELSE ${notPlain} END)` +
    (checks.length > 0 ? ` WHERE CASE WHEN ${checks.join(' AND ')} THEN true ELSE ${notPlain} END` : '')
  );
}

/** The keys of a body's first row, in order (empty if it has none or is not an object). */
export function firstRowKeys(bytes: Buffer): string[] {
  const end = bytes.indexOf(0x0a);
  try {
    const row = JSON.parse(bytes.subarray(0, end < 0 ? bytes.length : end).toString('utf8')) as unknown;
    return row !== null && typeof row === 'object' && !Array.isArray(row) ? Object.keys(row) : [];
  } catch {
    return [];
  }
}
