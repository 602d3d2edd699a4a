/**
 * The WAL monitor on real servers: a slot nobody consumes (a paused pipeline) retains WAL; the webhook
 * receiver gets warning, danger, a repeat and resolved, with the server's figures and a valid HMAC.
 * Without pg_monitor the directory size is reported once as missing privilege and slot figures still
 * work. With many sources and a low cap, monitoring never holds more connections than the cap.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Writable } from 'node:stream';
import { testClusters, createTestDatabase, withAdmin, type TestDatabase } from './harness/database.js';
import { waitFor } from './helpers/wait.js';
import { startWebhookReceiver, type WebhookReceiver } from './helpers/webhook-receiver.js';
import pg from 'pg';
import { WalMonitor, MONITOR_APPLICATION_NAME, slotLostError } from '../src/monitor/wal-monitor.js';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { AlertManager, type Alert, type AlertSink } from '../src/monitor/alerts.js';
import { WebhookNotifier, signPayload, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../src/monitor/webhook.js';
import { FloeMetrics } from '../src/telemetry/metrics.js';
import { createLogger, silentLogger } from '../src/telemetry/logger.js';
import { SourceMonitorLease } from '../src/monitor/source-lease.js';
import { RunningSources } from '../src/monitor/running-sources.js';
import { migrate } from '../src/control/schema.js';
import { collectStatus, formatStatus } from '../src/cli/status.js';

const MIB = 1024 * 1024;
const SECRET = 'hook-secret-for-tests';

/** Writes about `mb` MiB of WAL (non-transactional logical messages: cheap, and decodable by nothing). */
async function writeWal(db: TestDatabase, mb: number): Promise<void> {
  await db.sql(`SELECT pg_logical_emit_message(false, 'floe_test_pad', repeat('x', 1048576)) FROM generate_series(1, $1)`, [mb]);
}

async function retainedNow(db: TestDatabase, slot: string): Promise<number> {
  const [r] = await db.sql<{ b: string }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS b FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return Number(r!.b);
}

/** The alerts about `slot` (the shared test clusters hold other files' slots, which the monitor watches too). */
function alertsOf(r: WebhookReceiver, slot = 'paused_slot'): Alert[] {
  return r.requests.map((q) => JSON.parse(q.body) as Alert).filter((a) => a.slot === slot);
}

