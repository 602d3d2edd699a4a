/**
 * Decoders from PostgreSQL's binary send formats (pgoutput `binary 'true'`, binary COPY) to exactly
 * the text PostgreSQL's output functions print under floe's session settings (source.ts
 * SESSION_OPTIONS: DateStyle=ISO, IntervalStyle=postgres, extra_float_digits=3, TimeZone=UTC,
 * bytea_output=hex, client_encoding=UTF8). Everything downstream of the source (journal, casts,
 * NDJSON) consumes those text forms, so binary mode must not change a single character.
 *
 * A type is either decoded exactly or reported unsupported with the reason, so that the caller keeps
 * text mode for it: there is no best-effort decoding.
 */
import { BUILTIN_TYPES, type PgTypeInfo } from '../schema/type-map.js';
import { float4Text, float8Text } from './binary-float.js';
import { dateValue, intervalValue, timestampNoZone, timestampUtc, timetzValue, timeValue } from './binary-datetime.js';
import { bitText, byteaText, cidrText, inetText, macText, numericText, tsvectorText, uuidText } from './binary-scalars.js';
import { arrayDecoder, multirangeDecoder, rangeDecoder, vectorDecoder } from './binary-containers.js';
import { utf8 } from './utf8.js';

/** Decodes the binary value in buf[start, end) to PostgreSQL's text output. */
export type BinaryDecoder = (buf: Buffer, start: number, end: number) => string;

export type BinarySupport = { readonly ok: true; readonly decode: BinaryDecoder } | { readonly ok: false; readonly reason: string };

export interface BinaryDecoderOptions {
  /** The source server's major version: some output functions changed ("char", interval infinity, pg_lsn). */
  readonly serverMajor: number;
  /** Catalog rows (TYPE_CATALOG_SQL) for the type, its domain base types and array element types. */
  readonly lookup?: (oid: number) => PgTypeInfo | undefined;
}

const text: BinaryDecoder = utf8;

/** "char": one byte; since PostgreSQL 15 charout prints a byte >= 0x80 as \ooo, before it printed the byte itself. */
const charOctal: BinaryDecoder = (buf, start, end) => {
  if (end === start || buf[start] === 0) return '';
  const c = buf[start]!;
  return c < 0x80 ? String.fromCharCode(c) : '\\' + (c >> 6) + ((c >> 3) & 7) + (c & 7);
};
// Before 15 the text form was the raw byte, which is not UTF-8 on its own: floe decodes it as U+FFFD.
const charRaw: BinaryDecoder = (buf, start, end) =>
  end === start || buf[start] === 0 ? '' : buf[start]! < 0x80 ? String.fromCharCode(buf[start]!) : '\uFFFD';

const uint32Text: BinaryDecoder = (buf, start) => String(buf.readUInt32BE(start));
const uint64Text: BinaryDecoder = (buf, start) => buf.readBigUInt64BE(start).toString();

/** pg_lsn_out: "%X/%X" of the two 32-bit halves. */
const lsnText: BinaryDecoder = (buf, start) =>
  buf.readUInt32BE(start).toString(16).toUpperCase() +
  '/' +
  buf
    .readUInt32BE(start + 4)
    .toString(16)
    .toUpperCase();

/** jsonb and jsonpath: a format version byte (1), then the text form itself. */
const versionedText: BinaryDecoder = (buf, start, end) => {
  if (buf[start] !== 1) throw new Error(`unsupported binary format version ${buf[start]}`);
  return utf8(buf, start + 1, end);
};

const tidText: BinaryDecoder = (buf, start) => `(${buf.readUInt32BE(start)},${buf.readUInt16BE(start + 4)})`;

/** pg_snapshot / txid_snapshot: nxip, xmin, xmax, xip... printed 'xmin:xmax:xip,xip'. */
const snapshotText: BinaryDecoder = (buf, start) => {
  const n = buf.readInt32BE(start);
  let out = buf.readBigUInt64BE(start + 4).toString() + ':' + buf.readBigUInt64BE(start + 12).toString() + ':';
  for (let i = 0; i < n; i++) out += (i > 0 ? ',' : '') + buf.readBigUInt64BE(start + 20 + 8 * i).toString();
  return out;
};

