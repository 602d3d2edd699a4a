/**
 * What binary mode would cost floe per row: the bench row's ten values (bigint, integer, text, numeric,
 * integer, double, boolean, text, text, timestamptz) decoded from PostgreSQL's text output (one UTF-8
 * slice a value, as pgoutput text mode arrives) and from their binary send forms through floe's binary
 * decoders (src/postgres/binary-values.ts), which rebuild the same text. Both forms come from one
 * PostgreSQL session with floe's settings (the text as the type's output function prints it); the decoders are checked to give the text before timing.
 * Usage: `npx tsx bench/binary-decode.ts [--rows 1000000] [--pg-major 18]`.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startCluster } from '../src/postgres/local-cluster.js';
import { SESSION_OPTIONS } from '../src/postgres/source.js';
import { binaryDecoderFor, type BinaryDecoder } from '../src/postgres/binary-values.js';
import { utf8 } from '../src/postgres/utf8.js';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, 'pg-major': { type: 'string', default: '18' } } });
const rows = Number(values.rows);
const major = Number(values['pg-major']);
const SAMPLE = 1000;
const COLUMNS = [
  ['g::bigint', 'int8send', 20],
  ['((g * 7919) % 100000)::int', 'int4send', 23],
  [`(ARRAY['pending','paid','shipped','delivered','cancelled'])[1 + g % 5]`, 'textsend', 25],
  ['round((g % 100000) / 100.0 + 0.99, 2)::numeric(12,2)', 'numeric_send', 1700],
  ['(1 + g % 9)::int', 'int4send', 23],
  ['((g % 30) / 100.0)::float8', 'float8send', 701],
  ['g % 2 = 0', 'boolsend', 16],
  [`'user' || g || '@example.com'`, 'textsend', 25],
  [`'note for order ' || g`, 'textsend', 25],
  [`'2024-01-01 12:34:56.123456+00'::timestamptz + g * interval '1 second'`, 'timestamptz_send', 1184],
] as const;

const cluster = await startCluster({ major });
try {
  const client = new pg.Client({
    connectionString: cluster.url(),
    options: SESSION_OPTIONS,
    types: { getTypeParser: () => (v: unknown) => v },
  });
  await client.connect();
  const select = COLUMNS.map(([expr, send], i) => `format('%s', ${expr}) AS t${i}, ${send}(${expr}) AS b${i}`).join(', ');
  const res = await client.query<Record<string, string>>(`SELECT ${select} FROM generate_series(1, ${SAMPLE}) g`);
  await client.end();
  const hex = (v: string) => Buffer.from(v.slice(2), 'hex'); // bytea arrives as \x… text
  const text = res.rows.map((r) => COLUMNS.map((_, i) => Buffer.from(r[`t${i}`]!)));
  const binary = res.rows.map((r) => COLUMNS.map((_, i) => hex(r[`b${i}`]!)));
  const decoders: BinaryDecoder[] = COLUMNS.map(([, , oid]) => {
    const d = binaryDecoderFor(oid, { serverMajor: major });
    if (!d.ok) throw new Error(d.reason);
    return d.decode;
  });
  binary.forEach((row, r) =>
    row.forEach((b, i) => {
      const want = text[r]![i]!.toString();
      if (decoders[i]!(b, 0, b.length) !== want) throw new Error(`column ${i}: ${decoders[i]!(b, 0, b.length)} is not ${want}`);
    }),
  );
  const time = (what: string, decodeRow: (r: number) => number): number => {
    let sink = 0;
    const t = performance.now();
    for (let n = 0; n < rows; n++) sink += decodeRow(n % SAMPLE);
    const ns = ((performance.now() - t) * 1e6) / rows;
    console.log(`${what.padEnd(34)} ${ns.toFixed(0).padStart(5)} ns a row  (${sink > 0 ? 'checked' : ''})`);
    return ns;
  };
  const fromText = (r: number) => text[r]!.reduce((n, b) => n + utf8(b, 0, b.length).length, 0);
  const fromBinary = (r: number) => binary[r]!.reduce((n, b, i) => n + decoders[i]!(b, 0, b.length).length, 0);
  for (let round = 0; round < 3; round++) {
    const a = time('text form, UTF-8 slices', fromText);
    const b = time('binary form, floe binary decoders', fromBinary);
    console.log(`  binary - text: ${((b - a) / 1000).toFixed(2)} s of floe CPU per million rows`);
  }
} finally {
  await cluster.stop();
}
