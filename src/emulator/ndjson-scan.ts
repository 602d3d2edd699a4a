/**
 * Byte-level checks of NDJSON append bodies for the emulator's SQL load (ndjson-body.ts): a strict grammar of
 * flat JSON objects (checked at append), and per table the shape of a "plain" row, whose every value the
 * JavaScript coercion takes unchanged (checked at commit).
 *
 * Why loops over bytes: the same two checks as regular expressions, run by DuckDB's RE2, cost about 3 µs of
 * emulator CPU per bench row each, plus a copy of the body into DuckDB at append; these loops cost well under
 * one (bench/README.md). Each rule below is the regular expression it replaced, written out; the tests run
 * those expressions in DuckDB as the oracle.
 *
 * Every matcher takes the line's bytes `b`, a position `p` and the line's end `end`, never reads at or past
 * `end`, and returns the position after what it matched, or -1. Bodies are checked for UTF-8 first, so a byte
 * of 0x80 or more is always part of a well-formed character and never looks like JSON syntax.
 */
import { isUtf8 } from 'node:buffer';
import type { SfType } from './sql/types.js';

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
const ZERO = 0x30;
const ONE = 0x31;
const NINE = 0x39;
const COLON = 0x3a;
const LBRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

const isDigit = (c: number) => c >= ZERO && c <= NINE;

/** `[ \t\r]*` */
function blanks(b: Buffer, p: number, end: number): number {
  while (p < end) {
    const c = b[p]!;
    if (c !== SPACE && c !== TAB && c !== CR) break;
    p++;
  }
  return p;
}

/** `[0-9]*` */
function digits(b: Buffer, p: number, end: number): number {
  while (p < end && isDigit(b[p]!)) p++;
  return p;
}

/** Exactly `n` digits. */
function fixedDigits(b: Buffer, p: number, end: number, n: number): number {
  if (p < 0 || p + n > end) return -1;
  for (let k = p; k < p + n; k++) if (!isDigit(b[k]!)) return -1;
  return p + n;
}

function byte(b: Buffer, p: number, end: number, c: number): number {
  return p >= 0 && p < end && b[p] === c ? p + 1 : -1;
}

function literal(b: Buffer, p: number, end: number, text: Buffer): number {
  if (p < 0 || p + text.length > end) return -1;
  for (let k = 0; k < text.length; k++) if (b[p + k] !== text[k]) return -1;
  return p + text.length;
}

function hexValue(c: number): number {
  if (c >= ZERO && c <= NINE) return c - ZERO;
  const lower = c | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
}

/**
 * One escape from its backslash: `\\["\\/bfnrt]`, or `\\u` with four hex digits naming neither NUL nor a
 * surrogate (JavaScript keeps both, DuckDB does not, so such a row is left to JSON.parse).
 */
