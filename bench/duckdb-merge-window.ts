/**
 * `npx tsx bench/duckdb-merge-window.ts [--windows N] [--rows N]`: the DuckDB destination's merges alone, no
 * PostgreSQL. Each window is `--rows` stream inserts of new keys (the streaming bench's shape: an id, a
 * 100-character text, a numeric), written in 10,000-row batches, then merged; the target grows window by
 * window. Prints each merge's wall and CPU time and their total.
 */
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import type { Change } from '../src/model.js';
import { keyedTable, OID } from '../test/helpers/schema.js';

const { values } = parseArgs({ options: { windows: { type: 'string', default: '5' }, rows: { type: 'string', default: '200000' } } });
const WINDOWS = Number(values.windows);
const ROWS = Number(values.rows);
const BATCH = 10_000;

const T = keyedTable('orders', [
  ['id', OID.INT4],
  ['payload', OID.TEXT],
  ['amount', OID.NUMERIC],
]);
const dir = mkdtempSync(join(tmpdir(), 'floe-merge-window-'));
const d = new DuckDbDestination({ path: join(dir, 'm.duckdb') });
try {
  await d.open('bench', 'inc');
  await d.prepare(T);
  await d.completeSnapshot(T);
  const payload = 'x'.repeat(100);
  let id = 0;
  let lsn = 1n;
  let totalWall = 0;
  let totalCpu = 0;
  for (let w = 0; w < WINDOWS; w++) {
    for (let written = 0; written < ROWS; written += BATCH) {
      const batch: Change[] = [];
      for (let k = 0; k < Math.min(BATCH, ROWS - written); k++) {
        batch.push({ table: T, op: 'i', position: { lsn, ordinal: k }, commitTimeMicros: 0n, cells: [String(++id), payload, '12.50'] });
      }
      lsn++;
      await d.writeChanges(batch);
    }
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await d.merge();
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    totalWall += wall;
    totalCpu += (cpu.user + cpu.system) / 1000;
    process.stdout.write(`merge ${w + 1}: ${wall.toFixed(0)} ms wall, ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU\n`);
  }
  process.stdout.write(`total: ${totalWall.toFixed(0)} ms wall, ${totalCpu.toFixed(0)} ms CPU for ${WINDOWS} windows of ${ROWS} rows\n`);
} finally {
  await d.close();
  rmSync(dir, { recursive: true, force: true });
}
