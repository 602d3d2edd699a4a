/**
 * float4/float8 binary values to the text PostgreSQL prints with extra_float_digits > 0: the shortest
 * decimal that reads back as the same value (PostgreSQL's port of Ryu, src/common/f2s.c and d2s.c),
 * fixed-point when the decimal exponent is in [-4, 6) for float4 and [-4, 15) for float8, else
 * `d.ddde±XX` with at least two exponent digits.
 *
 * V8 already computes shortest round-trip digits (Number#toExponential() for doubles; for floats it
 * can only round a double to p digits). Where its choice may differ from Ryu's, this module checks:
 * - PostgreSQL never prints a decimal lying exactly on the midpoint to a neighbouring value
 *   (ryu_common.h, STRICTLY_SHORTEST 0); V8 may, for an even significand.
 * - When two shortest candidates are equally close, Ryu takes the even one; V8's fixed-precision
 *   rounding takes the larger.
 * Both checks are exact and touch BigInt only on the rare values where they can apply.
 */

/** Digits of the decimal chosen (no trailing zeros, no leading zeros) and the decimal exponent of its first digit. */
let outDigits = '';
let outExp = 0;

export function float8Text(buf: Buffer, start: number): string {
  const v = buf.readDoubleBE(start);
  const special = specialText(v);
  if (special !== undefined) return special;
  const hi = buf.readUInt32BE(start);
  const lo = buf.readUInt32BE(start + 4);
  const ebits = (hi >>> 20) & 0x7ff;
  const e2 = ebits === 0 ? -1074 : ebits - 1075;
  shortest64(Math.abs(v), e2, ebits !== 0 && (hi & 0xfffff) === 0 && lo === 0 && ebits > 1, lowZeroBits(hi & 0xfffff, lo, ebits));
  return formatDecimal(v < 0, 15);
}

export function float4Text(buf: Buffer, start: number): string {
  const v = buf.readFloatBE(start);
  const special = specialText(v);
  if (special !== undefined) return special;
  shortest32(Math.abs(v), buf.readUInt32BE(start));
  return formatDecimal(v < 0, 6);
}

function specialText(v: number): string | undefined {
  if (v !== v) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  return undefined;
}

/** Trailing zero bits of the 53-bit significand (the implicit bit counts when the value is normal). */
function lowZeroBits(mantHi: number, lo: number, ebits: number): number {
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  const hi = ebits === 0 ? mantHi : mantHi | 0x100000;
  return 32 + 31 - Math.clz32(hi & -hi);
}

// ---------------------------------------------------------------------------
// float8

function shortest64(a: number, e2: number, narrowBelow: boolean, zeroBits: number): void {
  const s = a.toExponential();
  const e = s.indexOf('e');
  outDigits = e === 1 ? s[0]! : s[0]! + s.slice(2, e);
  outExp = Number(s.slice(e + 1));
  // Bounds are integers only from 2^53 on, and a decimal of at most 17 digits can equal one only below 1e40.
  if (a >= 9007199254740992 && a < 1e40 && zeroBits > 0 && onBound64(a, e2, narrowBelow)) strictShortest64(a, e2, narrowBelow);
  else fixTie(a, e2 + zeroBits);
}

/**
 * The rounding interval of a double a >= 2^53 in quarter units (so that every bound is an integer):
 * a*4 - below, a*4 + above; below is halved just above a power of two, where the neighbour is closer.
 */
function quarterBounds(a: number, e2: number, narrowBelow: boolean): [bigint, bigint, bigint] {
  const v4 = BigInt(a) * 4n;
  const above = 1n << BigInt(e2 + 1);
  return [v4, v4 - (narrowBelow ? above / 2n : above), v4 + above];
}

/** Whether the chosen decimal is exactly the midpoint to a neighbour (then PostgreSQL would not print it). */
function onBound64(a: number, e2: number, narrowBelow: boolean): boolean {
  const shift = outExp - (outDigits.length - 1);
  if (shift < 0) return false;
  const c4 = BigInt(outDigits) * 10n ** BigInt(shift) * 4n;
  const [, lower, upper] = quarterBounds(a, e2, narrowBelow);
  return c4 === lower || c4 === upper;
}

/** The shortest decimal strictly inside the rounding interval of an integer-valued double, closest to it, ties to even. */
function strictShortest64(a: number, e2: number, narrowBelow: boolean): void {
  const [v4, lower, upper] = quarterBounds(a, e2, narrowBelow);
  const v = v4 / 4n;
  const text = v.toString();
  for (let p = 1; p <= text.length; p++) {
    const scale = 10n ** BigInt(text.length - p);
    const q = v / scale;
    const twice = (v - q * scale) * 2n;
    const down = q * scale;
    const up = down + scale;
    const isInside = (c: bigint): boolean => c * 4n > lower && c * 4n < upper;
    const preferUp = twice > scale || (twice === scale && q % 2n === 1n);
    const order = preferUp ? [up, down] : [down, up];
    const pick = order.find(isInside);
    if (pick === undefined) continue;
    const digits = pick.toString();
    outDigits = trimZeros(digits);
    outExp = digits.length - 1;
    return;
  }
}

// ---------------------------------------------------------------------------
// float4