function escape(b: Buffer, p: number, end: number): number {
  if (p + 1 >= end) return -1;
  const e = b[p + 1]!;
  if (e === 0x75) {
    if (p + 6 > end) return -1;
    let v = 0;
    for (let k = p + 2; k < p + 6; k++) {
      const h = hexValue(b[k]!);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    return v === 0 || (v >= 0xd800 && v <= 0xdfff) ? -1 : p + 6;
  }
  const simple = e === QUOTE || e === BACKSLASH || e === SLASH || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74;
  return simple ? p + 2 : -1;
}

/** Characters (code points, as `[...s].length` counts them) of the string `string` matched last. */
let stringChars = 0;

/**
 * `"(?:[^"\\\x00-\x1f]|ESCAPE)*"`, counting its characters in `stringChars`: an escape is one character, and
 * so is each UTF-8 sequence (counted at its lead byte).
 */
function string(b: Buffer, p: number, end: number): number {
  if (p < 0 || p >= end || b[p] !== QUOTE) return -1;
  let chars = 0;
  for (p++; p < end;) {
    const c = b[p]!;
    if (c === QUOTE) {
      stringChars = chars;
      return p + 1;
    }
    if (c === BACKSLASH) {
      p = escape(b, p, end);
      if (p < 0) return -1;
    } else {
      if (c < SPACE) return -1;
      p++;
      if ((c & 0xc0) === 0x80) continue;
    }
    chars++;
  }
  return -1;
}

/** `"[^"\\\x00-\x1f]*"`: a string without escapes (JSON.stringify writes it back byte for byte). */
function bareString(b: Buffer, p: number, end: number): number {
  if (p < 0 || p >= end || b[p] !== QUOTE) return -1;
  for (p++; p < end; p++) {
    const c = b[p]!;
    if (c === QUOTE) return p + 1;
    if (c === BACKSLASH || c < SPACE) return -1;
  }
  return -1;
}

/** `-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?` */
function number(b: Buffer, p: number, end: number): number {
  if (p < end && b[p] === MINUS) p++;
  if (p >= end) return -1;
  if (b[p] === ZERO) p++;
  else if (b[p]! >= ONE && b[p]! <= NINE) p = digits(b, p + 1, end);
  else return -1;
  if (p < end && b[p] === DOT) {
    const q = digits(b, p + 1, end);
    if (q === p + 1) return -1;
    p = q;
  }
  if (p < end && (b[p]! | 0x20) === 0x65) {
    p++;
    if (p < end && (b[p] === PLUS || b[p] === MINUS)) p++;
    const q = digits(b, p, end);
    if (q === p) return -1;
    p = q;
  }
  return p;
}

/** `STRING|NUMBER|true|false|null` */
function scalar(b: Buffer, p: number, end: number): number {
  if (p >= end) return -1;
  switch (b[p]) {
    case QUOTE:
      return string(b, p, end);
    case 0x74:
      return literal(b, p, end, TRUE);
    case 0x66:
      return literal(b, p, end, FALSE);
    case 0x6e:
      return literal(b, p, end, NULL);
    default:
      return number(b, p, end);
  }
}

/** `SCALAR|\[WS(?:SCALAR WS(?:,WS SCALAR WS)*)?\]` */
function flatValue(b: Buffer, p: number, end: number): number {
  if (p >= end || b[p] !== LBRACKET) return scalar(b, p, end);
  p = blanks(b, p + 1, end);
  if (p < end && b[p] === RBRACKET) return p + 1;
  for (;;) {
    p = scalar(b, p, end);
    if (p < 0) return -1;
    p = blanks(b, p, end);
    if (p >= end) return -1;
    if (b[p] === RBRACKET) return p + 1;
    if (b[p] !== COMMA) return -1;
    p = blanks(b, p + 1, end);
  }
}

/** `WS\{WS(?:MEMBER WS(?:,WS MEMBER WS)*)?\}WS` over the whole line, MEMBER being `STRING WS:WS FLAT_VALUE`. */
function flatObject(b: Buffer, p: number, end: number): boolean {
  p = byte(b, blanks(b, p, end), end, LBRACE);
  if (p < 0) return false;
  p = blanks(b, p, end);
  if (p < end && b[p] === RBRACE) return blanks(b, p + 1, end) === end;
  for (;;) {
    p = string(b, p, end);
    if (p < 0) return false;
    p = byte(b, blanks(b, p, end), end, COLON);
    if (p < 0) return false;
    p = flatValue(b, blanks(b, p, end), end);
    if (p < 0) return false;
    p = blanks(b, p, end);
    if (p >= end) return false;
    if (b[p] === RBRACE) return blanks(b, p + 1, end) === end;
    if (b[p] !== COMMA) return false;
    p = blanks(b, p + 1, end);
  }
}

/** Calls `line(start, end)` for each line of the body that is not blank (`[ \t\r]*`); stops at the first false. */
function eachLine(bytes: Buffer, line: (start: number, end: number) => boolean): number {
  let count = 0;
  for (let start = 0; start <= bytes.length;) {
    let end = bytes.indexOf(LF, start);
    if (end < 0) end = bytes.length;
    if (blanks(bytes, start, end) < end) {
      if (!line(start, end)) return -1;
      count++;
    }
    start = end + 1;
  }
  return count;
}

/**
 * The number of lines of a body in which every non-blank line is certainly one JSON object to JSON.parse
 * (RFC 8259's grammar, with values that are scalars or arrays of scalars, in UTF-8), else undefined: then
 * JSON.parse decides.
 */
export function flatObjectLines(bytes: Buffer): number | undefined {
  if (!isUtf8(bytes)) return undefined;
  const count = eachLine(bytes, (start, end) => flatObject(bytes, start, end));
  return count < 0 ? undefined : count;
}

/** A value form the JavaScript coercion of a column's type stores unchanged (or as a plain cast of its text). */
export type PlainForm =
  /** `"(?:0|-?[1-9][0-9]{0,s-1})"|0|-?[1-9][0-9]{0,n-1}` (s = inString, n = inNumber), or only zero when both are 0. */
  | { readonly kind: 'integer'; readonly inString: number; readonly inNumber: number }
  /** A string of at most `maxChars` characters. */
  | { readonly kind: 'string'; readonly maxChars: number }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'date' }
  | { readonly kind: 'time' }
  | { readonly kind: 'timestamp'; readonly zone: boolean }
  /** `\[(?:BARE(?:,BARE)*)?\]`, BARE being a string without escapes. */
  | { readonly kind: 'array' };

