/**
 * kill -9 at the risky steps (mid-snapshot, mid-transaction, between the
 * destination write and the acknowledgement), then a normal restart: the
 * targets equal the source, no key appears twice, and the journal holds every
 * streamed change exactly once.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { startFloe } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { parseLsn } from '../src/postgres/lsn.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';

async function duck<T = unknown[]>(path: string, sql: string): Promise<T[]> {
  const inst = await DuckDBInstance.create(path);
  const c = await inst.connect();
  try {
    return (await c.runAndReadAll(sql)).getRowsJS() as T[];
  } finally {
    c.closeSync();
    inst.closeSync();
  }
}

describe.each(testClusters('every'))('crash recovery on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let dir: ReturnType<typeof tempDir>;
  let file: string;
  beforeEach(async () => {
    db = await createTestDatabase(cluster);
    dir = tempDir();
    file = join(dir.path, 'w.duckdb');
    await db.sql(`CREATE TABLE acct (id int PRIMARY KEY, owner text, balance bigint, note text);
      CREATE TABLE a_log (at int, what text); ALTER TABLE a_log REPLICA IDENTITY FULL;
      CREATE PUBLICATION pub FOR TABLE acct, a_log;`);
  });
  afterEach(async () => {
    await db.dropSlot('crashslot');
    await db.drop();
    dir.remove();
  });

  const args = () => [
    'replicate',
    '--metrics-port',
    '0',
    '--source',
    db.url,
    '--publication',
    'pub',
    '--slot',
    'crashslot',
    '--destination',
    `duckdb:${file}`,
    '--status-interval-ms',
    '200',
    '--batch-max-ms',
    '50',
    '--merge-interval-ms',
    '300',
    '--snapshot-range-pages',
    '1',
    '--snapshot-parallelism',
    '2',
  ];

  /** Runs floe normally until the slot has confirmed everything written so far, then stops it gracefully. */
  async function catchUpAndStop(): Promise<void> {
    const [cur] = await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`);
    const target = parseLsn(cur!.lsn);
    const p = startFloe(args());
    // The slot can be active while the snapshot runs (it is held with the exported snapshot); wait for
    // the pipeline itself to say it streams.
    await waitFor('streaming', () => p.stderr().includes('"phase":"streaming"'), 60_000);
    await waitFor(
      'slot caught up',
      async () => {
        const r = await db.sql<{ lsn: string | null }>(
          `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'crashslot'`,
        );
        return r[0]?.lsn ? parseLsn(r[0].lsn) >= target : false;
      },
      60_000,
    );
    p.kill('SIGTERM');
    const exit = await p.exited;
    expect({ code: exit.code, signal: exit.signal }, exit.stderr).toEqual({ code: 0, signal: null });
  }

  async function expectTargetEqualsSource(): Promise<void> {
    // Every table, keyless history included, through the same check `floe demo --verify` uses.
    const dest = new DuckDbDestination({ path: file });
    await dest.open('verify', 'verify');
    try {
      const report = await verifyDuckDb({ url: db.url }, 'pub', dest);
      expect(report.tables.map((t) => [t.table, t.skipped ?? 'compared'])).toEqual([
        ['public.a_log', 'compared'],
        ['public.acct', 'compared'],
      ]);
      expect(report.mismatches, JSON.stringify(report)).toBe(0);
    } finally {
      await dest.close();
    }
    const src = await db.sql<{ id: number; owner: string; balance: string; note: string | null }>(
      `SELECT id, owner, balance, note FROM acct ORDER BY id`,
    );
    const dst = await duck<[number, string, bigint, string | null]>(file, `SELECT id, owner, balance, note FROM public.acct ORDER BY id`);
    expect(dst.length).toBe(src.length);
    expect(dst.map((r) => [r[0], r[1], String(r[2]), r[3]])).toEqual(src.map((r) => [r.id, r.owner, r.balance, r.note]));
    const dupKeys = await duck(file, `SELECT id FROM public.acct GROUP BY id HAVING count(*) > 1`);
    expect(dupKeys).toEqual([]);
    const dupPositions = await duck(
      file,
      `SELECT _floe_lsn, _floe_ordinal FROM _floe_journal."public.acct" WHERE _floe_op <> 'r' GROUP BY ALL HAVING count(*) > 1`,
    );
    expect(dupPositions).toEqual([]);
    // A resumed snapshot may copy a row again under its new snapshot (an updated row moved to a later
    // page), but one snapshot never copies a row twice.
    const dupSnapshotRows = await duck(
      file,
      `SELECT id, _floe_lsn FROM _floe_journal."public.acct" WHERE _floe_op = 'r' GROUP BY ALL HAVING count(*) > 1`,
    );
    expect(dupSnapshotRows).toEqual([]);
  }

  it('mid-snapshot: a range written but not recorded is not copied twice; the rest resumes', async () => {
    await db.sql(`INSERT INTO acct SELECT g, 'owner ' || g, g * 100, repeat('n', g % 50) FROM generate_series(1, 6000) g;
      INSERT INTO a_log SELECT g % 500, 'event ' || (g % 500) FROM generate_series(1, 6000) g`);
    const crashed = await startFloe(args(), { FLOE_TEST_CRASH_AT: 'before-record-range:8' }).exited;
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    // Changes while floe is down, some to rows in ranges not yet copied.
    await db.sql(`UPDATE acct SET balance = -1 WHERE id % 97 = 0; DELETE FROM acct WHERE id % 101 = 0; INSERT INTO acct VALUES (100000, 'late', 1, NULL);
      UPDATE a_log SET what = 'changed' WHERE at % 50 = 0; DELETE FROM a_log WHERE at % 77 = 0; INSERT INTO a_log VALUES (9999, 'late')`);
    await catchUpAndStop();
    await expectTargetEqualsSource();
  });

  it('right after creating the slot: the next start recreates it and snapshots', async () => {
    await db.sql(`INSERT INTO acct SELECT g, 'owner ' || g, g, NULL FROM generate_series(1, 500) g`);
    const crashed = await startFloe(args(), { FLOE_TEST_CRASH_AT: 'after-slot-created' }).exited;
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    expect(await db.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'crashslot'`)).toHaveLength(1);
    await db.sql(`UPDATE acct SET balance = 7 WHERE id <= 20; DELETE FROM acct WHERE id = 21`);
    await catchUpAndStop();
    await expectTargetEqualsSource();
  });

  it('mid-transaction: a large transaction cut across batches is replayed without duplicates', async () => {
    await db.sql(`INSERT INTO acct SELECT g, 'owner ' || g, g, NULL FROM generate_series(1, 100) g`);
    const p = startFloe([...args(), '--batch-max-bytes', '20000'], { FLOE_TEST_CRASH_AT: 'mid-transaction-write:3' });
    await waitFor('streaming', () => p.stderr().includes('"phase":"streaming"'));
    await db.sql(
      `BEGIN; INSERT INTO acct SELECT g, 'bulk ' || g, g, NULL FROM generate_series(1000, 9000) g; UPDATE acct SET balance = balance + 1 WHERE id <= 50; DELETE FROM acct WHERE id BETWEEN 60 AND 70; COMMIT`,
    );
    const crashed = await p.exited;
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    await db.sql(`UPDATE acct SET owner = 'after' WHERE id = 1000`);
    await catchUpAndStop();
    await expectTargetEqualsSource();
  });

  it('between destination write and acknowledgement: replayed changes are recognised', async () => {
    await db.sql(`INSERT INTO acct SELECT g, 'owner ' || g, g, NULL FROM generate_series(1, 100) g`);
    const p = startFloe(args(), { FLOE_TEST_CRASH_AT: 'after-destination-write:1' });
    await waitFor('streaming', () => p.stderr().includes('"phase":"streaming"'));
    for (let i = 0; i < 20; i++) await db.sql(`UPDATE acct SET balance = balance + $1 WHERE id % 10 = $2`, [i, i % 10]);
    await db.sql(`INSERT INTO acct VALUES (500, 'x', 5, NULL); DELETE FROM acct WHERE id = 3`);
    const crashed = await p.exited;
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
    // The slot has not been told about anything the crash interrupted.
    await catchUpAndStop();
    await expectTargetEqualsSource();
  });
});
