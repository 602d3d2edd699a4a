/**
 * The pipeline survives what production throws at it: a dropped replication
 * connection (reconnect with backoff, nothing lost or doubled), and slot
 * creation blocked by a long transaction (the blockers are reported).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { Writable } from 'node:stream';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { createLogger } from '../src/telemetry/logger.js';

describe.each(testClusters())('resilience on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createTestDatabase(cluster);
  });
  afterEach(async () => {
    await db.drop();
  });

  it('reconnects after the walsender is terminated and loses nothing', async () => {
    await db.sql(`CREATE TABLE r (id int PRIMARY KEY, v int); CREATE PUBLICATION rp FOR TABLE r`);
    const dest = new DuckDbDestination({ path: ':memory:' });
    let retries = 0;
    const p = startPipeline({
      source: { url: db.url },
      publication: 'rp',
      slotName: 'r_slot',
      destination: dest,
      events: { retrying: () => retries++ },
    });
    try {
      const walsender = async () =>
        (await db.sql<{ pid: number }>(`SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = 'r_slot' AND active`))[0]?.pid;
      for (let round = 0; round < 3; round++) {
        const pid = await waitFor('streaming', walsender);
        await db.sql(`INSERT INTO r SELECT g, ${round} FROM generate_series(${round * 1000}, ${round * 1000 + 499}) g`);
        await db.sql(`SELECT pg_terminate_backend($1)`, [pid]);
        await db.sql(`INSERT INTO r SELECT g, ${round} FROM generate_series(${round * 1000 + 500}, ${round * 1000 + 999}) g`);
        await waitFor('a new walsender', async () => {
          const next = await walsender();
          return next !== undefined && next !== pid;
        });
      }
      await db.sql(`UPDATE r SET v = v + 10 WHERE id % 7 = 0`);
      await waitFor('all rows', async () => {
        const [row] = await dest.query(`SELECT count(*), sum(v) FROM public.r`);
        const [src] = await db.sql<{ n: string; s: string }>(`SELECT count(*) AS n, sum(v) AS s FROM r`);
        return row![0] === BigInt(src!.n) && String(row![1]) === src!.s;
      });
      expect(retries).toBeGreaterThanOrEqual(3);
      const dup = await dest.query(
        `SELECT _floe_lsn, _floe_ordinal FROM _floe_journal."public.r" WHERE _floe_op <> 'r' GROUP BY ALL HAVING count(*) > 1`,
      );
      expect(dup).toEqual([]);
    } finally {
      await p.stop();
      await dest.close();
      await db.dropSlot('r_slot');
    }
  });

  it('recovers when the replication connection drops during the snapshot', async () => {
    await db.sql(`CREATE TABLE big (id int PRIMARY KEY, pad text); INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 20000) g;
      CREATE PUBLICATION sp FOR TABLE big`);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let ranges = 0;
    class GatedDestination extends DuckDbDestination {
      override async writeSnapshotRange(...args: Parameters<DuckDbDestination['writeSnapshotRange']>): Promise<number> {
        if (++ranges === 3) await gate;
        return super.writeSnapshotRange(...args);
      }
    }
    const dest = new GatedDestination({ path: ':memory:' });
    let retries = 0;
    const p = startPipeline({
      source: { url: db.url },
      publication: 'sp',
      slotName: 's_snap',
      destination: dest,
      snapshotRangePages: 20,
      snapshotParallelism: 1,
      events: { retrying: () => retries++ },
    });
    try {
      await waitFor('snapshot under way', () => ranges >= 3);
      // The replication connection that exported the snapshot (and will stream afterwards) drops.
      const killed = await db.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'floe-s_snap'`);
      expect(killed).toHaveLength(1);
      await db.sql(`UPDATE big SET pad = 'changed' WHERE id % 1000 = 0`);
      release();
      await waitFor('all rows after the retry', async () => {
        const [row] = await dest.query(`SELECT count(*), count(*) FILTER (WHERE pad = 'changed') FROM public.big`);
        return row![0] === 20000n && row![1] === 20n;
      });
      expect(retries).toBeGreaterThanOrEqual(1);
    } finally {
      release();
      await p.stop();
      await dest.close();
      await db.dropSlot('s_snap');
    }
  });

  it('reports the transactions that block slot creation', async () => {
    await db.sql(`CREATE TABLE b (id int PRIMARY KEY); CREATE PUBLICATION bp FOR TABLE b`);
    // A transaction holding an xid makes CREATE_REPLICATION_SLOT wait for it.
    const blocker = new pg.Client({ connectionString: db.url, application_name: 'the-blocker' });
    await blocker.connect();
    await blocker.query(`BEGIN; INSERT INTO b VALUES (1)`);
    const [{ pid: blockerPid }] = (await blocker.query(`SELECT pg_backend_pid() AS pid`)).rows as [{ pid: number }];
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const dest = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({
      source: { url: db.url },
      publication: 'bp',
      slotName: 'b_slot',
      destination: dest,
      log: createLogger({ level: 'warn', destination: sink }),
      slotWaitReportMs: 200,
    });
    try {
      const report = await waitFor('blocker reported', () => lines.find((l) => l.includes('slot creation is waiting')));
      const parsed = JSON.parse(report) as { blockers: { pid: number }[] };
      expect(parsed.blockers.map((b) => b.pid)).toContain(blockerPid);
      await blocker.query('COMMIT');
      await waitFor(
        'snapshot after the blocker ended',
        async () => (await dest.query(`SELECT count(*) FROM public.b`).catch(() => [[0n]]))[0]![0] === 1n,
      );
    } finally {
      await blocker.end();
      await p.stop();
      await dest.close();
      await db.dropSlot('b_slot');
    }
  });
});
