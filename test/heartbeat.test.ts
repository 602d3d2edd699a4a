/**
 * Heartbeat: a pipeline whose published table is idle while another database on the same cluster
 * writes a lot of WAL. With the heartbeat the slot keeps advancing: the heartbeat's own messages are
 * decoded and acknowledged, and the WAL the slot retains stays bounded (server figures from
 * pg_replication_slots). The heartbeat needs no REPLICATION attribute or superuser.
 *
 * Measured: on PostgreSQL 15 and 18 the same run *without* the heartbeat also stays bounded, because
 * floe acknowledges the keepalive's wal_end whenever nothing is in flight (invariant 1). So this test
 * asserts what the heartbeat adds on top — its transaction is decoded and acknowledged, moving
 * confirmed_flush past it — and that retention stays bounded; docs/operations.md says when the
 * heartbeat is what keeps a slot moving.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, withAdmin, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { Heartbeat } from '../src/monitor/heartbeat.js';
import { FloeMetrics } from '../src/telemetry/metrics.js';
import { silentLogger } from '../src/telemetry/logger.js';
import { parseLsn } from '../src/postgres/lsn.js';

const MIB = 1024 * 1024;

async function slotFigures(db: TestDatabase, slot: string): Promise<{ retained: number; confirmed: bigint }> {
  const [r] = await db.sql<{ retained: string; confirmed: string }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained, confirmed_flush_lsn::text AS confirmed
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return { retained: Number(r!.retained), confirmed: parseLsn(r!.confirmed) };
}

describe.each(testClusters())('heartbeat on PostgreSQL $major', (cluster) => {
  let idle: TestDatabase;
  let busy: TestDatabase;
  beforeAll(async () => {
    idle = await createTestDatabase(cluster, 'hb');
    busy = await createTestDatabase(cluster, 'busy');
    await idle.sql(
      `CREATE TABLE quiet (id int PRIMARY KEY, v text); INSERT INTO quiet VALUES (1, 'a'); CREATE PUBLICATION qp FOR TABLE quiet`,
    );
    await busy.sql(`CREATE TABLE churn (id bigserial PRIMARY KEY, v text)`);
  });
  afterAll(async () => {
    await idle.dropSlot('hb_slot');
    await idle.drop();
    await busy.drop();
  });

  it('keeps the slot of an idle publication advancing while another database writes WAL', async () => {
    const p = startPipeline({ source: { url: idle.url }, publication: 'qp', slotName: 'hb_slot', statusIntervalMs: 200 });
    const metrics = new FloeMetrics();
    // A role with no attributes at all: pg_logical_emit_message is executable by PUBLIC.
    const role = `${idle.name}_hb`;
    await withAdmin(cluster, (c) => c.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOREPLICATION`));
    const url = new URL(idle.url);
    url.username = role;
    const heartbeat = new Heartbeat({
      source: { url: url.toString() },
      sourceName: 'idle-db',
      pipeline: 'hb_slot',
      intervalMs: 100,
      log: silentLogger,
      metrics,
    });
    const stop = new AbortController();
    const beating = heartbeat.run(stop.signal);
    try {
      await waitFor(
        'streaming',
        async () => (await idle.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'hb_slot' AND active`)).length === 1,
      );
      // ~96 MiB of WAL from the busy database; the idle publication sees none of it.
      for (let i = 0; i < 12; i++) {
        await busy.sql(`INSERT INTO churn (v) SELECT repeat('x', 2000) FROM generate_series(1, 4000)`);
      }
      const lastBeat = await heartbeat.beat();
      expect(lastBeat).toBeDefined();
      // The heartbeat transaction was decoded and acknowledged: confirmed_flush passed it ...
      await waitFor('heartbeat acknowledged', async () => (await slotFigures(idle, 'hb_slot')).confirmed >= parseLsn(lastBeat!));
      // ... and the WAL the slot retains shrinks to a bound far below what was written (the restart
      // point follows at the next running-transactions record; a checkpoint writes one).
      const bounded = await waitFor(
        'retained WAL bounded',
        async () => {
          await heartbeat.beat();
          await busy.sql('CHECKPOINT');
          const f = await slotFigures(idle, 'hb_slot');
          return f.retained < 16 * MIB ? f : undefined;
        },
        60_000,
      );
      expect(bounded.retained).toBeLessThan(16 * MIB);
      expect(heartbeat.beats).toBeGreaterThan(1);
      expect(await metrics.registry.getSingleMetricAsString('floe_heartbeats_total')).toMatch(/source="idle-db",outcome="ok"\} [1-9]/);
    } finally {
      stop.abort();
      await beating;
      await p.stop();
      await withAdmin(cluster, (c) => c.query(`DROP ROLE ${role}`));
    }
  });

  it('logs a failure and keeps going when the source is unreachable', async () => {
    const heartbeat = new Heartbeat({
      source: { url: 'postgres://nobody@127.0.0.1:1/none', connectTimeoutMs: 500 },
      sourceName: 'gone',
      pipeline: 'x',
      log: silentLogger,
    });
    expect(await heartbeat.beat()).toBeUndefined();
    expect(await heartbeat.beat()).toBeUndefined();
    expect(heartbeat.beats).toBe(0);
  });
});
