/**
 * PostgreSQL array literals (the text output of an array type, as pgoutput and
 * COPY text send it) converted into JSON, so that DuckDB can turn them into
 * typed lists: DuckDB SQL can parse JSON but not `{1,"a b",NULL}`.
 *
 * The result is a JSON array whose leaves are the element texts as strings, or
 * `null` for SQL NULL elements; a multi-dimensional array becomes nested JSON
 * arrays:
 *
 *   {1,2,NULL}               -> ["1","2",null]
 *   {"a b","c\"d",NULL,"NULL"} -> ["a b","c\"d",null,"NULL"]
 *   {{1,2},{3,4}}            -> [["1","2"],["3","4"]]
 *   {}                       -> []
 *   [0:1]={7,8}              -> ["7","8"]   (lower bounds are dropped)
 *
 * The parser follows PostgreSQL's array_in: elements are separated by the
 * element type's delimiter (',' for every type except box, which uses ';');
 * double quotes protect any character; a backslash escapes the next character
 * inside or outside quotes; whitespace around unquoted elements is ignored; an
 * unquoted `NULL` (any case) is SQL NULL while a quoted "NULL" is the text.
 * Sub-arrays must be rectangular, as PostgreSQL guarantees.
 *
 * Malformed input raises FloeError('schema'); messages name the position, never
 * the value.
 */
import { FloeError } from '../errors.js';

export type PgArrayValue = string | null | PgArrayValue[];

const isSpace = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\v' || c === '\f';

class Parser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly delimiter: string,
  ) {}

  fail(reason: string): never {
    throw new FloeError('schema', `malformed array literal: ${reason} at position ${this.pos}`, {
      hint: 'the source sent an array value floe cannot parse; report this with the column type',
      retry: 'none',
    });
  }

  private skipSpace(): void {
    while (isSpace(this.text[this.pos])) this.pos++;
  }

  /** Optional `[lo:hi][lo:hi]=` prefix: returns the declared lengths, or undefined. */
  parseDimensions(): number[] | undefined {
    this.skipSpace();
    if (this.text[this.pos] !== '[') return undefined;
    const lengths: number[] = [];
    while (this.text[this.pos] === '[') {
      const m = /^\[\s*([+-]?\d+)\s*(?::\s*([+-]?\d+)\s*)?\]/.exec(this.text.slice(this.pos));
      if (!m) this.fail('bad dimension decoration');
      const lo = m[2] === undefined ? 1 : Number(m[1]);
      const hi = Number(m[2] ?? m[1]);
      if (hi < lo - 1) this.fail('upper bound below lower bound');
      lengths.push(hi - lo + 1);
      this.pos += m[0].length;
      this.skipSpace();
    }
    if (this.text[this.pos] !== '=') this.fail('expected "=" after dimensions');
    this.pos++;
    this.skipSpace();
    return lengths;
  }

  /** Parses `{...}` at the current position (after optional whitespace). */
  parseArray(): PgArrayValue[] {
    this.skipSpace();
    if (this.text[this.pos] !== '{') this.fail('expected "{"');
    this.pos++;
    const items: PgArrayValue[] = [];
    this.skipSpace();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return items;
    }
    let nested: boolean | undefined;
    for (;;) {
      this.skipSpace();
      const c = this.text[this.pos];
      if (c === undefined) this.fail('unexpected end of input');
      const isNested = c === '{';
      if (nested === undefined) nested = isNested;
      else if (nested !== isNested) this.fail('mixed sub-arrays and scalar elements');
      if (isNested) {
        const sub = this.parseArray();
        if (sub.length === 0) this.fail('empty sub-array');
        items.push(sub);
      } else {
        items.push(this.parseElement());
      }
      this.skipSpace();
      const d = this.text[this.pos];
      if (d === this.delimiter) {
        this.pos++;
        continue;
      }
      if (d === '}') {
        this.pos++;
        break;
      }
      if (d === undefined) this.fail('unexpected end of input');
      this.fail(`unexpected character ${JSON.stringify(d)}`);
    }
    if (nested) checkRectangular(items, this);
    return items;
  }

  /** A scalar element: either entirely double-quoted, or unquoted up to the delimiter or `}`. */
  private parseElement(): string | null {
    let out = '';
    if (this.text[this.pos] === '"') {
      this.pos++;
      for (;;) {
        const c = this.text[this.pos];
        if (c === undefined) this.fail('unterminated quoted element');
        this.pos++;
        if (c === '"') return out;
        if (c === '\\') {
          const next = this.text[this.pos];
          if (next === undefined) this.fail('unterminated quoted element');
          out += next;
          this.pos++;
        } else out += c;
      }
    }
    let escaped = false;
    // Length of `out` up to the last escaped character: whitespace before it is kept.
    let protectedLength = 0;
    for (;;) {
      const c = this.text[this.pos];
      if (c === undefined) this.fail('unexpected end of input');
      if (c === this.delimiter || c === '}') break;
      if (c === '"') this.fail('unexpected quote inside an element');
      if (c === '{') this.fail('unexpected "{" inside an element');
      this.pos++;
      if (c === '\\') {
        const next = this.text[this.pos];
        if (next === undefined) this.fail('backslash at end of input');
        out += next;
        this.pos++;
        escaped = true;
        protectedLength = out.length;
      } else out += c;
    }
    // Unescaped trailing whitespace is not part of the element (leading whitespace was skipped).
    let end = out.length;
    while (end > protectedLength && isSpace(out[end - 1])) end--;
    out = out.slice(0, end);
    if (!escaped) {
      if (out.length === 0) this.fail('empty unquoted element');
      if (out.toUpperCase() === 'NULL') return null;
    }
    return out;
  }

  expectEnd(): void {
    this.skipSpace();
    if (this.pos !== this.text.length) this.fail('junk after closing "}"');
  }
}

function shape(v: PgArrayValue[]): number[] {
  const dims: number[] = [];
  let cur: PgArrayValue = v;
  while (Array.isArray(cur)) {
    dims.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0] as PgArrayValue;
  }
  return dims;
}

function checkRectangular(items: PgArrayValue[], p: Parser): void {
  const first = JSON.stringify(shape(items[0] as PgArrayValue[]));
  for (const it of items) {
    if (JSON.stringify(shape(it as PgArrayValue[])) !== first) p.fail('sub-arrays with different dimensions');
  }
}

/** Parses a PostgreSQL array literal into nested arrays of strings and nulls. */
export function parsePgArray(text: string, delimiter = ','): PgArrayValue[] {
  const p = new Parser(text, delimiter);
  const declared = p.parseDimensions();
  const value = p.parseArray();
  p.expectEnd();
  if (declared !== undefined) {
    const actual = value.length === 0 ? [] : shape(value);
    if (declared.length !== actual.length || declared.some((n, i) => n !== actual[i])) {
      p.fail('dimension decoration does not match the array');
    }
  }
  return value;
}

/**
 * Converts a PostgreSQL array literal into a JSON array of strings/nulls
 * (nested for multi-dimensional arrays). See the module comment.
 */
export function pgArrayToJson(text: string, delimiter = ','): string {
  return JSON.stringify(parsePgArray(text, delimiter));
}
