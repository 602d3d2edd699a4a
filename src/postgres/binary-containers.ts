/**
 * Binary-to-text for values that contain other values: arrays (arrayfuncs.c array_send/array_out),
 * ranges and multiranges (rangetypes.c, multirangetypes.c), int2vector/oidvector. Each element is
 * decoded by its own type's decoder, then quoted the way the container's output function quotes it.
 */
type Decoder = (buf: Buffer, start: number, end: number) => string;

// ---------------------------------------------------------------------------
// arrays: int32 ndim, int32 has-nulls flag, int32 element oid, (int32 length, int32 lower bound) per
// dimension, then per element an int32 byte length (-1 for NULL) and the element's binary form

/** array_out's quoting: empty, NULL in any case, or any of `"\{}`, the delimiter or whitespace. */
function arrayElementNeedsQuotes(s: string, delimiter: number): boolean {
  if (s.length === 0) return true;
  if (s.length === 4 && s.toUpperCase() === 'NULL') return true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 34 || c === 92 || c === 123 || c === 125 || c === delimiter) return true;
    // scanner_isspace: space, \t, \n, \r, \v, \f.
    if (c === 32 || (c >= 9 && c <= 13)) return true;
  }
  return false;
}

/** Backslash before each `"` and `\`. */
function escapeQuoted(s: string): string {
  let out = '';
  let from = 0;
  let escaped = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 34 && c !== 92) continue;
    out += s.slice(from, i) + '\\';
    from = i;
    escaped = true;
  }
  return escaped ? out + s.slice(from) : s;
}

/** Reading position shared by the recursive element walk of one array value. */
interface Cursor {
  pos: number;
}

export function arrayDecoder(element: Decoder, delimiterChar: string): Decoder {
  const delimiter = delimiterChar.charCodeAt(0);
  const quoted = (s: string): string => (arrayElementNeedsQuotes(s, delimiter) ? '"' + escapeQuoted(s) + '"' : s);
  return (buf, start) => {
    const ndim = buf.readInt32BE(start);
    if (ndim === 0) return '{}';
    const dims: number[] = [];
    let prefix = '';
    let lowerBoundsDiffer = false;
    for (let i = 0; i < ndim; i++) {
      const length = buf.readInt32BE(start + 12 + 8 * i);
      const lower = buf.readInt32BE(start + 16 + 8 * i);
      dims.push(length);
      if (lower !== 1) lowerBoundsDiffer = true;
      prefix += '[' + lower + ':' + (lower + length - 1) + ']';
    }
    const cursor: Cursor = { pos: start + 12 + 8 * ndim };
    const body = arrayLevel(buf, cursor, dims, 0, element, quoted, delimiterChar);
    return lowerBoundsDiffer ? prefix + '=' + body : body;
  };
}

function arrayLevel(
  buf: Buffer,
  cursor: Cursor,
  dims: readonly number[],
  level: number,
  element: Decoder,
  quoted: (s: string) => string,
  delimiter: string,
): string {
  let out = '{';
  const last = level === dims.length - 1;
  for (let i = 0; i < dims[level]!; i++) {
    if (i > 0) out += delimiter;
    if (!last) {
      out += arrayLevel(buf, cursor, dims, level + 1, element, quoted, delimiter);
      continue;
    }
    const length = buf.readInt32BE(cursor.pos);
    cursor.pos += 4;
    if (length < 0) {
      out += 'NULL';
      continue;
    }
    out += quoted(element(buf, cursor.pos, cursor.pos + length));
    cursor.pos += length;
  }
  return out + '}';
}

/** int2vector/oidvector: the array send format, printed as the elements separated by spaces. */
export function vectorDecoder(element: Decoder): Decoder {
  return (buf, start) => {
    if (buf.readInt32BE(start) === 0) return '';
    return joinPrefixed(buf, start + 20, buf.readInt32BE(start + 12), ' ', element);
  };
}

// ---------------------------------------------------------------------------
// ranges: flags byte, then (int32 length, binary) for the lower and the upper bound when present

const RANGE_EMPTY = 0x01;
const RANGE_LB_INC = 0x02;
const RANGE_UB_INC = 0x04;
const RANGE_LB_INF = 0x08;
const RANGE_UB_INF = 0x10;
const RANGE_LB_NULL = 0x20;
const RANGE_UB_NULL = 0x40;

/** range_bound_escape: quotes when empty or any of `"\()[],` or whitespace is present; `"` and `\` doubled. */
function rangeBound(s: string): string {
  let quote = s.length === 0;
  for (let i = 0; i < s.length && !quote; i++) {
    const c = s.charCodeAt(i);
    quote = c === 34 || c === 92 || c === 40 || c === 41 || c === 91 || c === 93 || c === 44 || c === 32 || (c >= 9 && c <= 13);
  }
  if (!quote) return s;
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    out += ch === '"' || ch === '\\' ? ch + ch : ch;
  }
  return out + '"';
}

/** Decodes one range value at buf[start, end); returns its text. */
function rangeText(buf: Buffer, start: number, element: Decoder): string {
  const flags = buf[start]!;
  if (flags & RANGE_EMPTY) return 'empty';
  let pos = start + 1;
  let lower = '';
  let upper = '';
  if (!(flags & (RANGE_LB_INF | RANGE_LB_NULL))) {
    const length = buf.readInt32BE(pos);
    lower = rangeBound(element(buf, pos + 4, pos + 4 + length));
    pos += 4 + length;
  }
  if (!(flags & (RANGE_UB_INF | RANGE_UB_NULL))) {
    const length = buf.readInt32BE(pos);
    upper = rangeBound(element(buf, pos + 4, pos + 4 + length));
  }
  return (flags & RANGE_LB_INC ? '[' : '(') + lower + ',' + upper + (flags & RANGE_UB_INC ? ']' : ')');
}

export function rangeDecoder(element: Decoder): Decoder {
  return (buf, start) => rangeText(buf, start, element);
}

/** multirange: int32 count, then (int32 length, range binary) each; printed '{range,range}' without further quoting. */
export function multirangeDecoder(range: Decoder): Decoder {
  return (buf, start) => '{' + joinPrefixed(buf, start + 4, buf.readInt32BE(start), ',', range) + '}';
}

/** `n` values from `pos`, each an int32 byte length then its binary form, decoded and joined by `separator`. */
function joinPrefixed(buf: Buffer, pos: number, n: number, separator: string, decode: Decoder): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    const length = buf.readInt32BE(pos);
    out += (i > 0 ? separator : '') + decode(buf, pos + 4, pos + 4 + length);
    pos += 4 + length;
  }
  return out;
}