/** The forms a column of `type` takes by SQL; undefined when the type always takes the JavaScript path. */
export function plainForm(type: SfType): PlainForm | undefined {
  switch (type.base) {
    case 'NUMBER': {
      // coerceValue's plainInteger: integer strings of at most 18 digits, JSON integers of at most 15 (always
      // safe in a double), both within the precision.
      const digitsAllowed = Math.max(0, type.size - type.scale);
      return { kind: 'integer', inString: Math.min(18, digitsAllowed), inNumber: Math.min(15, digitsAllowed) };
    }
    case 'VARCHAR':
      return { kind: 'string', maxChars: type.size };
    case 'BOOLEAN':
      return { kind: 'boolean' };
    case 'DATE':
      return { kind: 'date' };
    case 'TIME':
      return { kind: 'time' };
    case 'TIMESTAMP_NTZ':
      return { kind: 'timestamp', zone: false };
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ':
      return { kind: 'timestamp', zone: true };
    case 'ARRAY':
      // json_extract_string writes such an array back minified: the same text as JSON.stringify.
      return { kind: 'array' };
    default:
      return undefined;
  }
}

/** One member of a plain row, in the batch's key order. */
export interface PlainMember {
  /** `"KEY":` in UTF-8 (a key needing an escape never takes the SQL load). */
  readonly key: Buffer;
  /** The member may be left out (then NULL). Never the first. */
  readonly optional: boolean;
  readonly nullable: boolean;
  readonly form: PlainForm;
}

/** `0|-?[1-9][0-9]{0,max-1}` */
function integerDigits(b: Buffer, p: number, end: number, max: number): number {
  if (p < end && b[p] === ZERO) return p + 1;
  if (p < end && b[p] === MINUS) p++;
  if (p >= end || b[p]! < ONE || b[p]! > NINE) return -1;
  const q = digits(b, p, end);
  return q - p <= max ? q : -1;
}

/** `"(?:INTEGER)"|INTEGER`, INTEGER of at most `inString` or `inNumber` digits; only zero where that is 0. */
function integer(b: Buffer, p: number, end: number, inString: number, inNumber: number): number {
  if (p < end && b[p] === QUOTE) {
    const q = inString === 0 ? byte(b, p + 1, end, ZERO) : integerDigits(b, p + 1, end, inString);
    return byte(b, q, end, QUOTE);
  }
  return inNumber === 0 ? byte(b, p, end, ZERO) : integerDigits(b, p, end, inNumber);
}

/** `([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?` */
function time(b: Buffer, p: number, end: number): number {
  if (p < 0 || p + 8 > end) return -1;
  const h1 = b[p]!;
  const h2 = b[p + 1]!;
  if (!isDigit(h2) || !(h1 === ZERO || h1 === ONE || (h1 === 0x32 && h2 <= 0x33))) return -1;
  if (b[p + 2] !== COLON || b[p + 3]! < ZERO || b[p + 3]! > 0x35 || !isDigit(b[p + 4]!)) return -1;
  if (b[p + 5] !== COLON || b[p + 6]! < ZERO || b[p + 6]! > 0x35 || !isDigit(b[p + 7]!)) return -1;
  p += 8;
  if (p < end && b[p] === DOT) {
    const q = digits(b, p + 1, end);
    if (q === p + 1 || q - p - 1 > 6) return -1;
    p = q;
  }
  return p;
}

