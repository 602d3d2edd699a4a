/**
 * NDJSON encoding of changes: the row format the Snowflake destination sends
 * to Snowpipe Streaming, one JSON object per change and line:
 *
 *   {"id":"1","name":"a \"b\"","tags":"[\"x\",null]","note":null,
 *    "_floe_lsn":"23456789","_floe_ordinal":0,"_floe_op":"i",
 *    "_floe_commit_time":"2026-01-02T03:04:05.123456Z","_floe_unchanged":null}
 *
 * - data columns by name, in table order; each value is a JSON string holding
 *   the exact PostgreSQL text (the journal format of every destination), `null`
 *   for SQL NULL; array columns hold the JSON text from pgArrayToJson (as a
 *   string, like the DuckDB journal's VARCHAR);
 * - an unchanged TOAST value (not sent by the server) is `null` in its column
 *   and its column name is listed in `_floe_unchanged` (otherwise `null`), so
 *   NULL and "not sent" stay distinguishable;
 * - `_floe_lsn` is the commit LSN as a decimal string (it does not fit a JSON
 *   number exactly), `_floe_ordinal` a number (-1 for snapshot rows),
 *   `_floe_op` one of r/i/u/d/t, `_floe_commit_time` an ISO 8601 UTC time with
 *   microseconds, or `null` for snapshot rows.
 *
 * Options for the Snowflake journal (snowflake-destination.ts): `keyName`
 * maps column names to the stored Snowflake column names (also inside
 * `_floe_unchanged`), `upperCaseMeta` writes the metadata keys upper-case
 * (`_FLOE_LSN`, ...), and a row may carry `_FLOE_SEQ` (load order, a decimal
 * string) and `_FLOE_RANGE` (snapshot range index) before `_floe_unchanged`.
 *
 * The encoder writes UTF-8 bytes straight into one reused, growing Buffer
 * with a JS loop per string (no JSON.stringify and no object per row: see the
 * measurements in anchors.md §A.8). Escaping matches JSON.stringify: `"`, `\`,
 * \b \f \n \r \t, other control characters as \u00XX, lone surrogates as
 * \uXXXX; everything else, non-ASCII included, is written as UTF-8.
 */
import type { Cell, Change, ChangeOp, Position, TableSchema } from '../../model.js';
import type { TupleBytes } from '../../postgres/pgoutput.js';
import { pgArrayToJson } from '../../schema/pg-array.js';
import { CopyRows } from '../../postgres/copy-text.js';
import type { SnapshotChunk } from '../destination.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const HEX = [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66];

/** Per table: the bytes before each value (`{"col":` or `,"col":`) and which columns are arrays. */
interface TablePlan {
  readonly prefixes: Buffer[];
  readonly prefixViews: DataView[];
  readonly isArray: boolean[];
  readonly anyArray: boolean;
  /** Bytes of all prefixes together. */
  readonly prefixBytes: number;
  /** Each column name as a JSON string, for `_floe_unchanged`. */
  readonly names: Buffer[];
}

const ascii = (s: string): Buffer => Buffer.from(s, 'utf8');

const NULL = ascii('null');

/** COPY escapes that are the same two bytes in JSON: backslash followed by one of these. */
const JSON_SHORT_ESCAPE = new Uint8Array(128);
for (const c of '\\nrtbf') JSON_SHORT_ESCAPE[c.charCodeAt(0)] = 1;

export interface NdjsonOptions {
  /** Key written for a column (default: the column name). */
  readonly keyName?: (column: string) => string;
  /** Metadata keys in upper case (`_FLOE_LSN`) instead of lower case. (Default: false) */
  readonly upperCaseMeta?: boolean;
}

/** Extra per-row fields of the Snowflake journal. */
export interface RowExtra {
  /** Load order of the row in its journal. */
  readonly seq: bigint;
  /** Snapshot range index, for snapshot rows. */
  readonly range?: number;
}

/** Commit time (microseconds since the Unix epoch) as `"YYYY-MM-DDTHH:MM:SS.ffffffZ"`, or `null` for 0. */
export function formatCommitTime(micros: bigint): string {
  if (micros === 0n) return 'null';
  let ms = micros / 1000n;
  let us = micros % 1000n;
  if (us < 0n) {
    us += 1000n;
    ms -= 1n;
  }
  const iso = new Date(Number(ms)).toISOString(); // ...SS.mmmZ
  return `"${iso.slice(0, -1)}${us.toString().padStart(3, '0')}Z"`;
}

