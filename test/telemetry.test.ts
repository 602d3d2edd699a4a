/**
 * `floe replicate` serves /metrics, /healthz and /readyz: the named metrics exist with sensible values
 * while it replicates, and /readyz turns 503 when the source goes away and 200 when it returns.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { testClusters, createTestDatabase, withAdmin, type TestDatabase } from './harness/database.js';
import { startFloe } from './helpers/cli.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from '../src/postgres/local-cluster.js';

/** The value of one sample of the Prometheus text, or undefined. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

const cluster = testClusters()[0]!;

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
    await withAdmin(cluster, (c) => c.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS true`));
    await db.dropSlot('mslot');
    await db.drop();
    dir.remove();
  });

  it('exposes metrics and readiness that follow the source', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const p = startFloe([
      'replicate',
      '--source',
      db.url,
      '--publication',
      'mp',
      '--slot',
      'mslot',
      '--destination',
      `duckdb:${join(dir.path, 'm.duckdb')}`,
      '--metrics-port',
      String(port),
      '--batch-max-ms',
      '50',
      '--status-interval-ms',
      '200',
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
      expect(text).toContain('floe_process_resident_memory_bytes');
      expect(text).toContain('floe_nodejs_eventloop_lag_seconds');

      // The source goes away: no new connections, floe's are cut. Then it returns.
      await withAdmin(cluster, async (c) => {
        await c.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS false`);
        await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'floe%'`, [
          db.name,
        ]);
      });
      const down = await waitFor('not ready', async () => {
        const r = await fetch(`${base}/readyz`);
        return r.status === 503 ? ((await r.json()) as { reason: string }) : undefined;
      });
      expect(down.reason).toMatch(/pipeline is (retrying|connecting)/);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      await withAdmin(cluster, (c) => c.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS true`));
      await waitFor('ready again', async () => (await fetch(`${base}/readyz`)).status === 200, 60_000);
    } finally {
      p.kill('SIGTERM');
      const exit = await p.exited;
      expect(exit.code, exit.stderr).toBe(0);
    }
  });
});
