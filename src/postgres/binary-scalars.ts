/**
 * Binary-to-text for the scalar types whose output is more than a number or a string: numeric
 * (numeric.c get_str_from_var), bytea (hex), uuid, bit/varbit, inet/cidr (network.c and
 * src/port/inet_net_ntop.c), macaddr/macaddr8.
 */

export function byteaText(buf: Buffer, start: number, end: number): string {
  return '\\x' + buf.toString('hex', start, end);
}

export function uuidText(buf: Buffer, start: number): string {
  const h = buf.toString('hex', start, start + 16);
  return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
}

/** macaddr (6 bytes) and macaddr8 (8 bytes): lower-case hex pairs joined by ':'. */
export function macText(buf: Buffer, start: number, end: number): string {
  let out = buf.toString('hex', start, start + 1);
  for (let i = start + 1; i < end; i++) out += ':' + buf.toString('hex', i, i + 1);
  return out;
}

const BYTE_BITS: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(2).padStart(8, '0'));

/** bit/varbit: int32 bit length, then the bits packed high-first. */
export function bitText(buf: Buffer, start: number): string {
  const bits = buf.readInt32BE(start);
  const bytes = (bits + 7) >> 3;
  let out = '';
  for (let i = 0; i < bytes; i++) out += BYTE_BITS[buf[start + 4 + i]!];
  return out.length === bits ? out : out.slice(0, bits);
}

// ---------------------------------------------------------------------------
// numeric: int16 ndigits, int16 weight (of the first base-10000 digit), uint16 sign, int16 dscale, digits

const NUMERIC_NEG = 0x4000;
const NUMERIC_NAN = 0xc000;
const NUMERIC_PINF = 0xd000;
const NUMERIC_NINF = 0xf000;

const FOUR_DIGITS: readonly string[] = Array.from({ length: 10000 }, (_, i) => String(i).padStart(4, '0'));

export function numericText(buf: Buffer, start: number): string {
  const ndigits = buf.readInt16BE(start);
  const weight = buf.readInt16BE(start + 2);
  const sign = buf.readUInt16BE(start + 4);
  const dscale = buf.readInt16BE(start + 6);
  if (sign === NUMERIC_NAN) return 'NaN';
  if (sign === NUMERIC_PINF) return 'Infinity';
  if (sign === NUMERIC_NINF) return '-Infinity';
  const digit = (d: number): number => (d >= 0 && d < ndigits ? buf.readInt16BE(start + 8 + 2 * d) : 0);
  let out = sign === NUMERIC_NEG ? '-' : '';
  let d: number;
  if (weight < 0) {
    d = weight + 1;
    out += '0';
  } else {
    // The first group without leading zeros, then every group up to the decimal point in full.
    out += String(digit(0));
    for (d = 1; d <= weight; d++) out += FOUR_DIGITS[digit(d)];
  }
  if (dscale <= 0) return out;
  let frac = '';
  for (let i = 0; i < dscale; d++, i += 4) frac += FOUR_DIGITS[digit(d)];
  return out + '.' + (frac.length === dscale ? frac : frac.slice(0, dscale));
}

// ---------------------------------------------------------------------------
// inet/cidr: family (2 = IPv4, 3 = IPv6), bits, is_cidr, address length, address bytes

export function inetText(buf: Buffer, start: number): string {
  return networkText(buf, start, false);
}

export function cidrText(buf: Buffer, start: number): string {
  return networkText(buf, start, true);
}

/** network_out: pg_inet_net_ntop, then '/bits' for a cidr that did not get one (a full-length mask). */
function networkText(buf: Buffer, start: number, isCidr: boolean): string {
  const family = buf[start]!;
  const bits = buf[start + 1]!;
  const at = start + 4;
  if (family === 2) {
    const addr = buf[at] + '.' + buf[at + 1] + '.' + buf[at + 2] + '.' + buf[at + 3];
    return bits !== 32 || isCidr ? addr + '/' + bits : addr;
  }
  if (family !== 3) throw new Error(`inet: unknown address family ${family}`);
  const addr = ipv6Text(buf, at);
  return bits !== 128 || isCidr ? addr + '/' + bits : addr;
}

/** inet_net_ntop_ipv6: the longest run (>= 2) of zero words becomes '::'; embedded IPv4 in dotted form. */
function ipv6Text(buf: Buffer, at: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(buf.readUInt16BE(at + 2 * i));
  const [bestBase, bestLen] = longestZeroRun(words);
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 7 && words[7] !== 1) || (bestLen === 5 && words[5] === 0xffff))) {
      return out + buf[at + 12] + '.' + buf[at + 13] + '.' + buf[at + 14] + '.' + buf[at + 15];
    }
    out += words[i]!.toString(16);
  }
  return bestBase !== -1 && bestBase + bestLen === 8 ? out + ':' : out;
}

function longestZeroRun(words: readonly number[]): [number, number] {
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  for (let i = 0; i <= 8; i++) {
    if (i < 8 && words[i] === 0) {
      if (curBase === -1) curBase = i;
      continue;
    }
    if (curBase !== -1 && (bestBase === -1 || i - curBase > bestLen)) [bestBase, bestLen] = [curBase, i - curBase];
    curBase = -1;
  }
  return bestLen < 2 ? [-1, 0] : [bestBase, bestLen];
}

// ---------------------------------------------------------------------------
// tsvector: int32 lexeme count; per lexeme its text NUL-terminated, uint16 position count, uint16
// positions (weight in the top two bits)

const WEIGHT_LETTER = ['', 'C', 'B', 'A'];

/** tsvectorout: 'lexeme' with ' and \ doubled, then :pos[weight],... when positions are stored; separated by spaces. */
export function tsvectorText(buf: Buffer, start: number): string {
  const count = buf.readInt32BE(start);
  let pos = start + 4;
  let out = '';
  for (let i = 0; i < count; i++) {
    const nul = buf.indexOf(0, pos);
    out += (i > 0 ? " '" : "'") + doubleQuotesAndBackslashes(buf.toString('utf8', pos, nul)) + "'";
    const npos = buf.readUInt16BE(nul + 1);
    pos = nul + 3;
    for (let j = 0; j < npos; j++, pos += 2) {
      const p = buf.readUInt16BE(pos);
      out += (j > 0 ? ',' : ':') + (p & 0x3fff) + WEIGHT_LETTER[p >> 14];
    }
  }
  return out;
}

function doubleQuotesAndBackslashes(s: string): string {
  if (s.indexOf("'") < 0 && s.indexOf('\\') < 0) return s;
  let out = '';
  for (const ch of s) out += ch === "'" || ch === '\\' ? ch + ch : ch;
  return out;
}
