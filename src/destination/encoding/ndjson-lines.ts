import type { NdjsonEncoder } from './ndjson.js';

/**
 * NDJSON lines held as bytes, outside the JavaScript heap: line i is `range(i, i + 1)`, its newline
 * included. Rows wait in this form between being encoded and being sent. As one string per line they
 * lived long enough in V8's heap to be promoted, and the old generation grew with that garbage
 * (bench/README.md, "where floe's memory goes").
 */
export class NdjsonLines {
  readonly #bytes: Buffer;
  /** End offset of each line in `#bytes`, counted from `#base`. */
  readonly #ends: Float64Array;
  readonly #base: number;

  private constructor(bytes: Buffer, ends: Float64Array, base: number) {
    this.#bytes = bytes;
    this.#ends = ends;
    this.#base = base;
  }

  /**
   * Takes what `encoder` holds (it is reset). Its line ends are found, not tracked: the encoder escapes
   * every newline inside a value, so each newline byte ends a line.
   */
  static take(encoder: NdjsonEncoder): NdjsonLines {
    // A copy of exactly the encoded bytes: the encoder's buffer is reused and usually larger.
    const bytes = Buffer.from(encoder.view());
    encoder.reset();
    const ends: number[] = [];
    for (let nl = bytes.indexOf(0x0a); nl >= 0; nl = bytes.indexOf(0x0a, nl + 1)) ends.push(nl + 1);
    return new NdjsonLines(bytes, Float64Array.from(ends), 0);
  }

  /** Lines given as strings (a newline is added where one is missing). */
  static of(lines: readonly string[]): NdjsonLines {
    const ends = new Float64Array(lines.length);
    let total = 0;
    lines.forEach((l, i) => (ends[i] = total += Buffer.byteLength(l) + (l.endsWith('\n') ? 0 : 1)));
    const bytes = Buffer.allocUnsafe(total);
    let at = 0;
    for (const l of lines) {
      at += bytes.write(l, at, 'utf8');
      if (!l.endsWith('\n')) bytes[at++] = 0x0a;
    }
    return new NdjsonLines(bytes, ends, 0);
  }

  get count(): number {
    return this.#ends.length;
  }

  /** Bytes of line i, its newline included. */
  size(i: number): number {
    return this.#end(i) - (i === 0 ? 0 : this.#end(i - 1));
  }

  /** The bytes of lines [from, to), a view of the same memory. */
  range(from: number, to: number): Buffer {
    if (to <= from) return this.#bytes.subarray(0, 0);
    return this.#bytes.subarray(from === 0 ? 0 : this.#end(from - 1), this.#end(to - 1));
  }

  /** Lines [from, to) as lines of their own, sharing the memory. */
  slice(from: number, to: number): NdjsonLines {
    const start = from === 0 ? 0 : this.#end(from - 1);
    return new NdjsonLines(this.#bytes.subarray(start), this.#ends.subarray(from, to), this.#base + start);
  }

  /** Line i as text, without its newline (for errors and tests). */
  line(i: number): string {
    return this.range(i, i + 1).toString('utf8', 0, this.size(i) - 1);
  }

  #end(i: number): number {
    return this.#ends[i]! - this.#base;
  }
}