export class NdjsonEncoder {
  #buf: Buffer;
  /** The same bytes as #buf, for writing 4 at a time. */
  #view: DataView;
  #len = 0;
  readonly #plans = new WeakMap<TableSchema, TablePlan>();
  #lsn = -1n;
  #lsnPart: Buffer = Buffer.alloc(0);
  #lsnPartView = viewOf(this.#lsnPart);
  #time = -1n;
  #op: ChangeOp | undefined;
  #opPart: Buffer = Buffer.alloc(0);
  #opPartEnd: Buffer = Buffer.alloc(0);
  #opPartEndView = viewOf(this.#opPartEnd);
  readonly #keyName: (column: string) => string;
  readonly #meta: (key: string) => string;
  readonly #unchangedKey: Buffer;
  readonly #endNull: Buffer;

  constructor(initialBytes = 1 << 20, options: NdjsonOptions = {}) {
    this.#buf = Buffer.allocUnsafe(Math.max(64, initialBytes));
    this.#view = viewOf(this.#buf);
    this.#keyName = options.keyName ?? ((c) => c);
    this.#meta = options.upperCaseMeta ? (k) => k.toUpperCase() : (k) => k;
    this.#unchangedKey = ascii(`,"${this.#meta('_floe_unchanged')}":`);
    this.#endNull = ascii(`,"${this.#meta('_floe_unchanged')}":null}\n`);
  }

  /** Bytes encoded since the last reset. */
  get length(): number {
    return this.#len;
  }

  /** The encoded lines since the last reset: a view, valid until the next write or reset. */
  view(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }

  /** Forgets the encoded bytes and keeps the buffer for reuse. */
  reset(): void {
    this.#len = 0;
  }

  /** Appends one change (or snapshot row) as one line; returns the bytes written. */
  writeRow(
    table: TableSchema,
    op: ChangeOp,
    position: Position,
    commitTimeMicros: bigint,
    cells: readonly Cell[],
    extra?: RowExtra,
  ): number {
    const start = this.#len;
    const plan = this.#plan(table);
    const ncols = plan.prefixes.length;
    let unchanged: number[] | undefined;
    for (let i = 0; i < ncols; i++) {
      this.#put(plan.prefixes[i]!);
      const cell = cells[i];
      if (cell === null || cell === undefined) {
        if (cell === undefined && i < cells.length) (unchanged ??= []).push(i);
        this.#put(NULL);
      } else {
        this.#string(plan.isArray[i] ? pgArrayToJson(cell) : cell);
      }
    }
    this.#trailer(plan, op, position, commitTimeMicros, unchanged, extra);
    return this.#len - start;
  }

  /**
   * Appends one change as one line: `writeRow`'s bytes. A streamed insert's values are copied from its
   * message (valid UTF-8, no array column) with JSON's escapes, without a string per value.
   */
  writeChange(ch: Change, extra?: RowExtra): number {
    const tuple = ch.tuple;
    if (tuple !== undefined) {
      const start = this.#len;
      const plan = this.#plan(ch.table);
      if (!plan.anyArray && plan.prefixes.length === tuple.columns && this.#tupleFields(plan, tuple)) {
        this.#trailer(plan, ch.op, ch.position, ch.commitTimeMicros, undefined, extra);
        return this.#len - start;
      }
      this.#len = start;
    }
    return this.writeRow(ch.table, ch.op, ch.position, ch.commitTimeMicros, ch.cells, extra);
  }

