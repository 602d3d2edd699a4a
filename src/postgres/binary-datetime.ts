/**
 * date/time binary values to the text PostgreSQL prints with DateStyle=ISO, IntervalStyle=postgres,
 * TimeZone=UTC (src/backend/utils/adt/date.c, timestamp.c, datetime.c).
 *
 * The binary forms are integers counted from 2000-01-01 (days for date, microseconds for timestamps).
 * Microsecond counts within about 285 years of 2000 fit a double exactly; only values further out take
 * the BigInt path.
 */

/** Julian day of 2000-01-01 (POSTGRES_EPOCH_JDATE). */
const EPOCH_JDATE = 2451545;
const USECS_PER_DAY = 86_400_000_000;
const USECS_PER_HOUR = 3_600_000_000;
const BIG_USECS_PER_DAY = 86_400_000_000n;
const BIG_USECS_PER_HOUR = 3_600_000_000n;

const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? '0' : '') + i);

const pad2 = (n: number): string => TWO_DIGITS[n]!;

/** pg_ultostr_zeropad(.., 4): at least four digits. */
function pad4(n: number): string {
  if (n >= 1000) return String(n);
  return (n >= 100 ? '0' : n >= 10 ? '00' : '000') + n;
}

// j2date's results; module state rather than an object per value on the hot path.
let year = 0;
let month = 0;
let day = 0;

/** PostgreSQL's j2date (Julian day to proleptic Gregorian), unsigned arithmetic kept non-negative. */
function j2date(jd: number): void {
  let julian = jd + 32044;
  let quad = Math.floor(julian / 146097);
  const extra = (julian - quad * 146097) * 4 + 3;
  julian += 60 + quad * 3 + Math.floor(extra / 146097);
  quad = Math.floor(julian / 1461);
  julian -= quad * 1461;
  let y = Math.floor((julian * 4) / 1461);
  julian = (y !== 0 ? (julian + 305) % 365 : (julian + 306) % 366) + 123;
  y += quad * 4;
  year = y - 4800;
  quad = Math.floor((julian * 2141) / 65536);
  day = julian - Math.floor((7834 * quad) / 256);
  month = ((quad + 10) % 12) + 1;
}

/** 'YYYY-MM-DD' (BC years as 1 - year, ' BC' is appended by the caller). */
function dateText(): string {
  return pad4(year > 0 ? year : 1 - year) + '-' + pad2(month) + '-' + pad2(day);
}

const bc = (): string => (year > 0 ? '' : ' BC');

/** AppendSeconds: two-digit seconds, then the microseconds without trailing zeros. */
function seconds(sec: number, fsec: number): string {
  if (fsec === 0) return pad2(sec);
  let f = fsec;
  let digits = 6;
  while (f % 10 === 0) {
    f /= 10;
    digits--;
  }
  const text = String(f);
  return pad2(sec) + '.' + '0'.repeat(digits - text.length) + text;
}

/** HH:MM:SS[.ffffff] of a non-negative microsecond count below a day (or exactly 24:00:00). */
function timeOfDay(usecs: number): string {
  const hour = Math.floor(usecs / USECS_PER_HOUR);
  let rest = usecs - hour * USECS_PER_HOUR;
  const min = Math.floor(rest / 60_000_000);
  rest -= min * 60_000_000;
  const sec = Math.floor(rest / 1_000_000);
  return pad2(hour) + ':' + pad2(min) + ':' + seconds(sec, rest - sec * 1_000_000);
}

/** An int64 as a number when that is exact (|v| <= 2^53), else undefined. */
function int64Exact(buf: Buffer, start: number): number | undefined {
  const hi = buf.readInt32BE(start);
  if (hi < -0x200000 || hi >= 0x200000) return undefined;
  return hi * 4294967296 + buf.readUInt32BE(start + 4);
}

const isInt64Max = (buf: Buffer, start: number): boolean =>
  buf.readInt32BE(start) === 0x7fffffff && buf.readUInt32BE(start + 4) === 0xffffffff;
const isInt64Min = (buf: Buffer, start: number): boolean => buf.readInt32BE(start) === -0x80000000 && buf.readUInt32BE(start + 4) === 0;

export function dateValue(buf: Buffer, start: number): string {
  const days = buf.readInt32BE(start);
  if (days === -0x80000000) return '-infinity';
  if (days === 0x7fffffff) return 'infinity';
  j2date(days + EPOCH_JDATE);
  return dateText() + bc();
}

export function timeValue(buf: Buffer, start: number): string {
  return timeOfDay(int64Exact(buf, start) ?? 0);
}

/** timetz: time, then the zone in seconds west of UTC (EncodeTimezone prints it east-positive). */
export function timetzValue(buf: Buffer, start: number): string {
  return timeOfDay(int64Exact(buf, start) ?? 0) + zoneText(buf.readInt32BE(start + 8));
}

