/**
 * Parser for COPY ... TO STDOUT in text format: rows end with '\n', fields are
 * separated by '\t', '\N' is NULL, and backslash escapes stand for control
 * characters. The result is each value's exact output-function text, the same
 * text pgoutput sends, so snapshot and stream rows share one journal format.
 */
import { FloeError } from '../errors.js';
import type { Cell } from '../model.js';
import { utf8 } from './utf8.js';

const TAB = 0x09;
const NL = 0x0a;
const BACKSLASH = 0x5c;

export class CopyTextParser {
  readonly #columns: number;
  #rest: Buffer | undefined;
  /** The next tab at or after the last search's start in the current chunk; -1: none left; -2: not searched. */
  #tabAt = -2;

  constructor(columns: number) {
    this.#columns = columns;
  }

  /** Parses every complete row in `chunk` (plus what was left from the previous one). */
  push(chunk: Buffer): Cell[][] {
    const buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    const rows: Cell[][] = [];
    let start = 0;
    // The next backslash at or after `start` (-1: none left in this chunk), found once per chunk region
    // so a row without one (most rows) is split by native searches for tabs instead of a byte loop.
    let backslash = buf.indexOf(BACKSLASH, 0);
    this.#tabAt = -2;
    for (;;) {
      const nl = buf.indexOf(NL, start);
      if (nl < 0) break;
      if (backslash >= 0 && backslash < start) backslash = buf.indexOf(BACKSLASH, start);
      const plain = this.#columns > 0 && (backslash < 0 || backslash > nl);
      rows.push(plain ? this.#parsePlainRow(buf, start, nl) : this.#parseRow(buf, start, nl));
      start = nl + 1;
    }
    if (start < buf.length) this.#rest = Buffer.from(buf.subarray(start));
    return rows;
  }

  end(): void {
    if (this.#rest && this.#rest.length > 0) {
      throw new FloeError('replication', 'COPY output ended in the middle of a row');
    }
  }

  /** A row without backslashes: every field is plain text, split at its tabs. */
  #parsePlainRow(buf: Buffer, start: number, end: number): Cell[] {
    const n = this.#columns;
    const cells: Cell[] = new Array(n);
    let fieldStart = start;
    for (let col = 0; col < n - 1; col++) {
      const tab = this.#nextTab(buf, fieldStart);
      if (tab < 0 || tab > end) throw new FloeError('replication', `COPY row has ${col + 1} fields, expected ${n}`);
      cells[col] = utf8(buf, fieldStart, tab);
      fieldStart = tab + 1;
    }
    const extra = this.#nextTab(buf, fieldStart);
    if (extra >= 0 && extra < end) throw new FloeError('replication', `COPY row has more than ${n} fields`);
    cells[n - 1] = utf8(buf, fieldStart, end);
    return cells;
  }

  /** The first tab at or after `from`, searched at most once per position (a table without tabs costs one scan per chunk). */
  #nextTab(buf: Buffer, from: number): number {
    if (this.#tabAt !== -1 && this.#tabAt < from) this.#tabAt = buf.indexOf(TAB, from);
    return this.#tabAt;
  }

  #parseRow(buf: Buffer, start: number, end: number): Cell[] {
    const cells: Cell[] = new Array(this.#columns);
    let col = 0;
    let fieldStart = start;
    // One pass finds the tabs and whether a field has escapes; plain fields decode with one slice.
    let escaped = false;
    for (let i = start; i <= end; i++) {
      const b = i === end ? TAB : buf[i];
      if (b === BACKSLASH) {
        escaped = true;
        i++; // the escaped byte is never a separator
        continue;
      }
      if (b === TAB) {
        if (col >= this.#columns) throw new FloeError('replication', `COPY row has more than ${this.#columns} fields`);
        cells[col++] = escaped ? decodeEscaped(buf, fieldStart, i) : utf8(buf, fieldStart, i);
        fieldStart = i + 1;
        escaped = false;
      }
    }
    if (col !== this.#columns) throw new FloeError('replication', `COPY row has ${col} fields, expected ${this.#columns}`);
    return cells;
  }
}

/** A field with backslashes: `\N` is NULL, other escapes stand for bytes. */
function decodeEscaped(buf: Buffer, start: number, end: number): string | null {
  if (end - start === 2 && buf[start + 1] === 0x4e /* N */) return null;
  // Slow path: unescape into a byte array, then decode once (escapes may form multi-byte UTF-8).
  const out = Buffer.allocUnsafe(end - start);
  let o = 0;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b !== BACKSLASH) {
      out[o++] = b;
      continue;
    }
    const n = buf[++i];
    switch (n) {
      case 0x62:
        out[o++] = 0x08;
        break; // \b
      case 0x66:
        out[o++] = 0x0c;
        break; // \f
      case 0x6e:
        out[o++] = 0x0a;
        break; // \n
      case 0x72:
        out[o++] = 0x0d;
        break; // \r
      case 0x74:
        out[o++] = 0x09;
        break; // \t
      case 0x76:
        out[o++] = 0x0b;
        break; // \v
      case 0x78: {
        // \xHH
        let v = 0;
        let k = 0;
        while (k < 2 && i + 1 < end && isHex(buf[i + 1]!)) {
          v = v * 16 + hexVal(buf[++i]!);
          k++;
        }
        out[o++] = v;
        break;
      }
      default:
        if (n !== undefined && n >= 0x30 && n <= 0x37) {
          // \ooo
          let v = n - 0x30;
          let k = 1;
          while (k < 3 && i + 1 < end && buf[i + 1]! >= 0x30 && buf[i + 1]! <= 0x37) {
            v = v * 8 + (buf[++i]! - 0x30);
            k++;
          }
          out[o++] = v & 0xff;
        } else if (n !== undefined) {
          out[o++] = n; // \\ and any other escaped character stand for themselves
        }
    }
  }
  return out.toString('utf8', 0, o);
}

const isHex = (b: number) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const hexVal = (b: number) => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x57);
