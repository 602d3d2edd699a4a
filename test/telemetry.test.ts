/**
 * `floe replicate` serves /metrics, /healthz and /readyz: the named metrics exist with sensible values
 * while it replicates, and /readyz turns 503 when the source goes away and 200 when it returns.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startFloe } from './helpers/cli.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from '../src/postgres/local-cluster.js';
import { createServer, connect, type Server, type Socket } from 'node:net';

/** The value of one sample of the Prometheus text, or undefined. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

const cluster = testClusters()[0]!;

/**
 * A TCP proxy in front of the source that the test can take down (close the port, cut every
 * connection) and bring back on the same port: the source "goes away" the way a network outage or a
 * restarting server looks to floe.
 */
async function sourceProxy(target: number): Promise<{ port: number; down(): Promise<void>; up(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer((client) => {
        const upstream = connect(target, '127.0.0.1');
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  const down = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server!.close(() => resolve());
    });
  await up();
  return { port, up, down };
}

describe('telemetry endpoints of floe replicate', () => {
  let db: TestDatabase;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    await db.sql(
      `CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m SELECT g, 'x' FROM generate_series(1, 300) g; CREATE PUBLICATION mp FOR TABLE m`,
    );
  });
  afterAll(async () => {
    await db.dropSlot('mslot');
    await db.drop();
    dir.remove();
  });

  it('exposes metrics and readiness that follow the source', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const proxy = await sourceProxy(cluster.port);
    const sourceUrl = db.url.replace(`:${cluster.port}/`, `:${proxy.port}/`);
    const p = startFloe([
      'replicate',
      '--source',
      sourceUrl,
      '--state',
      db.url,
      '--publication',
      'mp',
      '--slot',
      'mslot',
      '--destination',
      `duckdb:${join(dir.path, 'm.duckdb')}`,
      '--metrics-port',
      String(port),
      // The operator asks for the checks' error texts (without it /readyz names only the failing checks).
      '--readyz-details',
      '--batch-max-ms',
      '50',
      '--status-interval-ms',
      '200',
      '--monitor-interval',
      '0.2',
      '--heartbeat-interval',
      '0.2',
    ]);
    try {
      await waitFor('healthz', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.status === 200);
      await waitFor('ready', async () => (await fetch(`${base}/readyz`)).status === 200);
      await db.sql(
        `INSERT INTO m SELECT g, 'y' FROM generate_series(1000, 1199) g; UPDATE m SET v = 'z' WHERE id <= 10; DELETE FROM m WHERE id = 300`,
      );
      const text = await waitFor('stream counted', async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        return sample(t, 'floe_rows_replicated_total', 'op="d"') === 1 ? t : undefined;
      });
      const l = 'pipeline="mslot"';
      expect(sample(text, 'pipeline_active', l)).toBe(1);
      expect(sample(text, 'floe_rows_replicated_total', 'op="r"')).toBe(300);
      expect(sample(text, 'floe_rows_replicated_total', 'op="i"')).toBe(200);
      expect(sample(text, 'floe_rows_replicated_total', 'op="u"')).toBe(10);
      expect(sample(text, 'floe_snapshot_rows_total', l)).toBe(300);
      // 511 rows made durable within the last 10 s window.
      expect(sample(text, 'etl_throughput_rows', l)).toBeGreaterThan(0);
      expect(sample(text, 'floe_durable_lsn', l)).toBeGreaterThan(0);
      expect(sample(text, 'floe_replication_lag_bytes', l)).toBeGreaterThanOrEqual(0);
      expect(text).toMatch(/floe_destination_flush_seconds_count\{pipeline="mslot"\} [1-9]/);
      // Progress writes go through the timed store: their latency is visible.
      expect(text).toMatch(/floe_state_store_operation_seconds_count\{kind="postgres",op="recordDurable"\} [1-9]/);
      expect(text).toMatch(/floe_snapshot_tables\{pipeline="mslot",state="done"\} [1-9]/);
      expect(text).toContain('floe_process_resident_memory_bytes');
      expect(text).toContain('floe_nodejs_eventloop_lag_seconds');

      // Source and slot health from the WAL monitor, and the heartbeat, compared with the server.
      const src = `source="127.0.0.1:${proxy.port}/${db.name}"`;
      const health = await waitFor('monitor and heartbeat figures', async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        return sample(t, 'floe_heartbeats_total', `${src},outcome="ok"`) && sample(t, 'floe_replication_lag_seconds', l) !== undefined
          ? t
          : undefined;
      });
      const [server] = await db.sql<{ retained: string; wal: string }>(
        `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained,
                (SELECT sum(size) FROM pg_ls_waldir())::bigint::text AS wal
           FROM pg_replication_slots WHERE slot_name = 'mslot'`,
      );
      expect(sample(health, 'floe_source_up', src)).toBe(1);
      const walMb = sample(health, 'pg_source_wal_size_mb', src)!;
      expect(walMb).toBeGreaterThan(0);
      expect(walMb).toBeLessThanOrEqual(Number(server!.wal) / 1024 / 1024 + 64); // one check ago; segments come and go
      const retained = sample(health, 'floe_slot_retained_wal_bytes', `${src},slot="mslot"`)!;
      expect(retained).toBeGreaterThanOrEqual(0);
      expect(retained).toBeLessThan(64 * 1024 * 1024);
      expect(sample(health, 'floe_slot_wal_status', `${src},slot="mslot",status="reserved"`)).toBe(1);
      expect(sample(health, 'floe_slot_wal_status', `${src},slot="mslot",status="lost"`)).toBe(0);
      expect(sample(health, 'floe_slot_active', `${src},slot="mslot"`)).toBe(1);
      expect(sample(health, 'floe_slot_confirmed_flush_lag_bytes', `${src},slot="mslot"`)).toBeGreaterThanOrEqual(0);
      expect(sample(health, 'floe_replication_lag_seconds', l)).toBeGreaterThanOrEqual(0);
      expect(sample(health, 'floe_replication_lag_seconds', l)).toBeLessThan(60);
      expect(sample(health, 'floe_slot_stalled', `${src},slot="mslot"`)).toBe(0);
      expect(health).toMatch(/floe_slot_seconds_until_danger\{[^}]*slot="mslot"\} (\+Inf|\d)/);
      expect(health).toMatch(/floe_snapshot_ranges\{pipeline="mslot",state="done"\} [1-9]/);
      expect(health).toMatch(/floe_monitor_connections [01]/);
      expect(Number(server!.retained)).toBeLessThan(64 * 1024 * 1024);
      const ready = (await (await fetch(`${base}/readyz`)).json()) as { checks: Record<string, string> };
      expect(ready.checks).toEqual({ pipeline: 'ok', source: 'ok', 'state store': 'ok' });

      // The source goes away (its port closes, every connection is cut), then returns.
      await proxy.down();
      const down = await waitFor('not ready', async () => {
        const r = await fetch(`${base}/readyz`);
        const body = (await r.json()) as { reason: string; checks: Record<string, string> };
        return r.status === 503 && body.checks.source !== 'ok' && body.checks.pipeline !== 'ok' ? body : undefined;
      });
      expect(down.reason).toMatch(/pipeline: pipeline is (retrying|connecting)/);
      expect(down.checks.source).toMatch(/ECONNREFUSED|connect|terminated/i);
      expect(down.checks['state store']).toBe('ok'); // the state store is not behind the proxy
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      const outage = await waitFor('source down in metrics', async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        return sample(t, 'floe_source_up', src) === 0 ? t : undefined;
      });
      expect(outage).toMatch(/floe_monitor_checks_total\{outcome="error"\} [1-9]/);
      await proxy.up();
      await waitFor('ready again', async () => (await fetch(`${base}/readyz`)).status === 200, 60_000);
    } finally {
      p.kill('SIGTERM');
      const exit = await p.exited;
      await proxy.down();
      expect(exit.code, exit.stderr).toBe(0);
    }
  });
});
