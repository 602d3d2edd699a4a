/**
 * Redis restarted while changes flow, with the Redis state store: the pipeline retries through the
 * outage, nothing is lost (target equals source), and the slot's acknowledged position never moves
 * backwards nor passes what the store recorded (invariants 1 and 3).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startRedis, type RunningRedis } from './harness/redis.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { RedisStateStore } from '../src/store/redis-store.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { parseLsn } from '../src/postgres/lsn.js';
import type { FloeError } from '../src/errors.js';

const cluster = testClusters()[0]!;

describe(`Redis restarted mid-stream (PostgreSQL ${cluster.major})`, () => {
  let db: TestDatabase;
  // A private redis-server: restarting the shared one would disturb other test files.
  let redis: RunningRedis;
  beforeAll(async () => {
    [db, redis] = await Promise.all([createTestDatabase(cluster, 'rrestart'), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all([db?.drop(), redis?.stop()]);
  });

  it('loses nothing, and acknowledges only what the store recorded, never backwards', async () => {
    await db.sql(`CREATE TABLE t (id serial PRIMARY KEY, v int NOT NULL);
      INSERT INTO t (v) SELECT g FROM generate_series(1, 200) g;
      CREATE PUBLICATION pub FOR TABLE t;`);
    const store = new RedisStateStore({ url: redis.url });
    // A second client reads what the store recorded, as an operator would.
    const reader = new RedisStateStore({ url: redis.url });
    const retries: FloeError[] = [];
    const p = startPipeline({
      source: { url: db.url },
      publication: 'pub',
      slotName: 'restart_slot',
      store,
      statusIntervalMs: 100,
      events: { retrying: (e) => retries.push(e) },
    });
    const dest = p.destination as DuckDbDestination;
    const count = async (): Promise<number> => Number((await dest.query(`SELECT count(*) FROM public.t`))[0]![0]);

    // Sample the slot's confirmed position, then the store's: the store must always be at or ahead.
    const samples: { confirmed: bigint; recorded: bigint }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const [row] = await db.sql<{ lsn: string | null }>(
          `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'restart_slot'`,
        );
        const recorded = await reader.getProgress('restart_slot').catch(() => undefined);
        // Until the store records the new slot's first position (ack 0) the slot sits at the position
        // PostgreSQL gave it at creation, which floe never acknowledged.
        if (row?.lsn && recorded && recorded.ackLsn > 0n) samples.push({ confirmed: parseLsn(row.lsn), recorded: recorded.ackLsn });
        await sleep(20);
      }
    })();

    // Each source transaction's commit record lies between `before` (read after its changes) and `after`.
    const commits: { before: bigint; after: bigint }[] = [];
    const wal = async (c: pg.Client): Promise<bigint> =>
      parseLsn((await c.query<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)).rows[0]!.lsn);
    let writing = true;
    let written = 0;
    const writerClient = new pg.Client({ connectionString: db.url });
    await writerClient.connect();
    const writer = (async () => {
      while (writing) {
        await writerClient.query(`BEGIN; INSERT INTO t (v) VALUES (${written}); UPDATE t SET v = v + 1 WHERE id = ${1 + (written % 200)}`);
        const before = await wal(writerClient);
        await writerClient.query('COMMIT');
        commits.push({ before, after: await wal(writerClient) });
        written++;
        await sleep(5); // pace the workload; the machine is shared
      }
    })();

    try {
      await waitFor('snapshot and first changes in the target', async () => (await count()) > 220);
      const retriesBefore = retries.length;
      await redis.stopServer();
      // The pipeline runs into the outage on its next progress write and backs off.
      await waitFor('the pipeline to fail a store write and retry', () => retries.length > retriesBefore);
      const confirmedAtOutage = samples.at(-1)!.confirmed;
      const writtenAtOutage = written;
      await waitFor('more changes during the outage', () => written > writtenAtOutage + 20);
      await redis.startServer();
      await waitFor('progress beyond the outage', () => samples.some((s) => s.confirmed > confirmedAtOutage), 60_000);
      writing = false;
      await writer;

      const source = async (): Promise<string> =>
        JSON.stringify((await db.sql<{ id: number; v: number }>(`SELECT id, v FROM t ORDER BY id`)).map((r) => [r.id, r.v]));
      const target = async (): Promise<string> =>
        JSON.stringify((await dest.query(`SELECT id, v FROM public.t ORDER BY id`)).map((r) => [Number(r[0]), Number(r[1])]));
      const expected = await source();
      await waitFor('target equals source', async () => (await target()) === expected, 60_000);

      expect(retries.some((e) => e.kind === 'state' && e.retry === 'timed')).toBe(true);
      expect(samples.length).toBeGreaterThan(10);
      for (let i = 0; i < samples.length; i++) {
        const s = samples[i]!;
        if (i > 0) expect(s.confirmed, `sample ${i}: acknowledgement went backwards`).toBeGreaterThanOrEqual(samples[i - 1]!.confirmed);
        // The slot may run ahead of the store only over WAL without published changes (an idle
        // publication's keepalive position, invariant 1): no source commit lies between the two.
        if (s.confirmed > s.recorded) {
          const skipped = commits.filter((c) => c.before >= s.recorded && c.after <= s.confirmed);
          expect(skipped, `sample ${i}: acknowledged commits the store never recorded`).toEqual([]);
        }
      }
    } finally {
      writing = false;
      await writer.catch(() => undefined);
      await writerClient.end();
      sampling = false;
      await sampler.catch(() => undefined);
      await p.stop().catch(() => undefined);
      await Promise.all([store.close(), reader.close()]);
      await db.dropSlot('restart_slot');
    }
  });
});
