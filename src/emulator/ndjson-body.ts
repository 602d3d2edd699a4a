/**
 * An append's NDJSON body, checked and loaded by DuckDB itself where that is provably what the row-by-row
 * JavaScript path (`parseNdjson`, then `mapRow`/`coerceValue` in streaming.ts) would do.
 *
 * Why: parsing every row with JSON.parse, coercing it in JavaScript and appending each value through the
 * appender cost ~25 µs of emulator CPU per journal row, so the emulator, not floe, capped the emulator
 * benchmark. One set-based INSERT ... SELECT, fed the body whole, parses and casts the rows in C++ for a
 * fraction of that (bench/README.md).
 *
 * Strictness is kept by construction, never by approximation: every rule below either proves that the
 * JavaScript path accepts a row and stores the same values, or sends the whole body (at append) or batch
 * (at commit) down the JavaScript path, which stays the reference and owns every error message. The proofs
 * are byte-level grammars (ndjson-scan.ts):
 * - Append (checkBody): a line is accepted when it is a flat JSON object (scalars and arrays of scalars) by
 *   RFC 8259's grammar, in UTF-8. Otherwise JSON.parse decides.
 * - Commit (plainLoad): every row must be plain, by a shape built from the first row's keys: exactly those
 *   keys, once each, every value in a form whose coercion is the identity or a plain cast. If any row is not,
 *   or a cast fails, the batch takes the JavaScript path, so rows keep their order and their errors.
 */
import type { NamedPipe, TableColumn } from './sql/engine.js';
import { columnExpr } from './rows.js';
import { quoteId, quoteStr } from './sql/tokenizer.js';
import { StreamingFailure } from './streaming.js';
import { isUtf8 } from 'node:buffer';
import { flatObjectLines, plainForm, plainLines, type PlainMember } from './ndjson-scan.js';

/** The body's non-blank lines as SQL rows `l`, in order (the same lines ndjson-scan.ts reads); `$1` is the body as a BLOB. */
const LINES = `(SELECT unnest(string_split(decode($1), chr(10))) AS l) WHERE NOT regexp_full_match(l, '[ \\t\\r]*')`;

export interface CheckedBody {
  readonly bytes: Buffer;
  /** Non-blank lines, each one JSON object. */
  readonly count: number;
  /** The grammar alone checked the body, so commit may load it by SQL; otherwise JSON.parse parsed it (`rows`). */
  readonly rows: unknown[] | undefined;
  /** Every row is plain for this load (found at append), so commit need not scan the body again. */
  readonly plainUnder?: PlainHint;
}

/** A plain load as of a catalog version: the one a channel's last SQL commit used, tried first at its next append. */
export interface PlainHint {
  readonly version: number;
  readonly load: PlainLoad;
}

/**
 * Checks an append's body: every non-blank line one JSON object, or a 400 naming the first that is not.
 *
 * With a hint, the plain-row scan runs first: a UTF-8 body whose every line is plain for a load is also a
 * flat object per line (each plain form is a flat value; test/ndjson-scan.test.ts checks it line by line),
 * so the common body is scanned once, here, instead of at append and again at commit.
 */