describe.each(testClusters())('WAL thresholds on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let json: WebhookReceiver;
  let slack: WebhookReceiver;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    json = await startWebhookReceiver();
    slack = await startWebhookReceiver();
  });
  afterAll(async () => {
    await json.close();
    await slack.close();
    await db.dropSlot('paused_slot').catch(() => undefined);
    await db.drop();
  });

  it('sends warning, danger, repeat and resolved with the server figures and a valid signature', async () => {
    await db.sql(`SELECT pg_create_logical_replication_slot('paused_slot', 'pgoutput')`);
    const metrics = new FloeMetrics();
    const log = silentLogger;
    const jsonHook = new WebhookNotifier({ urls: [json.url], format: 'json', secret: SECRET, log, metrics, backoffMs: 20 });
    const slackHook = new WebhookNotifier({ urls: [slack.url], format: 'slack', log, metrics, backoffMs: 20 });
    const alerts = new AlertManager({
      policy: { warningMb: 16, dangerMb: 32, resolveRatio: 0.9, repeatMs: 1500, cooldownMs: 0 },
      // Only this slot's alerts: the shared cluster holds other files' slots.
      sink: { deliver: (a) => a.slot === 'paused_slot' && (jsonHook.deliver(a), slackHook.deliver(a)) },
      log,
      metrics,
    });
    const monitor = new WalMonitor({ intervalMs: 100, minIntervalPerSourceMs: 0, log, metrics, alerts, growthWindowMs: 60_000 });
    monitor.addSource({ id: 'src-1', name: 'orders-db', config: { url: db.url }, slots: ['paused_slot'] });
    const stop = new AbortController();
    const running = monitor.run(stop.signal);
    try {
      const types = () => alertsOf(json).map((a) => `${a.type}${a.repeat ? '+repeat' : ''}`);

      await writeWal(db, 20);
      const warning = await waitFor('warning', () => alertsOf(json).find((a) => a.type === 'wal_warning'));
      expect(warning.figures.retained_wal_bytes).toBeGreaterThanOrEqual(16 * MIB);
      expect(warning.figures.retained_wal_bytes).toBeLessThanOrEqual(await retainedNow(db, 'paused_slot'));
      expect(warning.figures.retained_wal_mb).toBeCloseTo(warning.figures.retained_wal_bytes! / MIB, 1);
      expect(warning).toMatchObject({
        severity: 'warning',
        repeat: false,
        resolves: null,
        source: { id: 'src-1', name: 'orders-db' },
        slot: 'paused_slot',
        thresholds: { warning_mb: 16, danger_mb: 32, resolve_ratio: 0.9 },
        figures: { active: false, safe_wal_size_bytes: null },
      });
      expect(['reserved', 'extended']).toContain(warning.figures.wal_status);
      expect(warning.figures.wal_dir_bytes).toBeGreaterThan(0); // the test user is a superuser
      expect(Date.parse(warning.timestamp)).not.toBeNaN();

      await writeWal(db, 20);
      const danger = await waitFor('danger', () => alertsOf(json).find((a) => a.type === 'wal_danger'));
      expect(danger.severity).toBe('critical');
      expect(danger.figures.retained_wal_bytes).toBeGreaterThanOrEqual(32 * MIB);
      expect(danger.figures.retained_wal_bytes).toBeLessThanOrEqual(await retainedNow(db, 'paused_slot'));
      expect(danger.figures.growth_bytes_per_second).toBeGreaterThan(0);
      const repeat = await waitFor('repeat', () => alertsOf(json).find((a) => a.type === 'wal_danger' && a.repeat));
      expect(repeat.since).toBe(danger.since);

      // The pipeline catches up: the slot moves to the current position and its restart point follows.
      await waitFor(
        'resolved',
        async () => {
          await db.sql(`CHECKPOINT`);
          await db.sql(`SELECT pg_replication_slot_advance('paused_slot', pg_current_wal_lsn())`);
          return alertsOf(json).find((a) => a.type === 'resolved');
        },
        60_000,
      );
      const resolved = alertsOf(json).find((a) => a.type === 'resolved')!;
      expect(resolved).toMatchObject({ severity: 'info', resolves: 'wal_danger', slot: 'paused_slot' });
      expect(resolved.figures.retained_wal_bytes).toBeLessThan(16 * 0.9 * MIB);
      expect(types().slice(0, 3)).toEqual(['wal_warning', 'wal_danger', 'wal_danger+repeat']);
      expect(types().filter((t) => t === 'resolved')).toHaveLength(1);

      // Every request is signed over "<timestamp>.<body>".
      for (const r of json.requests) {
        const ts = String(r.headers[TIMESTAMP_HEADER]);
        expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(120);
        expect(r.headers[SIGNATURE_HEADER]).toBe(signPayload(SECRET, ts, r.body));
        expect(r.body).not.toContain(db.url);
      }
      // The Slack form carries the same alerts, unsigned (no secret configured for it).
      await waitFor('slack got all', () => slack.requests.length >= json.requests.length);
      const first = JSON.parse(slack.requests[0]!.body) as { text: string; blocks: { type: string }[] };
      expect(first.text).toContain('paused_slot');
      expect(first.text).toContain('wal_warning');
      expect(first.blocks.map((b) => b.type)).toContain('section');
      expect(slack.requests[0]!.headers[SIGNATURE_HEADER]).toBeUndefined();

      // A delivery is counted once its answer arrived, a moment after the receiver recorded the request.
      const scraped = await waitFor('both resolved deliveries counted', async () => {
        const text = await metrics.registry.metrics();
        return /floe_alert_deliveries_total\{type="resolved",outcome="sent"\} [2-9]/.test(text) && text;
      });
      expect(scraped).toMatch(/floe_alerts_raised_total\{type="wal_danger"\} [2-9]/);
      expect(scraped).toMatch(/floe_alert_deliveries_total\{type="resolved",outcome="sent"\} [2-9]/);
      expect(scraped).toMatch(/floe_slot_retained_wal_bytes\{source="orders-db",slot="paused_slot"\} \d+/);
      expect(scraped).toMatch(/floe_slot_wal_status\{source="orders-db",slot="paused_slot",status="(reserved|extended)"\} 1/);
      expect(scraped).toMatch(/pg_source_wal_size_mb\{source="orders-db"\} \d/);
    } finally {
      stop.abort();
      await running;
      await jsonHook.close();
      await slackHook.close();
    }
  });

  it('reports a slot that confirms nothing while WAL grows as stalled, and its recovery', async () => {
    await db.sql(`SELECT pg_create_logical_replication_slot('stalled_slot', 'pgoutput')`);
    const got: Alert[] = [];
    const alerts = new AlertManager({
      policy: { warningMb: 1000, dangerMb: 2000, resolveRatio: 0.9, repeatMs: 0, cooldownMs: 0 },
      sink: { deliver: (a) => a.slot === 'stalled_slot' && got.push(a) },
      log: silentLogger,
    });
    const monitor = new WalMonitor({ minIntervalPerSourceMs: 0, stallAfterMs: 300, log: silentLogger, alerts });
    const mine = () => monitor.snapshot()[0]!.slots.find((s) => s.slot === 'stalled_slot')!;
    monitor.addSource({ id: 'src-2', name: 'stall-db', config: { url: db.url }, slots: ['stalled_slot'] });
    try {
      const stalled = await waitFor('stalled', async () => {
        await writeWal(db, 1);
        await monitor.tick();
        return got.find((a) => a.type === 'slot_stalled');
      });
      expect(stalled.figures.stalled_seconds).toBeGreaterThan(0.3);
      expect(stalled.figures.confirmed_flush_lag_bytes).toBeGreaterThan(0);
      expect(mine().stalledSeconds).toBeGreaterThan(0.3);
      await db.sql(`SELECT pg_replication_slot_advance('stalled_slot', pg_current_wal_lsn())`);
      await monitor.tick();
      expect(got.map((a) => a.type)).toEqual(['slot_stalled', 'resolved']);
      expect(got[1]!.resolves).toBe('slot_stalled');
      expect(mine().confirmedFlushLagSeconds).toBe(0);
    } finally {
      await monitor.close();
      await db.dropSlot('stalled_slot');
    }
  });

  it('without pg_monitor warns once with the GRANT and still reports the slot', async () => {
    const role = `${db.name}_mon`;
    await withAdmin(cluster, (c) => c.query(`CREATE ROLE ${role} LOGIN`));
    const lines: string[] = [];
    const log = createLogger({
      destination: new Writable({
        write(chunk, _enc, cb) {
          lines.push(String(chunk));
          cb();
        },
      }),
    });
    const monitor = new WalMonitor({ minIntervalPerSourceMs: 0, log });
    const url = new URL(db.url);
    url.username = role;
    monitor.addSource({ id: 's', name: 'plain-role', config: { url: url.toString() }, slots: ['paused_slot', 'no_such_slot'] });
    try {
      await monitor.tick();
      await monitor.tick();
      const [health] = monitor.snapshot();
      expect(health).toMatchObject({ reachable: true, walDirPrivilege: false, walDirBytes: null });
      expect(health!.slots.find((s) => s.slot === 'paused_slot')!.retainedBytes).toBeGreaterThanOrEqual(0);
      expect(health!.slots.find((s) => s.slot === 'no_such_slot')!.walStatus).toBe('missing');
      const warnings = lines.filter((l) => l.includes('pg_ls_waldir'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`GRANT pg_monitor TO ${role}`);
    } finally {
      await monitor.close();
      await withAdmin(cluster, (c) => c.query(`DROP ROLE ${role}`));
    }
  });
});

