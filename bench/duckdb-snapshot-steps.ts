/**
 * What each DuckDB step of a snapshot costs, without PostgreSQL or floe around it: a million bench-like
 * COPY rows (10 columns, a quarter with a NULL) are staged as one string a row, moved into a
 * journal-shaped table split at their tabs (in ranges of 62,500 rows, a transaction each, as floe's
 * ranges are), copied again plainly for comparison, and cast into a typed target with and without the
 * latest-row-per-key window. DuckDB runs as floe runs it (memory_limit 128MB, one thread) unless told otherwise.
 * Usage: `npx tsx bench/duckdb-snapshot-steps.ts [--rows 1000000] [--threads 1] [--memory-limit 128MB]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDBInstance } from '@duckdb/node-api';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    threads: { type: 'string', default: '1' },
    'memory-limit': { type: 'string', default: '128MB' },
  },
});
const rows = Number(values.rows);
const dir = mkdtempSync(join(tmpdir(), 'floe-snapshot-steps-'));
const cols = ['id', 'customer_id', 'status', 'amount', 'quantity', 'discount', 'is_gift', 'email', 'note', 'created_at'];
const journalDefs = `_floe_seq BIGINT NOT NULL, _floe_lsn UBIGINT NOT NULL, _floe_ordinal BIGINT NOT NULL, _floe_op VARCHAR NOT NULL,
  _floe_commit_time TIMESTAMPTZ, _floe_unchanged VARCHAR[], ${cols.map((c) => `${c} VARCHAR`).join(', ')}`;
const targetDefs = `id BIGINT, customer_id INTEGER, status VARCHAR, amount DECIMAL(12,2), quantity INTEGER, discount DOUBLE,
  is_gift BOOLEAN, email VARCHAR, note VARCHAR, created_at TIMESTAMPTZ, _floe_key VARCHAR, _floe_lsn UBIGINT, _floe_ordinal BIGINT, _floe_synced_at TIMESTAMPTZ`;
const casts = `id::BIGINT, customer_id::INTEGER, status, amount::DECIMAL(12,2), quantity::INTEGER, discount::DOUBLE, is_gift::BOOLEAN,
  email, note, created_at::TIMESTAMPTZ, id, _floe_lsn, _floe_ordinal, now()`;
const line = (g: number) =>
  [
    g,
    (g * 7919) % 100000,
    ['pending', 'paid', 'shipped', 'delivered', 'cancelled'][g % 5],
    ((g % 100000) / 100 + 0.99).toFixed(2),
    1 + (g % 9),
  ]
    .concat([
      g % 4 === 0 ? '\\N' : String((g % 30) / 100),
      g % 2 ? 't' : 'f',
      `user${g}@example.com`,
      `note for order ${g}`,
      '2024-01-01 12:34:56.123456+00',
    ])
    .join('\t');

async function timed(what: string, step: () => Promise<void>): Promise<void> {
  const t = performance.now();
  await step();
  console.log(`${what.padEnd(46)} ${((performance.now() - t) / 1000).toFixed(2)} s`);
}

try {
  const db = await DuckDBInstance.create(join(dir, 'steps.duckdb'), {
    memory_limit: values['memory-limit']!,
    threads: values.threads!,
    preserve_insertion_order: 'false',
    checkpoint_threshold: '64MB',
  });
  const c = await db.connect();
  await c.run(`CREATE TABLE journal (${journalDefs}); CREATE TABLE copied (${journalDefs});
    CREATE TABLE target (${targetDefs}); CREATE TABLE target_window (${targetDefs}); CREATE TEMP TABLE stage (seq BIGINT, line VARCHAR)`);
  console.log(`${rows.toLocaleString('en')} rows, DuckDB threads ${values.threads}, memory_limit ${values['memory-limit']}`);
  await timed('stage one string a row (appender)', async () => {
    const a = await c.createAppender('stage', 'main', 'temp');
    for (let g = 1; g <= rows; g++) {
      a.appendBigInt(BigInt(g));
      a.appendVarchar(line(g));
      a.endRow();
    }
    a.closeSync();
  });
  const per = Math.ceil(rows / 16);
  await timed('split into the journal (16 transactions)', async () => {
    for (let from = 0; from < rows; from += per) {
      await c.run(`INSERT INTO journal SELECT seq, 256, -1, 'r', NULL, NULL, ${cols.map((_, k) => `nullif(f[${k + 1}], '\\N')`).join(', ')}
        FROM (SELECT seq, string_split(line, chr(9)) AS f FROM stage WHERE seq > ${from} AND seq <= ${from + per})`);
    }
  });
  await timed('checkpoint', () => c.run('CHECKPOINT').then(() => undefined));
  await timed('copy the journal plainly (one statement)', () => c.run('INSERT INTO copied SELECT * FROM journal').then(() => undefined));
  await timed('cast into the target', () => c.run(`INSERT INTO target SELECT ${casts} FROM journal`).then(() => undefined));
  await timed('cast into the target, latest row per key', () =>
    c
      .run(
        `INSERT INTO target_window SELECT ${casts} FROM journal QUALIFY row_number() OVER (PARTITION BY id ORDER BY _floe_lsn DESC, _floe_ordinal DESC, _floe_seq DESC) = 1`,
      )
      .then(() => undefined),
  );
  c.closeSync();
  db.closeSync();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
