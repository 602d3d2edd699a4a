/**
 * Coercion of one NDJSON value into a Snowflake column, the way Snowpipe
 * Streaming (high-performance) loads it (reference §1.15): the value becomes
 * a normalized text that `columnExpr` converts to the column's DuckDB type,
 * or the row fails with a message saying which column and why. Messages never
 * contain the value itself (floe logs them).
 *
 * Rows travel to DuckDB as one JSON parameter per batch (a list of lists of
 * texts), which is far cheaper to parse than a VALUES list of literals.
 */
import { duckType, renderSfType, type SfType } from './sql/types.js';

export type Coerced = { ok: true; text: string | null } | { ok: false; message: string };

/** SQL turning the normalized text `ref` (a VARCHAR expression) into the column's DuckDB value. */
export function columnExpr(type: SfType, ref: string, binaryFormat: 'BASE64' | 'HEX'): string {
  switch (type.base) {
    case 'VARCHAR':
      return ref;
    case 'BINARY':
      return binaryFormat === 'BASE64' ? `from_base64(${ref})` : `unhex(${ref})`;
    case 'VARIANT':
    case 'ARRAY':
    case 'OBJECT':
      return `CAST(${ref} AS JSON)`;
    case 'NUMBER':
      // DuckDB parses text into a DECIMAL wider than 18 digits (128-bit) ~50x slower than into DECIMAL(18,s);
      // texts are normalized (coerceValue), so 18 characters or fewer always fit DECIMAL(18,s) and widen exactly.
      if (type.size > 18 && type.scale <= 18) {
        return `CASE WHEN length(${ref}) <= 18 THEN CAST(CAST(${ref} AS DECIMAL(18,${type.scale})) AS ${duckType(type)}) ELSE CAST(${ref} AS ${duckType(type)}) END`;
      }
      return `CAST(${ref} AS ${duckType(type)})`;
    default:
      return `CAST(${ref} AS ${duckType(type)})`;
  }
}

const ok = (text: string | null): Coerced => ({ ok: true, text });

const NUMERIC = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const TIME = /^(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$/;
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const HEX = /^(?:[0-9A-Fa-f]{2})*$/;

function fail(column: string, type: SfType, what: string): Coerced {
  return { ok: false, message: `${what} for column "${column}" of type ${renderSfType(type)}` };
}

/** The last date validDate accepted: rows of a batch mostly share their dates, and a Date per value shows in profiles. */
let lastValidDate = '';

function validDate(y: string, m: string, d: string): boolean {
  const key = `${y}-${m}-${d}`;
  if (key === lastValidDate) return true;
  const ok = validDateUncached(y, m, d);
  if (ok) lastValidDate = key;
  return ok;
}

function validDateUncached(y: string, m: string, d: string): boolean {
  const dt = new Date(Date.UTC(Number(y), Number(m) - 1, Number(d)));
  return dt.getUTCFullYear() === Number(y) && dt.getUTCMonth() === Number(m) - 1 && dt.getUTCDate() === Number(d);
}

function validTime(h: string, mi: string, s: string | undefined): boolean {
  return Number(h) < 24 && Number(mi) < 60 && Number(s ?? 0) < 60;
}

/** Expands a numeric text (possibly with an exponent) into plain decimal digits, rounded to `scale`. */
function toDecimal(text: string, scale: number): { digits: string; intDigits: number } | undefined {
  const m = /^([-+]?)(\d*)\.?(\d*)(?:[eE]([-+]?\d+))?$/.exec(text);
  if (!m) return undefined;
  const neg = m[1] === '-';
  let intPart = m[2] ?? '';
  let frac = m[3] ?? '';
  let exp = Number(m[4] ?? 0);
  if (Math.abs(exp) > 400) return undefined;
  while (exp > 0) {
    intPart += frac[0] ?? '0';
    frac = frac.slice(1);
    exp--;
  }
  while (exp < 0) {
    frac = (intPart.slice(-1) || '0') + frac;
    intPart = intPart.slice(0, -1);
    exp++;
  }
  // Round half away from zero at `scale` digits, as Snowflake does.
  let scaled = BigInt((intPart || '0') + frac.padEnd(scale, '0').slice(0, scale));
  if (Number(frac[scale] ?? '0') >= 5) scaled += 1n;
  const s = scaled.toString().padStart(scale + 1, '0');
  const ip = s.slice(0, s.length - scale).replace(/^0+(?=\d)/, '');
  const fp = s.slice(s.length - scale);
  const intDigits = ip === '0' ? 0 : ip.length;
  return { digits: `${neg && scaled !== 0n ? '-' : ''}${ip}${scale > 0 ? `.${fp}` : ''}`, intDigits };
}

const PLAIN_INTEGER = /^-?[1-9]\d{0,17}$/;

/**
 * The common case of a NUMBER value, an integer of at most 18 digits (a JSON number or a numeric string), without
 * toDecimal's BigInt arithmetic; undefined for anything else (the general path decides).
 */
function plainInteger(value: unknown, size: number, scale: number): Coerced | undefined {
  let text: string;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) return undefined;
    text = String(value);
  } else if (typeof value === 'string' && PLAIN_INTEGER.test(value)) {
    text = value;
  } else {
    return undefined;
  }
  if (text === '0' || text === '-0') return ok(scale > 0 ? `0.${'0'.repeat(scale)}` : '0');
  const digits = text.startsWith('-') ? text.length - 1 : text.length;
  if (digits > size - scale) return undefined;
  return ok(scale > 0 ? `${text}.${'0'.repeat(scale)}` : text);
}