  /**
   * The data columns of a text-mode tuple (checked whole by insertTupleBytes): NULL or a JSON string each.
   * False (with bytes written that the caller discards) for a value that is not valid UTF-8, which the
   * decoder turns into replacement characters.
   */
  #tupleFields(plan: TablePlan, tuple: TupleBytes): boolean {
    const buf = tuple.buf;
    // Room for the tuple's bytes, the prefixes and two quotes per value; an escape makes its own room.
    this.#ensure(buf.length - tuple.start + plan.prefixBytes + 2 * tuple.columns);
    let out = this.#buf;
    let o = this.#len;
    let pos = tuple.start + 2;
    for (let col = 0; col < tuple.columns; col++) {
      const prefix = plan.prefixes[col]!;
      for (let k = 0; k < prefix.length; k++) out[o++] = prefix[k]!;
      if (buf[pos++] !== 0x74 /* t */) {
        for (let k = 0; k < 4; k++) out[o++] = NULL[k]!;
        continue;
      }
      const end = pos + 4 + buf.readUInt32BE(pos);
      out[o++] = QUOTE;
      for (let k = pos + 4; k < end; k++) {
        const b = buf[k]!;
        if (b >= 0x20 && b !== QUOTE && b !== BACKSLASH && b < 0x80) {
          out[o++] = b;
          continue;
        }
        if (b >= 0x80) {
          // Each value on its own: a length byte before it must not complete a sequence.
          const n = utf8SequenceLength(buf, k, end);
          if (n === 0) return false;
          for (let j = 0; j < n; j++) out[o++] = buf[k + j]!;
          k += n - 1;
          continue;
        }
        // JSON.stringify's escapes; up to 6 bytes for this one, the rest of the value as it is.
        this.#len = o;
        this.#ensure(6 + (end - k) + (buf.length - end) + plan.prefixBytes + 2 * tuple.columns);
        out = this.#buf;
        o = writeEscape(out, o, b);
      }
      out[o++] = QUOTE;
      pos = end;
    }
    this.#len = o;
    return true;
  }

  /**
   * Appends row `index` of COPY text rows (a snapshot row) as one line: the same bytes as `writeRow` with
   * the row's cells, but a field is copied from the COPY bytes instead of decoded and encoded again
   * when that is exact (plain fields; quotes and COPY's short escapes are rewritten as JSON escapes).
   * Anything else (array columns, unusual escapes, control bytes, invalid UTF-8, a malformed row) takes
   * `writeRow`'s path.
   */
  writeCopyRow(
    table: TableSchema,
    op: ChangeOp,
    position: Position,
    commitTimeMicros: bigint,
    rows: CopyRows,
    index: number,
    extra?: RowExtra,
  ): number {
    const start = this.#len;
    const plan = this.#plan(table);
    if (rows.validUtf8 && !plan.anyArray && plan.prefixes.length === rows.columns && this.#copyFields(plan, rows, index)) {
      this.#trailer(plan, op, position, commitTimeMicros, undefined, extra);
      return this.#len - start;
    }
    this.#len = start;
    return this.writeRow(table, op, position, commitTimeMicros, rows.cells(index), extra);
  }

  /** A snapshot row, from either kind of snapshot chunk. */
  writeSnapshotRow(table: TableSchema, position: Position, chunk: SnapshotChunk, index: number, extra?: RowExtra): number {
    return chunk instanceof CopyRows
      ? this.writeCopyRow(table, 'r', position, 0n, chunk, index, extra)
      : this.writeRow(table, 'r', position, 0n, chunk[index]!, extra);
  }

  /** The data columns of a COPY row; false (with bytes written that the caller discards) if not exact. */
  #copyFields(plan: TablePlan, rows: CopyRows, index: number): boolean {
    const buf = rows.buf;
    const inView = rows.view;
    const rowStart = rows.start(index);
    const rowEnd = rows.end(index);
    const n = plan.prefixes.length;
    if (n === 0) return false;
    // Room for the plain case: the row's bytes, the column prefixes and two quotes per field. An escaped
    // field makes its own room. Bytes are copied by loops: Buffer#copy's per-call cost is higher for
    // values of a few dozen bytes, and the loop checks for control bytes on the way.
    this.#ensure(rowEnd - rowStart + plan.prefixBytes + 2 * n);
    let out = this.#buf;
    let o = this.#len;
    let fieldStart = rowStart;
    for (let col = 0; col < n; col++) {
      const last = col === n - 1;
      const tab = rows.nextTab(fieldStart);
      if (last ? tab >= 0 && tab < rowEnd : tab < 0 || tab > rowEnd) return false; // wrong number of fields
      const fieldEnd = last ? rowEnd : tab;
      o = putConst(out, this.#view, o, plan.prefixes[col]!, plan.prefixViews[col]!);
      const backslash = rows.nextBackslash(fieldStart);
      const quote = rows.nextQuote(fieldStart);
      if (backslash === fieldStart && fieldEnd - fieldStart === 2 && buf[fieldStart + 1] === 0x4e /* N */) {
        for (let k = 0; k < 4; k++) out[o++] = NULL[k]!;
      } else if ((backslash >= 0 && backslash < fieldEnd) || (quote >= 0 && quote < fieldEnd)) {
        this.#len = o;
        if (!this.#copyEscaped(buf, fieldStart, fieldEnd)) return false;
        // The escaped field may have grown the buffer; make room for the rest of the row again.
        this.#ensure(rowEnd - fieldEnd + plan.prefixBytes + 2 * n);
        out = this.#buf;
        o = this.#len;
      } else {
        out[o++] = QUOTE;
        // Four bytes at a time while none is a control byte, then byte by byte. A word holds a byte below
        // 0x20 exactly when (w - 0x20202020) & ~w & 0x80808080 is not 0 (~w leaves out bytes from 0x80 up).
        const outView = this.#view;
        let k = fieldStart;
        for (; k + 4 <= fieldEnd; k += 4) {
          const w = inView.getInt32(k);
          if (((w - 0x20202020) & ~w & 0x80808080) !== 0) break;
          outView.setInt32(o, w);
          o += 4;
        }
        for (; k < fieldEnd; k++) {
          const b = buf[k]!;
          if (b < 0x20) return false; // a control byte COPY left raw: JSON escapes it
          out[o++] = b;
        }
        out[o++] = QUOTE;
      }
      fieldStart = fieldEnd + 1;
    }
    this.#len = o;
    return true;
  }

  /**
   * A field with quotes or backslashes as a JSON string. COPY's escapes \\ \n \r \t \b \f are JSON's
   * too; \v becomes \u000b; any other escape (\N inside a value, octal, hex) returns false.
   */
  #copyEscaped(buf: Buffer, start: number, end: number): boolean {
    this.#ensure(6 * (end - start) + 2);
    const out = this.#buf;
    let o = this.#len;
    out[o++] = QUOTE;
    for (let i = start; i < end; i++) {
      const b = buf[i]!;
      if (b === QUOTE) {
        out[o++] = BACKSLASH;
        out[o++] = QUOTE;
      } else if (b < 0x20) {
        return false; // a control byte COPY left raw: JSON escapes it
      } else if (b !== BACKSLASH) {
        out[o++] = b;
      } else {
        const e = i + 1 < end ? buf[++i]! : 0;
        if (e === 0x76 /* v */) {
          out[o++] = BACKSLASH;
          o = writeUnicodeEscape(out, o, 0x0b);
        } else if (JSON_SHORT_ESCAPE[e] === 1) {
          out[o++] = BACKSLASH;
          out[o++] = e;
        } else {
          return false;
        }
      }
    }
    out[o++] = QUOTE;
    this.#len = o;
    return true;
  }

  /** After the data columns: position, op, commit time, unchanged columns, end of line. */
  #trailer(
    plan: TablePlan,
    op: ChangeOp,
    position: Position,
    commitTimeMicros: bigint,
    unchanged: number[] | undefined,
    extra: RowExtra | undefined,
  ): void {
    const ncols = plan.prefixes.length;
    // Within a transaction only the ordinal changes, so the bytes around it are built once per LSN and once per (op, commit time).
    if (position.lsn !== this.#lsn) {
      this.#lsn = position.lsn;
      this.#lsnPart = ascii(`,"${this.#meta('_floe_lsn')}":"${position.lsn}","${this.#meta('_floe_ordinal')}":`);
      this.#lsnPartView = viewOf(this.#lsnPart);
    }
    if (ncols === 0) {
      this.#ensure(1);
      this.#buf[this.#len++] = 0x7b; // {
      this.#put(this.#lsnPart.subarray(1));
    } else {
      this.#put(this.#lsnPart, this.#lsnPartView);
    }
    this.#int(position.ordinal);
    if (commitTimeMicros !== this.#time || op !== this.#op) {
      this.#time = commitTimeMicros;
      this.#op = op;
      this.#opPart = ascii(
        `,"${this.#meta('_floe_op')}":"${op}","${this.#meta('_floe_commit_time')}":${formatCommitTime(commitTimeMicros)}`,
      );
      this.#opPartEnd = Buffer.concat([this.#opPart, this.#endNull]);
      this.#opPartEndView = viewOf(this.#opPartEnd);
    }
    if (unchanged === undefined && extra === undefined) {
      this.#put(this.#opPartEnd, this.#opPartEndView);
    } else if (unchanged === undefined) {
      this.#put(this.#opPart);
      this.#putExtra(extra!);
      this.#put(this.#endNull);
    } else {
      this.#put(this.#opPart);
      if (extra) this.#putExtra(extra);
      this.#put(this.#unchangedKey);
      this.#ensure(1);
      this.#buf[this.#len++] = 0x5b; // [
      for (let k = 0; k < unchanged.length; k++) {
        if (k > 0) {
          this.#ensure(1);
          this.#buf[this.#len++] = 0x2c; // ,
        }
        this.#put(plan.names[unchanged[k]!]!);
      }
      this.#ensure(3);
      this.#buf[this.#len++] = 0x5d; // ]
      this.#buf[this.#len++] = 0x7d; // }
      this.#buf[this.#len++] = 0x0a; // \n
    }
  }

  #putExtra(extra: RowExtra): void {
    this.#put(ascii(`,"${this.#meta('_floe_seq')}":"${extra.seq}"`));
    if (extra.range !== undefined) this.#put(ascii(`,"${this.#meta('_floe_range')}":${extra.range}`));
  }

  #plan(table: TableSchema): TablePlan {
    let plan = this.#plans.get(table);
    if (!plan) {
      // Column names are encoded once per schema object (a Relation message brings a new one).
      const prefixes = table.columns.map((c, i) => ascii(`${i === 0 ? '{' : ','}${JSON.stringify(this.#keyName(c.name))}:`));
      plan = {
        prefixes,
        prefixViews: prefixes.map(viewOf),
        isArray: table.columns.map((c) => c.type.isArray),
        anyArray: table.columns.some((c) => c.type.isArray),
        prefixBytes: prefixes.reduce((sum, p) => sum + p.length, 0),
        names: table.columns.map((c) => ascii(JSON.stringify(this.#keyName(c.name)))),
      };
      this.#plans.set(table, plan);
    }
    return plan;
  }

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
    this.#view = viewOf(next);
  }

  /**
   * Appends constant bytes. Short ones, or ones given with a view, are copied by a loop: Buffer#copy's
   * per-call cost is higher for a few dozen bytes.
   */
  #put(bytes: Buffer, view?: DataView): void {
    const n = bytes.length;
    this.#ensure(n);
    if (view !== undefined) {
      this.#len = putConst(this.#buf, this.#view, this.#len, bytes, view);
      return;
    }
    const buf = this.#buf;
    let o = this.#len;
    if (n > 32) {
      bytes.copy(buf, o);
      this.#len = o + n;
      return;
    }
    for (let i = 0; i < n; i++) buf[o++] = bytes[i]!;
    this.#len = o;
  }

  /** A safe integer in decimal. */
  #int(v: number): void {
    this.#ensure(24);
    const buf = this.#buf;
    let o = this.#len;
    if (v < 0) {
      buf[o++] = 0x2d; // -
      v = -v;
    }
    let digits = 1;
    for (let p = 10; p <= v; p *= 10) digits++;
    for (let k = digits - 1; k >= 0; k--) {
      buf[o + k] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    }
    this.#len = o + digits;
  }

  /** Writes `s` as a JSON string literal in UTF-8. */
  #string(s: string): void {
    const n = s.length;
    // Every UTF-16 unit takes at most 3 bytes unless escaped; escapes re-check the capacity.
    this.#ensure(3 * n + 2);
    let buf = this.#buf;
    let o = this.#len;
    buf[o++] = QUOTE;
    // A longer value with nothing to escape and no surrogate (the common case: the regular expression
    // and the write both run natively) is copied in one call; the loop below costs per character.
    if (n >= 16 && !NEEDS_LOOP.test(s)) {
      o += writeUtf8(buf, s, o);
      buf[o++] = QUOTE;
      this.#len = o;
      return;
    }
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) {
        if (c >= 0x20 && c !== QUOTE && c !== BACKSLASH) {
          buf[o++] = c;
          continue;
        }
        // Escape: up to 6 bytes for one unit.
        this.#len = o;
        this.#ensure(6 + 3 * (n - i) + 1);
        buf = this.#buf;
        o = writeEscape(buf, o, c);
      } else if (c < 0x800) {
        buf[o++] = 0xc0 | (c >> 6);
        buf[o++] = 0x80 | (c & 0x3f);
      } else if (c < 0xd800 || c > 0xdfff) {
        buf[o++] = 0xe0 | (c >> 12);
        buf[o++] = 0x80 | ((c >> 6) & 0x3f);
        buf[o++] = 0x80 | (c & 0x3f);
      } else {
        const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          // A surrogate pair: one code point, 4 bytes for 2 units.
          const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          buf[o++] = 0xf0 | (cp >> 18);
          buf[o++] = 0x80 | ((cp >> 12) & 0x3f);
          buf[o++] = 0x80 | ((cp >> 6) & 0x3f);
          buf[o++] = 0x80 | (cp & 0x3f);
          i++;
        } else {
          // A lone surrogate is not valid UTF-8: escape it as JSON.stringify does.
          this.#len = o;
          this.#ensure(6 + 3 * (n - i) + 1);
          buf = this.#buf;
          buf[o++] = BACKSLASH;
          o = writeUnicodeEscape(buf, o, c);
        }
      }
    }
    buf[o++] = QUOTE;
    this.#len = o;
  }
}

