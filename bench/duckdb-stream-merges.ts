/**
 * The DuckDB destination alone, no PostgreSQL: streamed changes of the bench's 10-column order rows
 * (bench/run.ts) written in 5,000-row batches and merged every `--window` rows, first `--rows` inserts of
 * new keys, then `--update-windows` windows of updates spread over those keys. Prints the time and CPU of
 * the insert merges and of the update merges, and whether a merge had to halve its chunks
 * (memory_limit too small for them). Batches are written directly (no runtime), so the time of writing
 * them, building the changes included, is reported apart.
 * Usage: `npx tsx bench/duckdb-stream-merges.ts [--rows 1000000] [--window 200000] [--update-windows 3]
 * [--memory-limit 48MB]` (default: the destination's own memory_limit).
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import type { Cell, Change } from '../src/model.js';
import { memoryLog } from '../test/helpers/pipeline.js';
import { keyedTable } from '../test/helpers/schema.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    window: { type: 'string', default: '200000' },
    'update-windows': { type: 'string', default: '3' },
    'memory-limit': { type: 'string' },
  },
});
const ROWS = Number(values.rows);
const WINDOW = Number(values.window);
const UPDATE_WINDOWS = Number(values['update-windows']);
const BATCH = 5000;

const T = keyedTable('stream_orders', [
  ['id', 20],
  ['customer_id', 23],
  ['status', 25],
  ['amount', 1700],
  ['quantity', 23],
  ['discount', 701],
  ['is_gift', 16],
  ['email', 25],
  ['note', 25],
  ['created_at', 1184],
]);
const STATUSES = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'];
const md5 = (s: string) => createHash('md5').update(s).digest('hex');

/** Row `g` as bench/run.ts's insertRows makes it (without its every-50th escaped note). */
function order(g: number, note?: string): Cell[] {
  const created = new Date(Date.UTC(2024, 0, 1) + g * 1000).toISOString().replace('T', ' ').replace('Z', '+00');
  return [
    String(g),
    String((g * 7919) % 100000),
    STATUSES[g % 5]!,
    ((g % 100000) / 100 + 0.99).toFixed(2),
    String(1 + (g % 9)),
    g % 4 === 0 ? null : String((g % 30) / 100),
    g % 10 === 0 ? 't' : 'f',
    `customer${(g * 7919) % 100000}@example.com`,
    note ?? `Leave at the back door, ring twice. ${md5(String(g))} ${md5(String(g + 1))}`,
    created,
  ];
}

let halvings = 0;
const log = memoryLog(10, (line) => {
  if (line.includes('merging in smaller chunks')) halvings++;
});
const dir = mkdtempSync(join(tmpdir(), 'floe-stream-merges-'));
const d = new DuckDbDestination({
  path: join(dir, 'm.duckdb'),
  log: log.log,
  ...(values['memory-limit'] ? { memoryLimit: values['memory-limit'] } : {}),
});
const totals = { writeMs: 0, insertMergeMs: 0, insertMergeCpuMs: 0, updateMergeMs: 0, updateMergeCpuMs: 0 };
let lsn = 1n;

async function write(rows: number, cells: (k: number) => Cell[], op: Change['op']): Promise<void> {
  const t0 = performance.now();
  for (let k0 = 0; k0 < rows; k0 += BATCH, lsn++) {
    const n = Math.min(BATCH, rows - k0);
    await d.writeChanges(
      Array.from({ length: n }, (_, i) => ({ table: T, op, position: { lsn, ordinal: i }, commitTimeMicros: 0n, cells: cells(k0 + i) })),
    );
  }
  totals.writeMs += performance.now() - t0;
}

async function merge(kind: 'insert' | 'update'): Promise<void> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await d.merge();
  const cpu = process.cpuUsage(cpu0);
  totals[`${kind}MergeMs`] += performance.now() - t0;
  totals[`${kind}MergeCpuMs`] += (cpu.user + cpu.system) / 1000;
}

try {
  await d.open('bench', 'inc');
  await d.prepare(T);
  await d.completeSnapshot(T);
  for (let done = 0; done < ROWS; done += WINDOW) {
    const n = Math.min(WINDOW, ROWS - done);
    await write(n, (k) => order(done + k + 1), 'i');
    await merge('insert');
  }
  for (let w = 0; w < UPDATE_WINDOWS; w++) {
    // Every 7th key, so a window's updates are spread over the whole target.
    await write(WINDOW, (k) => order(1 + (((w * WINDOW + k) * 7) % ROWS), `updated ${w}`), 'u');
    await merge('update');
  }
  const [[rows]] = (await d.query(`SELECT count(*) FROM public.stream_orders`)) as [[bigint]];
  const ms = (x: number) => `${(x / 1000).toFixed(2)} s`;
  process.stdout.write(
    `memory_limit ${values['memory-limit'] ?? 'default'}: ${rows} target rows; insert merges ${ms(totals.insertMergeMs)} (CPU ${ms(totals.insertMergeCpuMs)}), ` +
      `update merges ${ms(totals.updateMergeMs)} (CPU ${ms(totals.updateMergeCpuMs)}), chunk halvings ${halvings}; writing batches ${ms(totals.writeMs)}\n`,
  );
} finally {
  await d.close();
  rmSync(dir, { recursive: true, force: true });
}
