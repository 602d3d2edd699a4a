/**
 * What a larger DuckDB `checkpoint_threshold` costs after a crash: journal-like rows are committed in
 * transactions of 4,000 until the write-ahead log is just under the threshold, the process exits
 * without closing the database (as kill -9 would), and a second process times opening the file, which
 * replays the log. Usage: `npx tsx bench/duckdb-wal-replay.ts [--threshold 64MB]`.
 */
import { fork } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';

const { values } = parseArgs({
  options: { threshold: { type: 'string', default: '64MB' }, role: { type: 'string' }, path: { type: 'string' } },
});
const threshold = values.threshold!;
const open = (path: string) => DuckDBInstance.create(path, { checkpoint_threshold: threshold, memory_limit: '128MB', threads: '1' });
const thresholdBytes = Number(/^(\d+)MB$/i.exec(threshold)?.[1] ?? NaN) * 1024 * 1024;

async function write(path: string): Promise<void> {
  const c = await (await open(path)).connect();
  await c.run(`CREATE TABLE j (seq BIGINT, lsn UBIGINT, op VARCHAR, id VARCHAR, status VARCHAR, email VARCHAR, note VARCHAR)`);
  for (let seq = 0; ;) {
    await c.run('BEGIN');
    const a = await c.createAppender('j');
    for (let i = 0; i < 4000; i++, seq++) {
      a.appendBigInt(BigInt(seq));
      a.appendUBigInt(BigInt(seq) * 100n);
      a.appendVarchar('i');
      a.appendVarchar(String(seq));
      a.appendVarchar('pending');
      a.appendVarchar(`customer${seq}@example.com`);
      a.appendVarchar(`Leave at the back door, ring twice. ${seq.toString(16).repeat(8)}`);
      a.endRow();
    }
    a.closeSync();
    await c.run('COMMIT');
    const wal = existsSync(`${path}.wal`) ? statSync(`${path}.wal`).size : 0;
    if (wal > thresholdBytes * 0.94) {
      process.send!({ rows: seq, walBytes: wal });
      process.exit(0); // no close: the log stays, as after kill -9
    }
  }
}

async function reopen(path: string): Promise<void> {
  const started = performance.now();
  const c = await (await open(path)).connect();
  const rows = (await c.runAndReadAll('SELECT count(*) FROM j')).getRows()[0]![0];
  process.send!({
    ms: Math.round(performance.now() - started),
    rows: Number(rows),
    rssMb: Math.round(process.memoryUsage().rss / 2 ** 20),
  });
  process.exit(0);
}

function child(role: string, path: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const p = fork(fileURLToPath(import.meta.url), ['--role', role, '--path', path, '--threshold', threshold], {
      execArgv: process.execArgv,
    });
    p.once('message', (m) => resolve(m as Record<string, number>));
    p.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`${role} exited with ${code}`))));
  });
}

if (values.role === 'write') await write(values.path!);
else if (values.role === 'reopen') await reopen(values.path!);
else {
  if (!Number.isFinite(thresholdBytes)) throw new Error('--threshold takes a size in MB, such as 64MB');
  const dir = mkdtempSync(join(tmpdir(), 'floe-wal-'));
  try {
    const w = await child('write', join(dir, 'j.duckdb'));
    const r = await child('reopen', join(dir, 'j.duckdb'));
    console.log(
      `checkpoint_threshold ${threshold}: ${w.rows} rows, ${(w.walBytes! / 2 ** 20).toFixed(1)} MB of log; reopening replayed it in ${r.ms} ms (${r.rows} rows, peak RSS ${r.rssMb} MB)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