// Geometric types print every coordinate with float8out (extra_float_digits applies).
const pair = (buf: Buffer, at: number): string => float8Text(buf, at) + ',' + float8Text(buf, at + 8);
const points = (buf: Buffer, at: number, n: number): string => {
  let out = '';
  for (let i = 0; i < n; i++) out += (i > 0 ? ',(' : '(') + pair(buf, at + 16 * i) + ')';
  return out;
};
const pointText: BinaryDecoder = (buf, start) => '(' + pair(buf, start) + ')';
const lsegText: BinaryDecoder = (buf, start) => '[' + points(buf, start, 2) + ']';
const boxText: BinaryDecoder = (buf, start) => points(buf, start, 2);
const lineText: BinaryDecoder = (buf, start) => '{' + pair(buf, start) + ',' + float8Text(buf, start + 16) + '}';
const circleText: BinaryDecoder = (buf, start) => '<(' + pair(buf, start) + '),' + float8Text(buf, start + 16) + '>';
const pathText: BinaryDecoder = (buf, start) => {
  const closed = buf[start] !== 0;
  const body = points(buf, start + 5, buf.readInt32BE(start + 1));
  return closed ? '(' + body + ')' : '[' + body + ']';
};
const polygonText: BinaryDecoder = (buf, start) => '(' + points(buf, start + 4, buf.readInt32BE(start)) + ')';

const int2Text: BinaryDecoder = (buf, start) => String(buf.readInt16BE(start));
const int4Text: BinaryDecoder = (buf, start) => String(buf.readInt32BE(start));
/** int8 ids are common: within ±2^53 a double holds the value exactly and avoids a BigInt. */
const int8Text: BinaryDecoder = (buf, start) => {
  const hi = buf.readInt32BE(start);
  if (hi >= -0x200000 && hi < 0x200000) return String(hi * 4294967296 + buf.readUInt32BE(start + 4));
  return buf.readBigInt64BE(start).toString();
};

const boolText: BinaryDecoder = (buf, start) => (buf[start] !== 0 ? 't' : 'f');
const float4Value: BinaryDecoder = (buf, start) => float4Text(buf, start);
const float8Value: BinaryDecoder = (buf, start) => float8Text(buf, start);
const intervalFinite: BinaryDecoder = (buf, start) => intervalValue(buf, start, false);
const intervalWithInfinity: BinaryDecoder = (buf, start) => intervalValue(buf, start, true);

/** Built-in scalar types by OID (built-in OIDs are the same in every major). */
const SCALARS: ReadonlyMap<number, BinaryDecoder> = new Map<number, BinaryDecoder>([
  [16, boolText],
  [17, byteaText],
  [19, text], // name
  [20, int8Text],
  [21, int2Text],
  [23, int4Text],
  [25, text],
  [26, uint32Text], // oid
  [27, tidText],
  [28, uint32Text], // xid
  [29, uint32Text], // cid
  [114, text], // json
  [142, text], // xml (client_encoding UTF8: xml_send adds no encoding declaration)
  [600, pointText],
  [601, lsegText],
  [602, pathText],
  [603, boxText],
  [604, polygonText],
  [628, lineText],
  [650, cidrText],
  [700, float4Value],
  [701, float8Value],
  [718, circleText],
  [774, macText], // macaddr8
  [829, macText], // macaddr
  [869, inetText],
  [1042, text], // bpchar, padding included
  [1043, text], // varchar
  [1082, dateValue],
  [1083, timeValue],
  [1114, timestampNoZone],
  [1184, timestampUtc],
  [1266, timetzValue],
  [1560, bitText],
  [1562, bitText], // varbit
  [1700, numericText],
  [2950, uuidText],
  [2970, snapshotText], // txid_snapshot
  [3614, tsvectorText],
  [3802, versionedText], // jsonb
  [4072, versionedText], // jsonpath
  [5038, snapshotText], // pg_snapshot
  [5069, uint64Text], // xid8
]);

function scalarDecoder(oid: number, major: number): BinaryDecoder | undefined {
  // Output functions that changed between majors.
  if (oid === 18) return major >= 15 ? charOctal : charRaw;
  if (oid === 1186) return major >= 17 ? intervalWithInfinity : intervalFinite;
  if (oid === 3220) return major <= 18 ? lsnText : undefined;
  return SCALARS.get(oid);
}

/** Built-in range types and their subtypes; multiranges and their ranges. */
const RANGE_SUBTYPE: ReadonlyMap<number, number> = new Map([
  [3904, 23],
  [3906, 1700],
  [3908, 1114],
  [3910, 1184],
  [3912, 1082],
  [3926, 20],
]);
const MULTIRANGE_RANGE: ReadonlyMap<number, number> = new Map([
  [4451, 3904],
  [4532, 3906],
  [4533, 3908],
  [4534, 3910],
  [4535, 3912],
  [4536, 3926],
]);
/** int2vector and oidvector: array send format, text output joined by spaces. */
const VECTOR_ELEMENT: ReadonlyMap<number, number> = new Map([
  [22, 21],
  [30, 26],
]);