/** `[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}` */
function date(b: Buffer, p: number, end: number): number {
  if (p < 0 || p >= end || b[p]! < ONE || b[p]! > NINE) return -1;
  p = byte(b, fixedDigits(b, p + 1, end, 3), end, MINUS);
  p = byte(b, fixedDigits(b, p, end, 2), end, MINUS);
  return fixedDigits(b, p, end, 2);
}

/** `DATE[T ]TIME`, then `(?:Z|[+-][0-9]{2}:[0-9]{2})` when `zone`. */
function timestamp(b: Buffer, p: number, end: number, zone: boolean): number {
  p = date(b, p, end);
  if (p < 0 || p >= end || (b[p] !== 0x54 && b[p] !== SPACE)) return -1;
  p = time(b, p + 1, end);
  if (!zone || p < 0) return p;
  if (p < end && b[p] === 0x5a) return p + 1;
  if (p >= end || (b[p] !== PLUS && b[p] !== MINUS)) return -1;
  return fixedDigits(b, byte(b, fixedDigits(b, p + 1, end, 2), end, COLON), end, 2);
}

/** `\[(?:BARE(?:,BARE)*)?\]` */
function bareArray(b: Buffer, p: number, end: number): number {
  p = byte(b, p, end, LBRACKET);
  if (p < 0) return -1;
  if (p < end && b[p] === RBRACKET) return p + 1;
  for (;;) {
    p = bareString(b, p, end);
    if (p < 0 || p >= end) return -1;
    if (b[p] === RBRACKET) return p + 1;
    if (b[p] !== COMMA) return -1;
    p++;
  }
}

function plainValue(b: Buffer, p: number, end: number, m: PlainMember): number {
  if (m.nullable && p < end && b[p] === 0x6e) return literal(b, p, end, NULL);
  const f = m.form;
  switch (f.kind) {
    case 'integer':
      return integer(b, p, end, f.inString, f.inNumber);
    case 'string': {
      const q = string(b, p, end);
      return q >= 0 && stringChars <= f.maxChars ? q : -1;
    }
    case 'boolean':
      return p < end && b[p] === 0x74 ? literal(b, p, end, TRUE) : literal(b, p, end, FALSE);
    case 'date':
      return byte(b, date(b, byte(b, p, end, QUOTE), end), end, QUOTE);
    case 'time':
      return byte(b, time(b, byte(b, p, end, QUOTE), end), end, QUOTE);
    case 'timestamp':
      return byte(b, timestamp(b, byte(b, p, end, QUOTE), end, f.zone), end, QUOTE);
    case 'array':
      return bareArray(b, p, end);
  }
}

/**
 * A plain row over the whole line: `WS\{"K1":V1(?:,"K2":V2)...\}WS` without blanks inside, the members in
 * order, an optional one skipped when its key is not next. Keys are distinct, so at most one member can
 * match at any position: no backtracking is needed to decide as the regular expression would.
 */
function plainRow(b: Buffer, p: number, end: number, members: readonly PlainMember[]): boolean {
  p = byte(b, blanks(b, p, end), end, LBRACE);
  for (let i = 0; i < members.length && p >= 0; i++) {
    const m = members[i]!;
    const at = i === 0 ? p : p < end && b[p] === COMMA ? p + 1 : -1;
    const q = at < 0 ? -1 : literal(b, at, end, m.key);
    if (q < 0) {
      if (!m.optional) return false;
      continue;
    }
    p = plainValue(b, q, end, m);
  }
  p = byte(b, p, end, RBRACE);
  return p >= 0 && blanks(b, p, end) === end;
}

/** The number of non-blank lines when every one is a plain row of `members`, else -1. The body is UTF-8. */
export function plainLines(bytes: Buffer, members: readonly PlainMember[]): number {
  return eachLine(bytes, (start, end) => plainRow(bytes, start, end, members));
}
