/**
 * The snapshot's CPU path without PostgreSQL: COPY text rows shaped like bench/run.ts's snapshot table
 * (10 columns, about 200 bytes, every 50th note with quotes, non-ASCII and an escaped newline), split by
 * CopyTextParser in 64 KiB chunks and encoded by NdjsonEncoder as EncodingSink does. Prints the median and
 * the fastest of the rounds, and a hash of the NDJSON, which must not change when the code gets faster.
 *
 *   npx tsx bench/copy-encode.ts [rounds]     # default 15 rounds of 200,000 rows
 */
import { createHash } from 'node:crypto';
import { CopyTextParser } from '../src/postgres/copy-text.js';
import { NdjsonEncoder } from '../src/destination/encoding/ndjson.js';
import type { TableSchema } from '../src/model.js';

const rounds = Number(process.argv[2] ?? 15);
const ROWS = 200_000;
const names = ['id', 'customer_id', 'status', 'amount', 'quantity', 'discount', 'is_gift', 'email', 'note', 'created_at'];
const table = {
  schema: 'public',
  name: 'orders',
  columns: names.map((name) => ({ name, type: { isArray: false } })),
} as unknown as TableSchema;
const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const statuses = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'];

const lines: string[] = [];
for (let g = 1; g <= ROWS; g++) {
  const note =
    (g % 50 === 0 ? 'Bitte "vor der Tür" abstellen — Grüße\\n' : 'Leave at the back door, ring twice. ') +
    `${md5(String(g))} ${md5(String(g + 1))}`;
  const discount = g % 4 === 0 ? '\\N' : String((g % 30) / 100);
  const fields = [
    g,
    (g * 7919) % 100000,
    statuses[g % 5],
    ((g % 100000) / 100 + 0.99).toFixed(2),
    1 + (g % 9),
    discount,
    g % 10 === 0 ? 't' : 'f',
  ];
  lines.push([...fields, `customer${(g * 7919) % 100000}@example.com`, note, '2024-01-01 00:00:00.123+00'].join('\t'));
}
const copy = Buffer.from(lines.join('\n') + '\n');
const chunks: Buffer[] = [];
for (let o = 0; o < copy.length; o += 65536) chunks.push(copy.subarray(o, Math.min(copy.length, o + 65536)));

const encoder = new NdjsonEncoder(5 << 20);
const position = { lsn: 123_456_789n, ordinal: -1 };
const hash = createHash('sha1');
const times: number[] = [];
for (let r = 0; r < rounds; r++) {
  const t0 = process.hrtime.bigint();
  const parser = new CopyTextParser(names.length);
  for (const chunk of chunks) {
    const rows = parser.push(chunk);
    for (let i = 0; i < rows.length; i++) {
      encoder.writeSnapshotRow(table, position, rows, i);
      if (encoder.length >= 4 << 20) {
        if (r === 0) hash.update(encoder.view());
        encoder.reset();
      }
    }
  }
  if (r === 0) hash.update(encoder.view());
  encoder.reset();
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
times.sort((a, b) => a - b);
console.log(
  `${ROWS} rows, ${rounds} rounds: median ${times[times.length >> 1]!.toFixed(1)} ms, fastest ${times[0]!.toFixed(1)} ms; NDJSON sha1 ${hash.digest('hex')}`,
);