/** Epoch seconds (Snowflake's integer form) as an ISO text. */
function epoch(seconds: number, as: 'date' | 'tz' | 'ntz'): Coerced | undefined {
  const d = new Date(seconds * 1000);
  if (Number.isNaN(d.getTime())) return undefined;
  const iso = d.toISOString(); // 2024-01-02T03:04:05.678Z
  if (as === 'date') return ok(iso.slice(0, 10));
  const base = `${iso.slice(0, 10)} ${iso.slice(11, 23)}`;
  return ok(as === 'tz' ? `${base}+00:00` : base);
}

export function coerceValue(value: unknown, column: string, type: SfType, nullable: boolean, binaryFormat: 'BASE64' | 'HEX'): Coerced {
  if (value === null || value === undefined) {
    return nullable ? ok(null) : fail(column, type, 'NULL result in a non-nullable column');
  }
  switch (type.base) {
    case 'NUMBER': {
      const fast = plainInteger(value, type.size, type.scale);
      if (fast !== undefined) return fast;
      const text =
        typeof value === 'number' ? (Number.isFinite(value) ? String(value) : '') : typeof value === 'string' ? value.trim() : '';
      if (!NUMERIC.test(text)) return fail(column, type, 'Numeric value is not recognized');
      const d = toDecimal(text, type.scale);
      if (!d || d.intDigits > type.size - type.scale) return fail(column, type, 'Numeric value is out of range');
      return ok(d.digits);
    }
    case 'FLOAT': {
      if (typeof value === 'number') return ok(String(value));
      if (typeof value === 'string') {
        const t = value.trim();
        if (NUMERIC.test(t)) return ok(t);
        if (/^(nan|[-+]?inf(inity)?)$/i.test(t)) return ok(t.replace(/^([-+]?)inf$/i, '$1infinity'));
      }
      return fail(column, type, 'Numeric value is not recognized');
    }
    case 'VARCHAR': {
      const s = typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value);
      if ([...s].length > type.size)
        return fail(column, type, `String is too long and would be truncated (maximum ${type.size} characters)`);
      return ok(s);
    }
    case 'BOOLEAN': {
      if (typeof value === 'boolean') return ok(value ? 'true' : 'false');
      if (typeof value === 'number') return ok(value !== 0 ? 'true' : 'false');
      if (typeof value === 'string') {
        const t = value.trim().toLowerCase();
        if (['true', 't', 'yes', 'y', 'on', '1'].includes(t)) return ok('true');
        if (['false', 'f', 'no', 'n', 'off', '0'].includes(t)) return ok('false');
      }
      return fail(column, type, 'Boolean value is not recognized');
    }
    case 'DATE': {
      if (typeof value === 'number' && Number.isInteger(value)) return epoch(value, 'date') ?? fail(column, type, 'Date is not recognized');
      if (typeof value !== 'string') return fail(column, type, 'Date is not recognized');
      const t = TIMESTAMP.exec(value.trim());
      if (!t || !validDate(t[1]!, t[2]!, t[3]!)) return fail(column, type, 'Date is not recognized');
      return ok(`${t[1]}-${t[2]}-${t[3]}`);
    }
    case 'TIME': {
      if (typeof value !== 'string') return fail(column, type, 'Time is not recognized');
      const t = TIME.exec(value.trim());
      if (!t || !validTime(t[1]!, t[2]!, t[3])) return fail(column, type, 'Time is not recognized');
      return ok(`${t[1]}:${t[2]}:${t[3] ?? '00'}${t[4] ? `.${t[4].slice(0, 6)}` : ''}`);
    }
    case 'TIMESTAMP_NTZ':
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ': {
      const tz = type.base !== 'TIMESTAMP_NTZ';
      if (typeof value === 'number' && Number.isFinite(value)) {
        return epoch(value, tz ? 'tz' : 'ntz') ?? fail(column, type, 'Timestamp is not recognized');
      }
      if (typeof value !== 'string') return fail(column, type, 'Timestamp is not recognized');
      const t = TIMESTAMP.exec(value.trim());
      if (!t || !validDate(t[1]!, t[2]!, t[3]!) || (t[4] !== undefined && !validTime(t[4], t[5]!, t[6]))) {
        return fail(column, type, 'Timestamp is not recognized');
      }
      const base = `${t[1]}-${t[2]}-${t[3]} ${t[4] ?? '00'}:${t[5] ?? '00'}:${t[6] ?? '00'}${t[7] ? `.${t[7].slice(0, 6)}` : ''}`;
      let offset = t[8] ?? '';
      if (/^z$/i.test(offset)) offset = '+00:00';
      else if (/^[+-]\d{2}$/.test(offset)) offset += ':00';
      else if (/^[+-]\d{4}$/.test(offset)) offset = `${offset.slice(0, 3)}:${offset.slice(3)}`;
      // TIMESTAMP_NTZ keeps the wall-clock time and ignores an offset, as Snowflake does.
      return ok(tz ? base + offset : base);
    }
    case 'BINARY': {
      if (typeof value !== 'string') return fail(column, type, 'Binary value is not recognized');
      const valid = binaryFormat === 'BASE64' ? BASE64.test(value) : HEX.test(value);
      if (!valid) return fail(column, type, `Binary value is not valid ${binaryFormat}`);
      const bytes = binaryFormat === 'BASE64' ? Buffer.from(value, 'base64').length : value.length / 2;
      if (bytes > type.size) return fail(column, type, 'Binary value is too long');
      return ok(value);
    }
    case 'VARIANT':
      return ok(JSON.stringify(value));
    case 'ARRAY':
      // High-performance streaming is type-strict: a non-array value becomes a one-element array.
      return ok(JSON.stringify(Array.isArray(value) ? value : [value]));
    case 'OBJECT': {
      let v = value;
      if (typeof v === 'string') {
        try {
          v = JSON.parse(v);
        } catch {
          return fail(column, type, 'Failed to cast variant value to OBJECT');
        }
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(column, type, 'Failed to cast variant value to OBJECT');
      return ok(JSON.stringify(v));
    }
  }
}
