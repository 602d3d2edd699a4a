/**
 * Journal rows of streamed changes as a tab-separated file for DuckDB's CSV reader, the way snapshot
 * ranges are loaded: one line per change, split natively when the batch commits, instead of one
 * appender call per value on floe's main thread. The file is written while DuckDB still commits the
 * previous batch, so decoding the stream and loading the journal overlap.
 *
 * A line holds the change's offset in its batch (its journal seq is the batch's first seq plus that),
 * the commit LSN, the ordinal, the op, the commit time (ISO 8601, UTC) or `\N`, then one field per
 * journal data column: the value's text as PostgreSQL sent it, or `\N` for NULL and for a column the
 * change's table does not have. Nothing is quoted or escaped, so a change that needs escaping (a value
 * with a tab, newline, carriage return or backslash), one with unchanged TOAST values (a list column),
 * one whose message bytes are not valid UTF-8 (the decoder gives replacement characters), and a line
 * over `maxLineBytes` are not written: `add` returns false and the caller appends that change itself.
 */
import { isUtf8 } from 'node:buffer';
import type { Change, ColumnSchema } from '../../model.js';
import { pgArrayToJson } from '../../schema/pg-array.js';
import { formatCommitTime } from '../encoding/ndjson.js';

const TAB = 0x09;
const NL = 0x0a;
const CR = 0x0d;
const BACKSLASH = 0x5c;
const NULL_FIELD = Buffer.from('\\N');
/** A value the file cannot hold as it is. */
const NEEDS_ESCAPE = /[\t\n\r\\]/;

export class JournalFile {
  #buf = Buffer.allocUnsafe(64 * 1024);
  #len = 0;
  #rows = 0;
  #time = -1n;
  #timeBytes: Buffer = NULL_FIELD;
  /** Per tuple column: where its value starts in the message (-1 for NULL) and its length. */
  #starts = new Int32Array(64);
  #lengths = new Int32Array(64);

  constructor(private readonly maxLineBytes: number) {}

  /** Lines written. */
  get rows(): number {
    return this.#rows;
  }

  /** Frees the bytes (once written); `rows` stays. */
  release(): void {
    this.#buf = Buffer.alloc(0);
    this.#len = 0;
  }

  /** The file's bytes: valid until the next `add`. */
  view(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }

  /**
   * Writes `ch` as the line of journal row `offset`; `positions[i]` is the index in `ch.table.columns`
   * of journal data column i (-1: not a column of this table). False (nothing written) if the line
   * cannot hold it.
   */
  add(offset: number, ch: Change, positions: readonly number[]): boolean {
    const start = this.#len;
    this.#ascii(`${offset}\t${ch.position.lsn}\t${ch.position.ordinal}\t${ch.op}\t`);
    this.#put(this.#commitTime(ch.commitTimeMicros));
    const columns = ch.table.columns;
    const written = ch.tuple !== undefined && !columns.some(isArray) ? this.#tupleFields(ch, positions) : this.#cellFields(ch, positions);
    if (!written || this.#len - start > this.maxLineBytes) {
      this.#len = start;
      return false;
    }
    this.#byte(NL);
    this.#rows++;
    return true;
  }

  /** The data fields from the Insert message's bytes, without decoding them. */
  #tupleFields(ch: Change, positions: readonly number[]): boolean {
    const { buf, start, columns } = ch.tuple!;
    if (!isUtf8(buf.subarray(start))) return false;
    if (this.#starts.length < columns) {
      this.#starts = new Int32Array(columns);
      this.#lengths = new Int32Array(columns);
    }
    // The message was checked whole when it was read (insertTupleBytes): text or NULL values only.
    let pos = start + 2;
    for (let col = 0; col < columns; col++) {
      if (buf[pos++] !== 0x74 /* t */) {
        this.#starts[col] = -1;
        continue;
      }
      const n = buf.readUInt32BE(pos);
      this.#starts[col] = pos + 4;
      this.#lengths[col] = n;
      pos += 4 + n;
    }
    for (const p of positions) {
      this.#byte(TAB);
      const at = p >= 0 && p < columns ? this.#starts[p]! : -1;
      if (at < 0) {
        this.#put(NULL_FIELD);
        continue;
      }
      const end = at + this.#lengths[p]!;
      this.#ensure(end - at);
      const out = this.#buf;
      let o = this.#len;
      for (let k = at; k < end; k++) {
        const b = buf[k]!;
        if (b === TAB || b === NL || b === CR || b === BACKSLASH) return false;
        out[o++] = b;
      }
      this.#len = o;
    }
    return true;
  }

  /** The data fields from the change's decoded cells. */
  #cellFields(ch: Change, positions: readonly number[]): boolean {
    const cells = ch.cells;
    const columns: readonly ColumnSchema[] = ch.table.columns;
    for (const p of positions) {
      this.#byte(TAB);
      const cell = p >= 0 ? cells[p] : null;
      if (cell === undefined) return false; // unchanged TOAST value: the list column needs the appender
      if (cell === null || p >= columns.length) {
        this.#put(NULL_FIELD);
        continue;
      }
      const text = columns[p]!.type.isArray ? pgArrayToJson(cell) : cell;
      if (NEEDS_ESCAPE.test(text)) return false;
      this.#ensure(3 * text.length);
      this.#len += this.#buf.write(text, this.#len, 'utf8');
    }
    return true;
  }

  /** The commit time field: built once per commit (every change of a transaction shares it). */
  #commitTime(micros: bigint): Buffer {
    if (micros !== this.#time) {
      this.#time = micros;
      this.#timeBytes = micros === 0n ? NULL_FIELD : Buffer.from(formatCommitTime(micros).slice(1, -1));
    }
    return this.#timeBytes;
  }

  #ascii(s: string): void {
    this.#ensure(s.length);
    this.#len += this.#buf.write(s, this.#len, 'latin1');
  }

  #put(bytes: Buffer): void {
    this.#ensure(bytes.length);
    for (let i = 0; i < bytes.length; i++) this.#buf[this.#len++] = bytes[i]!;
  }

  #byte(b: number): void {
    this.#ensure(1);
    this.#buf[this.#len++] = b;
  }

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = Math.max(1024, this.#buf.length * 2);
    while (size < this.#len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }
}

const isArray = (c: ColumnSchema): boolean => c.type.isArray;