const viewOf = (buf: Buffer): DataView => new DataView(buf.buffer, buf.byteOffset, buf.byteLength);

/** Copies constant bytes into `out` at `o`, 4 at a time; returns the offset after them. */
function putConst(out: Buffer, outView: DataView, o: number, bytes: Buffer, view: DataView): number {
  const n = bytes.length;
  let k = 0;
  for (; k + 4 <= n; k += 4, o += 4) outView.setInt32(o, view.getInt32(k));
  for (; k < n; k++) out[o++] = bytes[k]!;
  return o;
}

/** What the fast path of `#string` cannot copy as it is: JSON escapes, and surrogates (lone ones are escaped). */
const NEEDS_LOOP = /["\\\u0000-\u001f\ud800-\udfff]/;

type Utf8WritableBuffer = Buffer & { utf8Write(s: string, offset: number): number };
/** Buffer#utf8Write skips write()'s argument normalisation (not in the typings; the fallback keeps floe correct). */
const writeUtf8 =
  typeof (Buffer.prototype as Partial<Utf8WritableBuffer>).utf8Write === 'function'
    ? (buf: Buffer, s: string, at: number): number => (buf as Utf8WritableBuffer).utf8Write(s, at)
    : (buf: Buffer, s: string, at: number): number => buf.write(s, at, 'utf8');

/**
 * The length of the well-formed UTF-8 sequence starting at `k` (before `end`), 0 if there is none
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
 */
function utf8SequenceLength(buf: Buffer, k: number, end: number): number {
  const b = buf[k]!;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) n = 2;
  else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b === 0xe0) lo = 0xa0;
    else if (b === 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b === 0xf0) lo = 0x90;
    else if (b === 0xf4) hi = 0x8f;
  } else return 0;
  if (k + n > end) return 0;
  const second = buf[k + 1]!;
  if (second < lo || second > hi) return 0;
  for (let j = 2; j < n; j++) {
    const c = buf[k + j]!;
    if (c < 0x80 || c > 0xbf) return 0;
  }
  return n;
}

/** An ASCII byte JSON escapes (quote, backslash, control byte) as JSON.stringify writes it; returns the new offset. */
function writeEscape(buf: Buffer, o: number, c: number): number {
  buf[o++] = BACKSLASH;
  switch (c) {
    case QUOTE:
    case BACKSLASH:
      buf[o++] = c;
      return o;
    case 0x0a:
      buf[o++] = 0x6e; // n
      return o;
    case 0x0d:
      buf[o++] = 0x72; // r
      return o;
    case 0x09:
      buf[o++] = 0x74; // t
      return o;
    case 0x08:
      buf[o++] = 0x62; // b
      return o;
    case 0x0c:
      buf[o++] = 0x66; // f
      return o;
    default:
      return writeUnicodeEscape(buf, o, c);
  }
}

/** `uXXXX` (the backslash is already written). */
function writeUnicodeEscape(buf: Buffer, o: number, c: number): number {
  buf[o++] = 0x75; // u
  buf[o++] = HEX[(c >> 12) & 15]!;
  buf[o++] = HEX[(c >> 8) & 15]!;
  buf[o++] = HEX[(c >> 4) & 15]!;
  buf[o++] = HEX[c & 15]!;
  return o;
}