const REG_TYPES = [
  'regclass',
  'regtype',
  'regproc',
  'regprocedure',
  'regoper',
  'regoperator',
  'regconfig',
  'regdictionary',
  'regnamespace',
  'regrole',
  'regcollation',
];

/**
 * Types in floe's type table (schema/type-map.ts) that are deliberately left to text mode (pg_lsn
 * only on majors after 18), by pg_type.typname or the pseudo-names 'composite' and 'user range'.
 */
export const UNSUPPORTED_BINARY_TYPES: ReadonlyMap<string, string> = new Map([
  [
    'money',
    'cash_out formats with lc_monetary (currency symbol, separators, decimals) of the server session, which the binary int64 does not carry',
  ],
  ...REG_TYPES.map((name): [string, string] => [
    name,
    'the binary form is an OID; the text is a (schema-qualified, quoted) catalog name looked up on the server',
  ]),
  ['tsquery', 'tsqueryout re-creates operator precedence, parentheses and quoting from the polish-notation tree'],
  [
    'composite',
    "record_send tags each field with its type OID; the type catalog floe loads lists no attribute types, so support cannot be decided before a value arrives (and record_out quotes with the server locale's isspace)",
  ],
  ['user range', "the type catalog floe loads does not carry a range's subtype (pg_range.rngsubtype), so its bounds cannot be decoded"],
  [
    'pg_lsn',
    'pg_lsn_out\'s "%X/%X" is verified up to 18 only (zero-padding the low half was proposed for 19): later majors are refused until tested',
  ],
]);

const MAX_DEPTH = 32;

/**
 * The decoder for values of type `typeOid`, or why there is none. The typmod is not needed: every
 * binary form carries what its output function prints (numeric dscale, bit length, rounded time).
 */
export function binaryDecoderFor(typeOid: number, options: BinaryDecoderOptions): BinarySupport {
  return resolve(typeOid, options, 0);
}

function resolve(oid: number, options: BinaryDecoderOptions, depth: number): BinarySupport {
  if (depth > MAX_DEPTH) return { ok: false, reason: `type oid ${oid}: domain or array nesting too deep` };
  const scalar = oid < 16384 ? scalarDecoder(oid, options.serverMajor) : undefined;
  if (scalar) return { ok: true, decode: scalar };
  const info = options.lookup?.(oid) ?? BUILTIN_TYPES.get(oid);
  const container = oid < 16384 ? builtinContainer(oid, options, depth) : undefined;
  if (container) return container;
  if (!info) return { ok: false, reason: `type oid ${oid} is not in the type catalog` };
  if (oid < 16384 && UNSUPPORTED_BINARY_TYPES.has(info.name))
    return { ok: false, reason: `${info.name}: ${UNSUPPORTED_BINARY_TYPES.get(info.name)}` };
  // A domain is sent and printed as its base type; an enum as its label.
  if (info.baseOid !== 0) return resolve(info.baseOid, options, depth + 1);
  if (info.isEnum) return { ok: true, decode: text };
  if (info.elemOid !== 0) return arrayOf(info, options, depth);
  if (info.category === 'C') return { ok: false, reason: `${info.name}: ${UNSUPPORTED_BINARY_TYPES.get('composite')}` };
  if (info.category === 'R') return { ok: false, reason: `${info.name}: ${UNSUPPORTED_BINARY_TYPES.get('user range')}` };
  return { ok: false, reason: `${info.name}: no binary decoder for this type` };
}

function builtinContainer(oid: number, options: BinaryDecoderOptions, depth: number): BinarySupport | undefined {
  const sub = RANGE_SUBTYPE.get(oid);
  if (sub !== undefined) return mapOk(resolve(sub, options, depth + 1), rangeDecoder);
  const range = MULTIRANGE_RANGE.get(oid);
  if (range !== undefined) return mapOk(resolve(range, options, depth + 1), multirangeDecoder);
  const elem = VECTOR_ELEMENT.get(oid);
  if (elem !== undefined) return mapOk(resolve(elem, options, depth + 1), vectorDecoder);
  return undefined;
}

function arrayOf(info: PgTypeInfo, options: BinaryDecoderOptions, depth: number): BinarySupport {
  const elem = resolve(info.elemOid, options, depth + 1);
  if (!elem.ok) return { ok: false, reason: `${info.name}: element ${elem.reason}` };
  return { ok: true, decode: arrayDecoder(elem.decode, info.delimiter ?? ',') };
}

function mapOk(inner: BinarySupport, wrap: (d: BinaryDecoder) => BinaryDecoder): BinarySupport {
  return inner.ok ? { ok: true, decode: wrap(inner.decode) } : inner;
}
