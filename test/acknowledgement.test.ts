/**
 * Invariant 1: the slot's confirmed_flush_lsn never passes what the
 * destination holds, and an idle publication on a busy database never pins WAL.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import type { Change } from '../src/model.js';
import { parseLsn } from '../src/postgres/lsn.js';

/** A DuckDB destination whose journal writes wait for a gate, to stand for a slow or stalled warehouse. */
class StallingDestination extends DuckDbDestination {
  stalled = false;
  waiting = 0;
  #release: (() => void) | undefined;
  #gate: Promise<void> = Promise.resolve();
  stall(): void {
    this.stalled = true;
    this.#gate = new Promise((r) => (this.#release = r));
  }
  resume(): void {
    this.stalled = false;
    this.#release?.();
  }
  override async writeChanges(changes: readonly Change[]): Promise<void> {
    if (this.stalled) {
      this.waiting++;
      await this.#gate;
    }
    return super.writeChanges(changes);
  }
}

describe.each(testClusters('every'))('acknowledgement on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createTestDatabase(cluster);
  });
  afterEach(async () => {
    await db.drop();
  });

  const confirmed = async (slot: string) => {
    const [r] = await db.sql<{ lsn: string }>(`SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`, [
      slot,
    ]);
    return parseLsn(r!.lsn);
  };
  const currentLsn = async () => parseLsn((await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`))[0]!.lsn);

  it('never confirms past the durable position while the destination stalls', async () => {
    await db.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t`);
    const dest = new StallingDestination({ path: ':memory:' });
    let acks = 0;
    let streaming = false;
    // A short wal_sender_timeout: a pipeline that stopped answering while it applies backpressure
    // would be disconnected within seconds.
    const url = `${db.url}?options=${encodeURIComponent('-c wal_sender_timeout=2s')}`;
    const p = startPipeline({
      source: { url },
      publication: 'p',
      slotName: 's_stall',
      destination: dest,
      batchMaxBytes: 2000,
      events: { acknowledged: () => acks++, phase: (ph) => void (ph === 'streaming' && (streaming = true)) },
    });
    try {
      // Streamed, so journaled: a row the snapshot read goes straight into the target.
      await waitFor('streaming', () => streaming);
      await db.sql(`INSERT INTO t VALUES (1, 'before')`);
      await waitFor('first row durable', async () => (await dest.query(`SELECT count(*) FROM _floe_journal."public.t"`))[0]![0] === 1n);
      dest.stall();
      const before = await currentLsn();
      for (let i = 2; i <= 200; i++) await db.sql(`INSERT INTO t VALUES ($1, 'stalled')`, [i]);
      await waitFor('a write is waiting on the stalled destination', () => dest.waiting > 0);
      const [{ active_pid: pid }] = (await db.sql(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_stall'`)) as [
        { active_pid: number },
      ];
      // Status updates pass for more than 3 x wal_sender_timeout while the stream is not read;
      // none may confirm the stalled changes.
      const acksAtStall = acks;
      const stalledAt = Date.now();
      await waitFor('status updates while stalled', () => acks >= acksAtStall + 10 && Date.now() - stalledAt > 6500, 30_000);
      expect(await confirmed('s_stall')).toBeLessThanOrEqual(before);
      // The same walsender is still connected: the keepalive deadline was met while not reading.
      const [slot] = await db.sql<{ active_pid: number }>(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_stall'`);
      expect(slot!.active_pid).toBe(pid);
      dest.resume();
      const after = await currentLsn();
      await waitFor('confirmed advances once durable', async () => (await confirmed('s_stall')) >= after);
      expect((await dest.query(`SELECT count(*) FROM _floe_journal."public.t"`))[0]![0]).toBe(200n);
    } finally {
      dest.resume();
      await p.stop();
      await dest.close();
      await db.dropSlot('s_stall');
    }
  });

  it('keeps confirming an idle publication while other tables are busy', async () => {
    await db.sql(
      `CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id serial PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE quiet`,
    );
    // The slot is also active while its snapshot is exported (confirmed_flush_lsn still null then):
    // wait for the pipeline's own streaming phase instead.
    let streaming = false;
    const p = startPipeline({
      source: { url: db.url },
      publication: 'p',
      slotName: 's_idle',
      events: { phase: (ph) => void (ph === 'streaming' && (streaming = true)) },
    });
    try {
      await waitFor('streaming', () => streaming);
      const start = await confirmed('s_idle');
      for (let round = 0; round < 3; round++) {
        await db.sql(`INSERT INTO busy (v) SELECT repeat('x', 200) FROM generate_series(1, 5000)`);
        const target = await currentLsn();
        await waitFor(`confirmed_flush passes busy WAL (round ${round})`, async () => (await confirmed('s_idle')) >= target);
      }
      expect(await confirmed('s_idle')).toBeGreaterThan(start);
    } finally {
      await p.stop();
      await (p.destination as DuckDbDestination).close();
      await db.dropSlot('s_idle');
    }
  });
});
