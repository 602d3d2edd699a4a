/**
 * Journal text → typed target value, in Snowflake SQL.
 *
 * The journal holds each value as the exact PostgreSQL text (arrays as the JSON
 * of their element texts, see pg-array.ts), like every floe journal. The merge
 * converts it with the expression below, chosen by the column's mapped type
 * (type-map.ts gives the Snowflake type name; this module the conversion).
 *
 * Rule: a value a Snowflake type cannot hold becomes NULL in the target while
 * the journal keeps its text; a conversion never fails the merge (a failing
 * MERGE would fail the same way forever). Hence the TRY_ functions. Cases:
 *
 * - numeric(p,s): 'NaN' (and ±Infinity) → NULL; NUMBER has no such values.
 * - float4/float8: 'NaN', 'Infinity', '-Infinity' kept (FLOAT has them).
 * - date, timestamp, timestamptz: 'infinity'/'-infinity', BC values and years
 *   after 9999 → NULL (Snowflake's range is years 1..9999 in text form).
 * - time '24:00:00' → NULL (Snowflake's TIME ends at 23:59:59.999999999).
 * - json/jsonb → VARIANT, by TRY_PARSE_JSON(x, 'd'): a json object with a
 *   duplicate key keeps the key once, with its last value (what jsonb keeps;
 *   strict parsing would turn the whole value into NULL); a number with more
 *   than 38 digits or an exponent becomes a DOUBLE inside the VARIANT (Snowflake
 *   stores no wider fixed-point number); the journal keeps the exact text.
 * - arrays → ARRAY of the element texts (strings), from the journal's JSON.
 * - bytea '\x..' → BINARY.
 * - everything stored as VARCHAR (text, uuid, interval, timetz, unconstrained
 *   or wide numeric, unknown types) → the text itself, lossless.
 */
import type { MappedType } from '../../schema/type-map.js';

/** The Snowflake expression converting the VARCHAR journal expression `x` into `type.snowflake`. */
export function snowflakeCast(type: MappedType, x: string): string {
  const sf = type.snowflake;
  if (type.isArray) return `TRY_PARSE_JSON(${x})::ARRAY`;
  if (sf === 'VARCHAR') return x;
  if (sf === 'BOOLEAN') return `${x}::BOOLEAN`;
  // Snowflake documents 'inf'/'-inf' as FLOAT's infinities; PostgreSQL prints 'Infinity'.
  if (sf === 'FLOAT') return `IFF(${x} = 'Infinity', 'inf', IFF(${x} = '-Infinity', '-inf', ${x}))::FLOAT`;
  if (sf === 'VARIANT') return `TRY_PARSE_JSON(${x}, 'd')`;
  if (sf === 'BINARY') return `TO_BINARY(SUBSTR(${x}, 3), 'HEX')`;
  if (sf === 'DATE') return `IFF(${x} = 'infinity' OR ${x} = '-infinity', NULL, TRY_TO_DATE(${x}))`;
  if (sf.startsWith('TIME(')) return `IFF(${x} = '24:00:00', NULL, ${x}::${sf})`;
  // PostgreSQL prints timestamptz under TimeZone=UTC with the offset '+00', which Snowflake's
  // automatic format detection reads only as '+00:00'.
  if (sf.startsWith('TIMESTAMP_TZ')) return `IFF(${x} = 'infinity' OR ${x} = '-infinity', NULL, TRY_TO_TIMESTAMP_TZ(${x} || ':00')::${sf})`;
  if (sf.startsWith('TIMESTAMP_NTZ')) return `IFF(${x} = 'infinity' OR ${x} = '-infinity', NULL, TRY_TO_TIMESTAMP_NTZ(${x})::${sf})`;
  const num = /^NUMBER\((\d+),(\d+)\)$/.exec(sf);
  if (num) return `TRY_TO_NUMBER(${x}, ${num[1]}, ${num[2]})`;
  return `${x}::${sf}`;
}
