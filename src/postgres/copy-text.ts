/**
 * Parser for COPY ... TO STDOUT in text format: rows end with '\n', fields are
 * separated by '\t', '\N' is NULL, and backslash escapes stand for control
 * characters. The result is each value's exact output-function text, the same
 * text pgoutput sends, so snapshot and stream rows share one journal format.
 */
import { FloeError } from '../errors.js';
import type { Cell } from '../model.js';
import { utf8 } from './utf8.js';
import { isUtf8 } from 'node:buffer';

const TAB = 0x09;
const NL = 0x0a;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export class CopyTextParser {
  readonly #columns: number;
  #rest: Buffer | undefined;

  constructor(columns: number) {
    this.#columns = columns;
  }

  /**
   * The complete rows in `chunk` (plus what was left from the previous one). They are split lazily: a
   * consumer either reads them as cells or has an encoder copy their bytes (`CopyRows`).
   */
  push(chunk: Buffer): CopyRows {
    const buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    const starts: number[] = [0];
    for (let nl = buf.indexOf(NL, 0); nl >= 0; nl = buf.indexOf(NL, nl + 1)) starts.push(nl + 1);
    const used = starts[starts.length - 1]!;
    if (used < buf.length) this.#rest = Buffer.from(buf.subarray(used));
    return new CopyRows(buf, starts, this.#columns);
  }

  end(): void {
    if (this.#rest && this.#rest.length > 0) {
      throw new FloeError('replication', 'COPY output ended in the middle of a row');
    }
  }
}

/**
 * Complete COPY text rows of one chunk. Iterating gives each row's cells; an encoder that writes the
 * text again (NDJSON) can instead copy a row's field bytes, which saves decoding every value into a
 * JavaScript string only to encode it back to UTF-8.
 */
export class CopyRows implements Iterable<Cell[]> {
  readonly buf: Buffer;
  readonly columns: number;
  /** `buf` as a DataView, for reading 4 bytes at a time. */
  readonly view: DataView;
  /** Row i is buf[starts[i], starts[i + 1] - 1); the byte before the next start is its newline. */
  readonly #starts: readonly number[];
  #validUtf8: boolean | undefined;
  readonly #tabs: ByteSearch;
  readonly #backslashes: ByteSearch;
  readonly #quotes: ByteSearch;

  constructor(buf: Buffer, starts: readonly number[], columns: number) {
    this.buf = buf;
    this.#starts = starts;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.columns = columns;
    this.#tabs = new ByteSearch(buf, TAB);
    this.#backslashes = new ByteSearch(buf, BACKSLASH);
    this.#quotes = new ByteSearch(buf, QUOTE);
  }

  /** The rows are valid UTF-8 (checked natively, once per chunk, when first asked). */
  get validUtf8(): boolean {
    this.#validUtf8 ??= isUtf8(this.buf.subarray(0, this.#starts[this.#starts.length - 1]));
    return this.#validUtf8;
  }

  get length(): number {
    return this.#starts.length - 1;
  }

  /** First byte of row `i`. */
  start(i: number): number {
    return this.#starts[i]!;
  }

  /** The newline that ends row `i`. */
  end(i: number): number {
    return this.#starts[i + 1]! - 1;
  }

  nextTab(from: number): number {
    return this.#tabs.next(from);
  }

  nextBackslash(from: number): number {
    return this.#backslashes.next(from);
  }

  nextQuote(from: number): number {
    return this.#quotes.next(from);
  }

  /** Row `i` decoded: each value's text, `null` for NULL. Throws on a row with the wrong number of fields. */
  cells(i: number): Cell[] {
    const start = this.start(i);
    const end = this.end(i);
    const backslash = this.nextBackslash(start);
    const plain = this.columns > 0 && (backslash < 0 || backslash > end);
    return plain ? this.#parsePlainRow(start, end) : this.#parseRow(start, end);
  }

  /** Row `i`'s backslashes all begin whole `\N` fields (NULLs): every other field is its value's text as is. */
  onlyNullEscapes(i: number): boolean {
    const start = this.start(i);
    const end = this.end(i);
    const buf = this.buf;
    for (let b = this.nextBackslash(start); b >= 0 && b < end; b = this.nextBackslash(b + 1)) {
      if (buf[b + 1] !== 0x4e /* N */ || (b > start && buf[b - 1] !== TAB) || (b + 2 < end && buf[b + 2] !== TAB)) return false;
    }
    return true;
  }

  *[Symbol.iterator](): Iterator<Cell[]> {
    for (let i = 0; i < this.length; i++) yield this.cells(i);
  }

  /** A row without backslashes: every field is plain text, split at its tabs. */
  #parsePlainRow(start: number, end: number): Cell[] {
    const n = this.columns;
    const buf = this.buf;
    const cells: Cell[] = new Array(n);
    let fieldStart = start;
    for (let col = 0; col < n - 1; col++) {
      const tab = this.nextTab(fieldStart);
      if (tab < 0 || tab > end) throw new FloeError('replication', `COPY row has ${col + 1} fields, expected ${n}`);
      cells[col] = utf8(buf, fieldStart, tab);
      fieldStart = tab + 1;
    }
    const extra = this.nextTab(fieldStart);
    if (extra >= 0 && extra < end) throw new FloeError('replication', `COPY row has more than ${n} fields`);
    cells[n - 1] = utf8(buf, fieldStart, end);
    return cells;
  }

  #parseRow(start: number, end: number): Cell[] {
    const buf = this.buf;
    const cells: Cell[] = new Array(this.columns);
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
        if (col >= this.columns) throw new FloeError('replication', `COPY row has more than ${this.columns} fields`);
        cells[col++] = escaped ? decodeEscaped(buf, fieldStart, i) : utf8(buf, fieldStart, i);
        fieldStart = i + 1;
        escaped = false;
      }
    }
    if (col !== this.columns) throw new FloeError('replication', `COPY row has ${col} fields, expected ${this.columns}`);
    return cells;
  }
}

/**
 * Finds the first `byte` at or after a position, or -1. A chunk is read front to back, so remembering the
 * last hit makes a table whose rows hold no such byte cost one native scan per chunk, not one per field.
 */
class ByteSearch {
  readonly #buf: Buffer;
  readonly #byte: number;
  #at = -2; // -2: not searched yet
  #from = 0;

  constructor(buf: Buffer, byte: number) {
    this.#buf = buf;
    this.#byte = byte;
  }

  next(from: number): number {
    const at = this.#at;
    if (at === -2 || from < this.#from || (at >= 0 && at < from)) {
      this.#at = this.#buf.indexOf(this.#byte, from);
      this.#from = from;
    }
    return this.#at;
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