export function checkBody(bytes: Buffer, hint?: PlainHint): CheckedBody {
  if (hint && isUtf8(bytes)) {
    const count = plainLines(bytes, hint.load.members);
    if (count >= 0) return { bytes, count, rows: undefined, plainUnder: hint };
  }
  const count = flatObjectLines(bytes);
  return count === undefined ? parsedBody(bytes) : { bytes, count, rows: undefined };
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

/** How a batch of plain rows is loaded: the rows' shape, and the INSERT that loads them (`$1`: the body as a BLOB). */
export interface PlainLoad {
  readonly members: readonly PlainMember[];
  readonly sql: string;
}

/**
 * The plain load of a batch into `table`; undefined when this pipe, table or key order always takes the
 * JavaScript path. `rowsArePlain` decides for a given body.
 *
 * `keys` is the key order of the batch's first row. A plain row is a JSON object with exactly these keys,
 * in this order, once each, every value in a form the JavaScript path accepts unchanged (ndjson-scan.ts).
 * Then `extraction` reads the values (a string decoded, anything else as its JSON text, null as NULL) and
 * columnExpr casts them as the JavaScript path does. A key that may be left out (see mayLack) is
 * optional in place; a row in any other order or shape takes the JavaScript path with its batch.
 */
export function plainLoad(
  table: string,
  columns: readonly TableColumn[],
  named: NamedPipe | undefined,
  binaryFormat: 'BASE64' | 'HEX',
  keys: readonly string[],
): PlainLoad | undefined {
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
  // A key that JSON writes with an escape could be written in several ways: JavaScript's to match.
  if (keys.some((key) => /["\\\x00-\x1f]/.test(key))) return undefined;
  const members: PlainMember[] = [];
  for (const [i, k] of (order as number[]).entries()) {
    const c = columns[k]!;
    const form = plainForm(c.type);
    if (!form) return undefined;
    members.push({ key: Buffer.from(`"${keys[i]!}":`), optional: i > 0 && mayLack(c), nullable: c.nullable, form });
  }
  const values = extraction(columns);
  const sql =
    `INSERT INTO ${table} (${columns.map((c) => quoteId(c.name)).join(', ')}) ` +
    `SELECT ${columns.map((c, k) => columnExpr(c.type, values.value(k), binaryFormat)).join(', ')} ` +
    `FROM (SELECT ${values.select} AS __v FROM ${LINES})`;
  return { members, sql };
}

/**
 * The values of a line, one VARCHAR per column, as json_extract_string reads them: a string decoded,
 * anything else as its JSON text, null or a missing key as NULL. `select` yields them as `__v`, and
 * `value(k)` reads the `k`th (from 0).
 *
 * json_transform into a STRUCT of VARCHARs parses each line once and reads every member in one pass,
 * about half the CPU of json_extract_string with a list of paths (bench/README.md), and reads the same
 * values (test/ndjson-scan.test.ts, with json_extract_string as the oracle). Its STRUCT needs names that
 * differ in more than case, as DuckDB compares field names without case; a table without such names keeps
 * json_extract_string.
 */
export function extraction(columns: readonly TableColumn[]): { readonly select: string; readonly value: (k: number) => string } {
  if (new Set(columns.map((c) => c.name.toLowerCase())).size === columns.length) {
    const fields = Object.fromEntries(columns.map((c) => [c.name, 'VARCHAR']));
    return { select: `json_transform(l, ${quoteStr(JSON.stringify(fields))})`, value: (k) => `struct_extract_at(__v, ${k + 1})` };
  }
  const paths = columns.map((c) => quoteStr(`$."${c.name}"`)).join(', ');
  return { select: `json_extract_string(l, [${paths}])`, value: (k) => `__v[${k + 1}]` };
}

/**
 * Every row of a body checked by checkBody (`count` rows) is plain for the load, built at catalog `version`.
 * A body found plain at append for a load of the same version and statement needs no second scan: the
 * statement depends on the table's columns alone, and those cannot change without a new version.
 */
export function rowsArePlain(body: CheckedBody, load: PlainLoad, version: number): boolean {
  if (body.plainUnder?.version === version && body.plainUnder.load.sql === load.sql) return true;
  return body.rows === undefined && plainLines(body.bytes, load.members) === body.count;
}

/**
 * The leading batches that one plain load takes (`loadFor` builds it from the first body's first row, with
 * the columns of catalog `version`):
 * the first, and each next one whose every row is plain for the same load. Undefined when the first is not.
 */
export function plainGroup<B extends { readonly body: CheckedBody }>(
  batches: readonly B[],
  version: number,
  loadFor: (keys: readonly string[]) => PlainLoad | undefined,
): { readonly batches: B[]; readonly load: PlainLoad } | undefined {
  const first = batches[0];
  if (first === undefined || first.body.rows !== undefined) return undefined;
  const load = loadFor(firstRowKeys(first.body.bytes));
  if (load === undefined || !rowsArePlain(first.body, load, version)) return undefined;
  let n = 1;
  while (n < batches.length && rowsArePlain(batches[n]!.body, load, version)) n++;
  return { batches: batches.slice(0, n), load };
}

const NEWLINE = Buffer.from('\n');

/**
 * Bodies as one, each starting on a line of its own (the SQL load reads non-blank lines). The copy goes into
 * `scratch` when it fits: a buffer kept across commits, since a fresh allocation of megabytes costs a page
 * fault per 4 kB on first touch, several times the copy itself.
 */
export function joinBodies(bodies: readonly CheckedBody[], scratch: Buffer): Buffer {
  if (bodies.length === 1) return bodies[0]!.bytes;
  const parts = bodies.flatMap((b) => (b.bytes[b.bytes.length - 1] === 0x0a ? [b.bytes] : [b.bytes, NEWLINE]));
  const size = parts.reduce((n, p) => n + p.length, 0);
  if (size > scratch.length) return Buffer.concat(parts, size);
  let at = 0;
  for (const p of parts) at += p.copy(scratch, at);
  return scratch.subarray(0, size);
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