describe('monitoring many sources', () => {
  const cluster = testClusters()[0]!;
  const dbs: TestDatabase[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 4; i++) dbs.push(await createTestDatabase(cluster, 'mon'));
  });
  afterAll(async () => {
    for (const db of dbs) await db.drop();
  });

  it('never holds more monitoring connections than the cap', async () => {
    const cap = 3;
    const metrics = new FloeMetrics();
    const monitor = new WalMonitor({
      minIntervalPerSourceMs: 0,
      concurrency: 8,
      maxConnections: cap,
      idleTimeoutMs: 60_000,
      log: silentLogger,
      metrics,
    });
    for (let i = 0; i < 40; i++) {
      const db = dbs[i % dbs.length]!;
      monitor.addSource({ id: `source-${i}`, name: `source-${i}`, config: { url: db.url }, slots: [`slot_${i}`] });
    }
    const names = dbs.map((d) => d.name);
    let seen = 0;
    let samples = 0;
    let sampling = true;
    const sampler = withAdmin(cluster, async (c) => {
      while (sampling) {
        const r = await c.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND datname = ANY($2)`,
          [MONITOR_APPLICATION_NAME, names],
        );
        seen = Math.max(seen, r.rows[0]!.n);
        samples++;
      }
    });
    try {
      for (let round = 0; round < 3; round++) await monitor.tick();
    } finally {
      sampling = false;
      await sampler;
    }
    expect(samples).toBeGreaterThan(10);
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(cap);
    expect(monitor.maxOpenConnections).toBeLessThanOrEqual(cap);
    const health = monitor.snapshot();
    expect(health).toHaveLength(40);
    expect(
      health.every((h, i) => h.reachable && h.checkedAt !== null && h.slots.find((s) => s.slot === `slot_${i}`)!.walStatus === 'missing'),
    ).toBe(true);
    expect(await metrics.registry.getSingleMetricAsString('floe_monitor_checks_total')).toMatch(/outcome="ok"\} 120/);

    for (let i = 1; i < 40; i++) monitor.removeSource(`source-${i}`);
    await monitor.tick();
    expect(monitor.snapshot().map((h) => h.id)).toEqual(['source-0']);
    const slots = await metrics.registry.getSingleMetricAsString('floe_slot_active');
    expect(slots).toContain('source="source-0"');
    expect(slots).not.toContain('source="source-1"');
    await monitor.close();
    expect(await metrics.registry.getSingleMetricAsString('floe_monitor_connections')).toMatch(/floe_monitor_connections 0/);
  });
});

describe('a slot the server invalidates', () => {
  // Its own small cluster: max_slot_wal_keep_size is server-wide, and the shared clusters hold other files' slots.
  let cluster: RunningCluster;
  beforeAll(async () => {
    cluster = await startCluster({ major: testClusters()[0]!.major, config: { max_slot_wal_keep_size: "'32MB'", max_wal_size: "'64MB'" } });
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it('shows safe_wal_size shrinking, then wal_status lost as a critical alert', async () => {
    const admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    const got: Alert[] = [];
    const alerts = new AlertManager({
      policy: { warningMb: 1000, dangerMb: 2000, resolveRatio: 0.9, repeatMs: 0, cooldownMs: 0 },
      sink: { deliver: (a) => got.push(a) },
      log: silentLogger,
    });
    const monitor = new WalMonitor({ minIntervalPerSourceMs: 0, log: silentLogger, alerts });
    monitor.addSource({ id: 'small', name: 'small', config: { url: cluster.url() }, slots: ['doomed'] });
    try {
      await admin.query(`SELECT pg_create_logical_replication_slot('doomed', 'pgoutput')`);
      await monitor.tick();
      const before = monitor.snapshot()[0]!.slots[0]!;
      expect(before.safeWalSizeBytes).toBeGreaterThan(0);
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 8)`);
      await monitor.tick();
      const growing = monitor.snapshot()[0]!.slots[0]!;
      expect(growing.safeWalSizeBytes).toBeLessThan(before.safeWalSizeBytes!);
      expect(growing.secondsUntilSafeWalExhausted).toBeGreaterThanOrEqual(0);
      const lost = await waitFor('slot lost', async () => {
        await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 16)`);
        await admin.query('CHECKPOINT');
        await monitor.tick();
        return got.find((a) => a.type === 'slot_lost');
      });
      expect(lost).toMatchObject({ severity: 'critical', slot: 'doomed', figures: { wal_status: 'lost' } });
      expect(monitor.snapshot()[0]!.slots[0]!.walStatus).toBe('lost');
      expect(slotLostError('small', 'doomed').hint).toMatch(/max_slot_wal_keep_size/);
    } finally {
      await monitor.close();
      await admin.end();
    }
  });
});

/**
 * The source's guardian, on dedicated clusters (slots and pg_wal are server-wide, and the shared clusters
 * hold other files' slots), watched by a role that has nothing but pg_monitor.
 */
async function monitorRole(admin: pg.Client, url: string): Promise<string> {
  await admin.query(`CREATE ROLE watcher LOGIN`);
  await admin.query(`GRANT pg_monitor TO watcher`);
  const u = new URL(url);
  u.username = 'watcher';
  return u.toString();
}

/** Alerts collected in `got`, and passed on to `also` (a webhook) when given. */
function collect(also?: AlertSink): { got: Alert[]; alerts: (policy: Partial<AlertManager['policy']>) => AlertManager } {
  const got: Alert[] = [];
  return {
    got,
    alerts: (policy) =>
      new AlertManager({
        policy: { warningMb: 16, dangerMb: 32, resolveRatio: 0.9, repeatMs: 0, cooldownMs: 0, ...policy },
        sink: { deliver: (a) => (got.push(a), also?.deliver(a)) },
        log: silentLogger,
      }),
  };
}

describe("every slot on the source, floe's or not", () => {
  let cluster: RunningCluster;
  let admin: pg.Client;
  let watcherUrl: string;
  beforeAll(async () => {
    cluster = await startCluster({
      major: testClusters()[0]!.major,
      config: { max_wal_size: "'32MB'", min_wal_size: "'32MB'", wal_keep_size: '0' },
    });
    admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    watcherUrl = await monitorRole(admin, cluster.url());
  });
  afterAll(async () => {
    await admin?.end();
    await cluster?.stop();
  });

  it('raises warning, danger and resolved for an abandoned logical slot and an inactive physical slot, naming them', async () => {
    const { got, alerts } = collect();
    const metrics = new FloeMetrics();
    const monitor = new WalMonitor({
      minIntervalPerSourceMs: 0,
      log: silentLogger,
      metrics,
      alerts: alerts({ dirWarningMb: 100_000, dirDangerMb: 200_000 }),
    });
    // floe's own slot does not exist yet; the two others belong to nobody floe knows.
    monitor.addSource({ id: 'g1', name: 'guarded', config: { url: watcherUrl }, slots: ['floe_orders'] });
    const of = (slot: string) => got.filter((a) => a.slot === slot).map((a) => (a.type === 'resolved' ? `resolved:${a.resolves}` : a.type));
    try {
      await admin.query(`SELECT pg_create_logical_replication_slot('abandoned', 'pgoutput')`);
      await admin.query(`SELECT pg_create_physical_replication_slot('replica_gone', true)`);
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 20)`);
      await monitor.tick();
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 20)`);
      await monitor.tick();
      expect(of('abandoned')).toEqual(['wal_warning', 'wal_danger']);
      expect(of('replica_gone')).toEqual(['wal_warning', 'wal_danger']);
      expect(of('floe_orders')).toEqual([]);

      const logical = got.find((a) => a.slot === 'abandoned' && a.type === 'wal_danger')!;
      expect(logical.slot_info).toEqual({ type: 'logical', floe: false, active: false, owner: null, client_addr: null });
      expect(logical.message).toContain('non-floe inactive logical slot abandoned');
      expect(logical.hint).toContain(`pg_drop_replication_slot('abandoned')`);
      expect(logical.figures.retained_wal_bytes).toBeGreaterThanOrEqual(32 * MIB);
      const physical = got.find((a) => a.slot === 'replica_gone' && a.type === 'wal_danger')!;
      expect(physical.slot_info).toMatchObject({ type: 'physical', floe: false, active: false });
      expect(physical.message).toContain('physical slot replica_gone');
      expect(physical.hint).toMatch(/no standby is connected.*reconnect the replica/);

      const health = monitor.snapshot()[0]!;
      expect(health.walDirPrivilege).toBe(true); // pg_monitor is enough
      expect(health.slots.map((s) => s.slot).sort()).toEqual(['abandoned', 'floe_orders', 'replica_gone']);
      expect(health.slots.find((s) => s.slot === 'floe_orders')).toMatchObject({ walStatus: 'missing', floe: true });
      const scraped = await metrics.registry.metrics();
      expect(scraped).toMatch(/floe_slot_retained_wal_bytes\{source="guarded",slot="abandoned"\} \d+/);
      expect(scraped).toMatch(/floe_slot_retained_wal_bytes\{source="guarded",slot="replica_gone"\} \d+/);
      expect(scraped).toContain('floe_slot_info{source="guarded",slot="abandoned",type="logical",floe="false",owner=""} 1');
      expect(scraped).toContain('floe_slot_info{source="guarded",slot="replica_gone",type="physical",floe="false",owner=""} 1');
      expect(scraped).toContain('floe_slot_info{source="guarded",slot="floe_orders",type="logical",floe="true",owner=""} 1');

      // Dropping the abandoned slot resolves it (and removes its series); the replica catching up resolves the other.
      await admin.query(`SELECT pg_drop_replication_slot('abandoned')`);
      await admin.query(`SELECT pg_replication_slot_advance('replica_gone', pg_current_wal_lsn())`);
      await monitor.tick();
      expect(of('abandoned')).toEqual(['wal_warning', 'wal_danger', 'resolved:wal_danger']);
      expect(of('replica_gone')).toEqual(['wal_warning', 'wal_danger', 'resolved:wal_danger']);
      expect(got.find((a) => a.slot === 'abandoned' && a.type === 'resolved')!.message).toContain('dropped');
      expect(await metrics.registry.metrics()).not.toContain('slot="abandoned"');
    } finally {
      await monitor.close();
      await admin.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots`);
    }
  });

  it('alerts on pg_wal over its own threshold when no slot is at fault (wal_keep_size), and resolves', async () => {
    const { got, alerts } = collect();
    const metrics = new FloeMetrics();
    const monitor = new WalMonitor({
      minIntervalPerSourceMs: 0,
      log: silentLogger,
      metrics,
      alerts: alerts({ warningMb: 1000, dangerMb: 2000, dirWarningMb: 112, dirDangerMb: 1000 }),
    });
    monitor.addSource({ id: 'g2', name: 'kept', config: { url: watcherUrl }, slots: [] });
    try {
      await admin.query(`ALTER SYSTEM SET wal_keep_size = '160MB'`);
      await admin.query(`SELECT pg_reload_conf()`);
      const warning = await waitFor(
        'pg_wal warning',
        async () => {
          await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 16)`);
          await admin.query('CHECKPOINT');
          await monitor.tick();
          return got.find((a) => a.type === 'wal_dir_warning');
        },
        120_000,
      );
      expect(warning).toMatchObject({ severity: 'warning', slot: null, slot_info: null, thresholds: { warning_mb: 112, danger_mb: 1000 } });
      expect(warning.figures.wal_dir_bytes).toBeGreaterThanOrEqual(112 * MIB);
      expect(warning.figures.wal_keep_size_bytes).toBe(160 * MIB);
      expect(warning.message).toMatch(
        /pg_wal on source kept holds [\d.]+ MB \(warning threshold 112 MB\); no slot retains WAL, wal_keep_size keeps 160 MB/,
      );
      expect(warning.hint).toContain('wal_keep_size');
      expect(await metrics.registry.metrics()).toMatch(/floe_source_wal_keep_size_bytes\{source="kept"\} 167772160/);

      await admin.query(`ALTER SYSTEM RESET wal_keep_size`);
      await admin.query(`SELECT pg_reload_conf()`);
      const resolved = await waitFor(
        'pg_wal resolved',
        async () => {
          await admin.query(`SELECT pg_switch_wal()`);
          await admin.query('CHECKPOINT');
          await monitor.tick();
          return got.find((a) => a.type === 'resolved');
        },
        120_000,
      );
      expect(resolved).toMatchObject({ resolves: 'wal_dir_warning', slot: null });
      expect(got.map((a) => a.type)).toEqual(['wal_dir_warning', 'resolved']);
    } finally {
      await monitor.close();
      await admin.query(`ALTER SYSTEM RESET wal_keep_size`);
      await admin.query(`SELECT pg_reload_conf()`);
    }
  });
});

describe('a failing archive_command', () => {
  let cluster: RunningCluster;
  let admin: pg.Client;
  let watcherUrl: string;
  beforeAll(async () => {
    cluster = await startCluster({ major: testClusters()[0]!.major, config: { archive_mode: 'on', archive_command: "'false'" } });
    admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    watcherUrl = await monitorRole(admin, cluster.url());
  });
  afterAll(async () => {
    await admin?.end();
    await cluster?.stop();
  });

  it('raises an alert naming the WAL file that fails, signed, and resolves when archiving works again', async () => {
    const receiver = await startWebhookReceiver();
    const hook = new WebhookNotifier({ urls: [receiver.url], format: 'json', secret: SECRET, log: silentLogger, backoffMs: 20 });
    const { got, alerts } = collect(hook);
    const metrics = new FloeMetrics();
    const monitor = new WalMonitor({
      minIntervalPerSourceMs: 0,
      log: silentLogger,
      metrics,
      alerts: alerts({ dirWarningMb: 100_000, dirDangerMb: 200_000 }),
    });
    monitor.addSource({ id: 'g3', name: 'archiving', config: { url: watcherUrl }, slots: [] });
    try {
      const failing = await waitFor('archive_failing', async () => {
        await admin.query(`SELECT pg_logical_emit_message(false, 'pad', 'x')`);
        await admin.query(`SELECT pg_switch_wal()`);
        await monitor.tick();
        return got.find((a) => a.type === 'archive_failing');
      });
      const file = failing.figures.archive!.last_failed_wal!;
      expect(file).toMatch(/^[0-9A-F]{24}$/);
      expect(failing).toMatchObject({ severity: 'critical', slot: null });
      expect(failing.message).toContain(`fails for WAL file ${file}`);
      expect(failing.hint).toContain('archive_command');
      expect(failing.figures.archive!.failed_count).toBeGreaterThan(0);
      expect(failing.figures.archive!.pending_files).toBeGreaterThan(0);
      const scraped = await metrics.registry.metrics();
      expect(scraped).toContain('floe_source_archiver_failing{source="archiving"} 1');
      expect(scraped).toMatch(/floe_source_archiver_pending_files\{source="archiving"\} [1-9]/);

      await admin.query(`ALTER SYSTEM SET archive_command = 'true'`);
      await admin.query(`SELECT pg_reload_conf()`);
      const resolved = await waitFor(
        'archive resolved',
        async () => {
          await admin.query(`SELECT pg_logical_emit_message(false, 'pad', 'x')`);
          await admin.query(`SELECT pg_switch_wal()`);
          await monitor.tick();
          return got.find((a) => a.type === 'resolved');
        },
        90_000,
      );
      expect(resolved).toMatchObject({ resolves: 'archive_failing', slot: null });
      expect(await metrics.registry.metrics()).toContain('floe_source_archiver_failing{source="archiving"} 0');

      // The webhook got both, each signed over "<timestamp>.<body>".
      await waitFor('both delivered', () => receiver.requests.length >= 2);
      expect(receiver.requests.map((r) => (JSON.parse(r.body) as Alert).type)).toEqual(['archive_failing', 'resolved']);
      for (const r of receiver.requests) {
        const ts = String(r.headers[TIMESTAMP_HEADER]);
        expect(r.headers[SIGNATURE_HEADER]).toBe(signPayload(SECRET, ts, r.body));
        expect(r.body).not.toContain(watcherUrl);
      }
    } finally {
      await monitor.close();
      await hook.close();
      await receiver.close();
    }
  });
});

describe('three pipelines on one source, in two workers', () => {
  let cluster: RunningCluster;
  let admin: pg.Client;
  let control: pg.Pool;
  let watcherUrl: string;
  beforeAll(async () => {
    cluster = await startCluster({ major: testClusters()[0]!.major });
    admin = new pg.Client({ connectionString: cluster.url() });
    await admin.connect();
    watcherUrl = await monitorRole(admin, cluster.url());
    // The control plane lives on the same server here; its tables are what the workers share.
    await migrate(admin);
    await admin.query(`INSERT INTO floe.source (name, url) VALUES ('orders_db', $1)`, [cluster.url()]);
    await admin.query(`INSERT INTO floe.destination (name, type, url) VALUES ('lake', 'duckdb', '/tmp/unused.duckdb')`);
    for (const p of ['p1', 'p2', 'p3']) {
      await admin.query(
        `INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name)
         SELECT $1, s.id, d.id, 'pub', 'floe_' || $1 FROM floe.source s, floe.destination d`,
        [p],
      );
    }
    control = new pg.Pool({ connectionString: cluster.url(), max: 4 });
  });
  afterAll(async () => {
    await control?.end();
    await admin?.end();
    await cluster?.stop();
  });

  it('watches the source once: one alert per condition, and floe status shows its worst slot', async () => {
    const got: { worker: string; alert: Alert }[] = [];
    const stop = new AbortController();
    const worker = (id: string) => {
      const metrics = new FloeMetrics();
      const alerts = new AlertManager({
        policy: { warningMb: 16, dangerMb: 32, resolveRatio: 0.9, repeatMs: 0, cooldownMs: 0, dirWarningMb: 100_000, dirDangerMb: 200_000 },
        sink: { deliver: (alert) => got.push({ worker: id, alert }) },
        log: silentLogger,
      });
      const monitor = new WalMonitor({
        minIntervalPerSourceMs: 0,
        log: silentLogger,
        metrics,
        alerts,
        claim: new SourceMonitorLease({ db: control, worker: id, leaseMs: 60_000 }),
      });
      const sources = new RunningSources({ monitor, heartbeatIntervalMs: 0, log: silentLogger });
      return { id, metrics, monitor, sources };
    };
    const a = worker('worker-a');
    const b = worker('worker-b');
    const run = (w: ReturnType<typeof worker>, pipeline: string) =>
      w.sources.attach({ pipeline, sourceName: 'orders_db', source: { url: watcherUrl }, slot: `floe_${pipeline}` }, stop.signal);
    run(a, 'p1');
    run(a, 'p2');
    run(b, 'p3');
    const tickBoth = async () => {
      await a.monitor.tick();
      await b.monitor.tick();
    };
    const types = () => got.map((g) => `${g.alert.type}${g.alert.resolves ? `:${g.alert.resolves}` : ''} ${g.alert.slot}`);
    try {
      expect(a.monitor.snapshot()).toHaveLength(1); // two pipelines, one watched source
      await admin.query(`SELECT pg_create_logical_replication_slot('old_cdc', 'pgoutput')`);
      await admin.query(`SELECT pg_create_logical_replication_slot('floe_p3', 'pgoutput')`);
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 20)`);
      await tickBoth();
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 20)`);
      await tickBoth();
      await admin.query(`SELECT pg_drop_replication_slot('old_cdc')`);
      // A logical slot's restart point follows its confirmed position at the next running-xacts record.
      await waitFor('floe_p3 caught up', async () => {
        await admin.query('CHECKPOINT');
        await admin.query(`SELECT pg_replication_slot_advance('floe_p3', pg_current_wal_lsn())`);
        await tickBoth();
        return got.length >= 6;
      });
      expect(types().sort()).toEqual(
        [
          'wal_warning old_cdc',
          'wal_danger old_cdc',
          'resolved:wal_danger old_cdc',
          'wal_warning floe_p3',
          'wal_danger floe_p3',
          'resolved:wal_danger floe_p3',
        ].sort(),
      );
      expect(new Set(got.map((g) => g.worker))).toEqual(new Set(['worker-a']));
      // worker-b's pipeline slot is floe's for the watcher too (the control plane lists every pipeline's slot).
      expect(got.find((g) => g.alert.slot === 'floe_p3')!.alert.slot_info!.floe).toBe(true);
      expect(got.find((g) => g.alert.slot === 'old_cdc')!.alert.slot_info!.floe).toBe(false);
      // The watcher writes the slot figures of every pipeline on the source, wherever it runs.
      const [p3] = (await admin.query<{ slot_wal_status: string }>(`SELECT slot_wal_status FROM floe.pipeline WHERE name = 'p3'`)).rows;
      expect(p3!.slot_wal_status).toMatch(/reserved|extended/);
      expect(b.monitor.snapshot()[0]).toMatchObject({ watchedBy: 'worker-a', slots: [] });
      // worker-b did not query the source at all.
      expect(await b.metrics.registry.getSingleMetricAsString('floe_monitor_checks_total')).not.toContain('outcome="ok"');

      // floe status: the worst slot, whose it is, and who watches the source.
      await admin.query(`SELECT pg_create_physical_replication_slot('replica_gone', true)`);
      await admin.query(`SELECT pg_replication_slot_advance('floe_p3', pg_current_wal_lsn())`);
      await admin.query(`SELECT pg_logical_emit_message(false, 'pad', repeat('x', 1048576)) FROM generate_series(1, 10)`);
      await admin.query('CHECKPOINT');
      await admin.query(`SELECT pg_replication_slot_advance('floe_p3', pg_current_wal_lsn())`);
      await tickBoth();
      const report = await collectStatus(admin);
      expect(report.sources).toEqual([
        expect.objectContaining({
          name: 'orders_db',
          watched_by: 'worker-a',
          worst_slot: expect.objectContaining({ slot: 'replica_gone', type: 'physical', floe: false, active: false }),
        }),
      ]);
      expect(formatStatus(report)).toMatch(/orders_db\s+worker-a .* replica_gone [\d.]+ MB \(not floe, physical, inactive\)/);

      // worker-a stops: it gives the source up at once and worker-b watches it from its next check.
      await a.monitor.close();
      a.monitor.removeSource('orders_db');
      await b.monitor.tick();
      expect(b.monitor.snapshot()[0]).toMatchObject({ watchedBy: null, reachable: true });
      expect((await collectStatus(admin)).sources[0]!.watched_by).toBe('worker-b');
    } finally {
      stop.abort();
      await a.monitor.close();
      await b.monitor.close();
      await admin.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots`);
    }
  });
});