/** A float4 is exact in a double, and so are the midpoints to its neighbours: candidates are checked against those. */
function shortest32(a: number, bits: number): void {
  const mant = bits & 0x7fffff;
  const ebits = (bits >>> 23) & 0xff;
  const m = ebits === 0 ? mant : mant | 0x800000;
  const e2 = ebits === 0 ? -149 : ebits - 150;
  if (e2 <= 0 && e2 >= -23 && Number.isInteger(a)) {
    // Ryu's small-integer path: the integer itself (a shorter decimal would be another integer).
    const text = String(a);
    outDigits = trimZeros(text);
    outExp = text.length - 1;
    return;
  }
  const half = 2 ** (e2 - 1);
  const lower = a - (mant === 0 && ebits > 1 ? half / 2 : half);
  const upper = a + half;
  for (let p = 1; p <= 9; p++) {
    if (candidate32(a.toExponential(p - 1), lower, upper)) break;
    // Below a power of two the interval is narrower under the value: the closest p digits may fall
    // outside while the next p-digit decimal above is inside.
    if (mant === 0 && Number(outDigits + 'e' + (outExp - outDigits.length + 1)) < a && nextAbove32(p, lower, upper)) break;
  }
  fixTie(a, e2 + lowZeroCount(m));
}

function lowZeroCount(m: number): number {
  return 31 - Math.clz32(m & -m);
}

function candidate32(s: string, lower: number, upper: number): boolean {
  const e = s.indexOf('e');
  outDigits = e === 1 ? s[0]! : s[0]! + s.slice(2, e);
  outExp = Number(s.slice(e + 1));
  return inside32(lower, upper);
}

function nextAbove32(p: number, lower: number, upper: number): boolean {
  const n = Number(outDigits.padEnd(p, '0')) + 1;
  const digits = String(n);
  // 99..9 + 1 carries into one more digit, and the exponent moves up with it.
  if (digits.length > p) outExp += 1;
  outDigits = digits;
  return inside32(lower, upper);
}

function inside32(lower: number, upper: number): boolean {
  outDigits = trimZeros(outDigits);
  const k = outExp - outDigits.length + 1;
  const c = Number(outDigits + 'e' + k);
  if (c > lower && c < upper) return true;
  if (c !== lower && c !== upper) return false;
  // The decimal rounded onto a midpoint: inside only if it is not exactly that midpoint.
  return !exactlyEquals(outDigits, k, c);
}

/** digits * 10^k === b exactly, b a finite double. */
function exactlyEquals(digits: string, k: number, b: number): boolean {
  const [num, den] = dyadic(b);
  const d = BigInt(digits);
  return k >= 0 ? d * 10n ** BigInt(k) * den === num : d * den === num * 10n ** BigInt(-k);
}

/** b as num / den with den a power of two. */
function dyadic(b: number): [bigint, bigint] {
  let den = 1n;
  let x = b;
  while (!Number.isInteger(x)) {
    x *= 2;
    den *= 2n;
  }
  return [BigInt(x), den];
}

// ---------------------------------------------------------------------------
// shared

/**
 * Ties: with the chosen decimal's last digit at 10^-j, the value lies exactly halfway between two
 * such decimals when a * 10^j has fraction .5, that is when the lowest set bit of a is 2^(-j-1)
 * (`lowBit`; 10^j adds no factor 2 beyond 2^j). Then Ryu takes the candidate with the even last digit.
 */
function fixTie(a: number, lowBit: number): void {
  const j = outDigits.length - 1 - outExp;
  if (j < 1 || lowBit + j !== -1) return;
  // a has exactly j+1 decimals: toFixed(j + 1) is exact and ends in 5; the even neighbour of its j-digit truncation wins.
  const exact = a.toFixed(j + 1);
  const truncated = exact.slice(0, -1);
  const lastDigit = truncated.charCodeAt(truncated.length - 1) - 48;
  const chosen = lastDigit % 2 === 0 ? truncated : a.toFixed(j);
  setFromFixed(chosen);
}

function setFromFixed(s: string): void {
  const dot = s.indexOf('.');
  const whole = dot < 0 ? s : s.slice(0, dot);
  const all = dot < 0 ? s : whole + s.slice(dot + 1);
  let first = 0;
  while (first < all.length - 1 && all[first] === '0') first++;
  outDigits = trimZeros(all.slice(first));
  outExp = whole.length - 1 - first;
}

function trimZeros(digits: string): string {
  let end = digits.length;
  while (end > 1 && digits.charCodeAt(end - 1) === 48) end--;
  return end === digits.length ? digits : digits.slice(0, end);
}

/** Ryu's to_chars: fixed-point for exponents in [-4, fixedBelow), else scientific. */
function formatDecimal(negative: boolean, fixedBelow: number): string {
  const digits = outDigits;
  const exp = outExp;
  const sign = negative ? '-' : '';
  const len = digits.length;
  if (exp >= -4 && exp < fixedBelow) {
    if (exp < 0) return sign + '0.' + '0'.repeat(-exp - 1) + digits;
    if (len <= exp + 1) return sign + digits + '0'.repeat(exp + 1 - len);
    return sign + digits.slice(0, exp + 1) + '.' + digits.slice(exp + 1);
  }
  const mantissa = len > 1 ? digits[0] + '.' + digits.slice(1) : digits;
  const abs = exp < 0 ? -exp : exp;
  return sign + mantissa + (exp < 0 ? 'e-' : 'e+') + (abs < 10 ? '0' : '') + abs;
}