function zoneText(west: number): string {
  let sec = Math.abs(west);
  const hour = Math.floor(sec / 3600);
  sec -= hour * 3600;
  const min = Math.floor(sec / 60);
  sec -= min * 60;
  const sign = west <= 0 ? '+' : '-';
  const hh = hour < 100 ? pad2(hour) : String(hour);
  if (sec !== 0) return sign + hh + ':' + pad2(min) + ':' + pad2(sec);
  if (min !== 0) return sign + hh + ':' + pad2(min);
  return sign + hh;
}

/** 'YYYY-MM-DD HH:MM:SS[.ffffff]' plus `zone` plus ' BC'; timestamptz passes '+00' (TimeZone=UTC). */
function timestampValue(buf: Buffer, start: number, zone: string): string {
  if (isInt64Max(buf, start)) return 'infinity';
  if (isInt64Min(buf, start)) return '-infinity';
  const exact = int64Exact(buf, start);
  let days: number;
  let usecs: number;
  if (exact !== undefined) {
    days = Math.floor(exact / USECS_PER_DAY);
    usecs = exact - days * USECS_PER_DAY;
    // The division is rounded: step back into [0, one day).
    if (usecs < 0) [days, usecs] = [days - 1, usecs + USECS_PER_DAY];
    else if (usecs >= USECS_PER_DAY) [days, usecs] = [days + 1, usecs - USECS_PER_DAY];
  } else {
    const v = buf.readBigInt64BE(start);
    let d = v / BIG_USECS_PER_DAY;
    let t = v - d * BIG_USECS_PER_DAY;
    if (t < 0n) [d, t] = [d - 1n, t + BIG_USECS_PER_DAY];
    days = Number(d);
    usecs = Number(t);
  }
  j2date(days + EPOCH_JDATE);
  return dateText() + ' ' + timeOfDay(usecs) + zone + bc();
}

export const timestampNoZone = (buf: Buffer, start: number): string => timestampValue(buf, start, '');
export const timestampUtc = (buf: Buffer, start: number): string => timestampValue(buf, start, '+00');

// ---------------------------------------------------------------------------
// interval: int64 microseconds, int32 days, int32 months; printed by EncodeInterval (IntervalStyle postgres)

/**
 * `infinityAware`: PostgreSQL 17+ prints the all-maximum and all-minimum values as 'infinity' and
 * '-infinity'; earlier majors print them as numbers.
 */
export function intervalValue(buf: Buffer, start: number, infinityAware: boolean): string {
  const days = buf.readInt32BE(start + 8);
  const months = buf.readInt32BE(start + 12);
  if (infinityAware) {
    if (months === 0x7fffffff && days === 0x7fffffff && isInt64Max(buf, start)) return 'infinity';
    if (months === -0x80000000 && days === -0x80000000 && isInt64Min(buf, start)) return '-infinity';
  }
  const state: IntervalText = { text: '', isZero: true, isBefore: false };
  addPart(state, Math.trunc(months / 12), 'year');
  addPart(state, months % 12, 'mon');
  addPart(state, days, 'day');
  return appendIntervalTime(state, buf, start);
}

interface IntervalText {
  text: string;
  isZero: boolean;
  isBefore: boolean;
}

/** AddPostgresIntPart: each nonzero field sets is_before for (only) the next one. */
function addPart(state: IntervalText, value: number, unit: string): void {
  if (value === 0) return;
  state.text += (state.isZero ? '' : ' ') + (state.isBefore && value > 0 ? '+' : '') + value + ' ' + unit + (value !== 1 ? 's' : '');
  state.isBefore = value < 0;
  state.isZero = false;
}

function appendIntervalTime(state: IntervalText, buf: Buffer, start: number): string {
  const exact = int64Exact(buf, start);
  let hours: string;
  let rest: number;
  let negative: boolean;
  if (exact !== undefined) {
    negative = exact < 0;
    const abs = Math.abs(exact);
    const h = Math.floor(abs / USECS_PER_HOUR);
    hours = h < 100 ? pad2(h) : String(h);
    rest = abs - h * USECS_PER_HOUR;
  } else {
    const v = buf.readBigInt64BE(start);
    negative = v < 0n;
    const abs = negative ? -v : v;
    const h = abs / BIG_USECS_PER_HOUR;
    hours = h < 100n ? pad2(Number(h)) : h.toString();
    rest = Number(abs - h * BIG_USECS_PER_HOUR);
  }
  if (!state.isZero && hours === '00' && rest === 0) return state.text;
  const min = Math.floor(rest / 60_000_000);
  rest -= min * 60_000_000;
  const sec = Math.floor(rest / 1_000_000);
  const sign = negative ? '-' : state.isBefore ? '+' : '';
  return state.text + (state.isZero ? '' : ' ') + sign + hours + ':' + pad2(min) + ':' + seconds(sec, rest - sec * 1_000_000);
}
