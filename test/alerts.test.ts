/**
 * Alert decisions (hysteresis, cooldown, repeat, resolved, lost slots, state by id) and webhook delivery
 * when the endpoint is down or slow: retried, then dropped with a log line; the queue stays bounded;
 * and `floe replicate` keeps replicating while its webhook hangs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { AlertManager, alertPolicyFromEnv, dirThresholds, type Alert, type SlotObservation } from '../src/monitor/alerts.js';
import { WebhookNotifier } from '../src/monitor/webhook.js';
import { FloeMetrics } from '../src/telemetry/metrics.js';
import { createLogger, silentLogger } from '../src/telemetry/logger.js';
import { FloeError } from '../src/errors.js';
import { startWebhookReceiver } from './helpers/webhook-receiver.js';
import { waitFor } from './helpers/wait.js';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startFloe } from './helpers/cli.js';
import { tempDir } from './helpers/pipeline.js';
import { freePort } from '../src/postgres/local-cluster.js';

const MIB = 1024 * 1024;

function observation(retainedMb: number, extra: Partial<SlotObservation> = {}): SlotObservation {
  return {
    sourceId: 'id-1',
    sourceName: 'db',
    slot: 's',
    walStatus: 'reserved',
    active: true,
    retainedBytes: retainedMb * MIB,
    walDirBytes: null,
    safeWalSizeBytes: null,
    confirmedFlushLagBytes: 0,
    confirmedFlushLagSeconds: 0,
    growthBytesPerSecond: null,
    secondsUntilDanger: null,
    secondsUntilSafeWalExhausted: null,
    stalledSeconds: null,
    ...extra,
  };
}

function manager(policy: Partial<ConstructorParameters<typeof AlertManager>[0]['policy']> = {}) {
  let now = 0;
  const got: Alert[] = [];
  const m = new AlertManager({
    policy: { warningMb: 100, dangerMb: 200, resolveRatio: 0.9, repeatMs: 60_000, cooldownMs: 10_000, ...policy },
    sink: { deliver: (a) => got.push(a) },
    log: silentLogger,
    now: () => now,
  });
  const label = (a: Alert) => (a.type === 'resolved' ? `resolved:${a.resolves}` : `${a.type}${a.repeat ? '+repeat' : ''}`);
  return {
    m,
    at: (t: number, o: SlotObservation) => {
      now = t;
      m.observe(o);
    },
    types: () => got.map(label),
    got,
  };
}

describe('AlertManager', () => {
  it('raises at the thresholds, clears only below the hysteresis band, repeats and resolves', () => {
    const a = manager();
    a.at(0, observation(50));
    a.at(1000, observation(100)); // warning at the threshold
    a.at(2000, observation(95)); // inside the band: still warning, nothing sent
    a.at(3000, observation(210)); // danger
    a.at(4000, observation(185)); // below danger but above 90 %: still danger
    a.at(63_000, observation(190)); // repeat after 60 s
    a.at(64_000, observation(150)); // danger → warning: silent
    a.at(65_000, observation(91)); // above 90 MB: still warning
    a.at(66_000, observation(89)); // resolved
    expect(a.types()).toEqual(['wal_warning', 'wal_danger', 'wal_danger+repeat', 'resolved:wal_danger']);
    // The resolution names the worst level announced in the episode, though it fell to warning first.
    expect(a.got[3]!.figures.retained_wal_bytes).toBe(89 * MIB);
    expect(new Set(a.got.map((x) => x.since))).toEqual(new Set([new Date(1000).toISOString()])); // one episode
  });

  it('keeps a flapping slot quiet within the cooldown and announces it once the cooldown passed', () => {
    const a = manager();
    a.at(0, observation(120));
    a.at(1000, observation(80)); // resolved
    a.at(2000, observation(120)); // back within the 10 s cooldown: held back
    a.at(3000, observation(80)); // and gone again: its resolution is not announced either
    a.at(4000, observation(120));
    a.at(12_000, observation(120)); // still there after the cooldown: announced now
    expect(a.types()).toEqual(['wal_warning', 'resolved:wal_warning', 'wal_warning']);
  });

  it('keys state by source id: two sources with the same name and slot are independent', () => {
    const a = manager();
    a.at(0, observation(120, { sourceId: 'a' }));
    a.at(0, observation(120, { sourceId: 'b' }));
    a.at(1000, observation(10, { sourceId: 'a' }));
    expect(a.got.map((x) => `${x.source.id}:${x.type}`)).toEqual(['a:wal_warning', 'b:wal_warning', 'a:resolved']);
  });

  it('reports a lost slot as critical, stalls separately, and both resolve', () => {
    const a = manager({ repeatMs: 0 });
    a.at(0, observation(10, { stalledSeconds: 700 }));
    a.at(1000, observation(10, { walStatus: 'lost', retainedBytes: null }));
    a.at(2000, observation(0, { walStatus: 'reserved' }));
    expect(a.types()).toEqual(['slot_stalled', 'slot_lost', 'resolved:slot_stalled', 'resolved:slot_lost']);
    expect(a.got[1]!.severity).toBe('critical');
  });

  it('reads and validates the thresholds from the environment', () => {
    expect(alertPolicyFromEnv({})).toMatchObject({ warningMb: 3000, dangerMb: 6000, resolveRatio: 0.9 });
    expect(alertPolicyFromEnv({ FLOE_WAL_WARNING_MB: '10', FLOE_WAL_DANGER_MB: '20', FLOE_ALERT_REPEAT_MINUTES: '5' })).toMatchObject({
      warningMb: 10,
      dangerMb: 20,
      repeatMs: 300_000,
    });
    expect(() => alertPolicyFromEnv({ FLOE_WAL_WARNING_MB: '500', FLOE_WAL_DANGER_MB: '400' })).toThrow(FloeError);
    expect(() => alertPolicyFromEnv({ FLOE_WAL_WARNING_MB: 'lots' })).toThrow(/FLOE_WAL_WARNING_MB/);
  });

  it('takes the pg_wal directory thresholds from their own variables, else from the slot thresholds', () => {
    expect(dirThresholds(alertPolicyFromEnv({ FLOE_WAL_WARNING_MB: '10', FLOE_WAL_DANGER_MB: '20' }))).toMatchObject({
      warningMb: 10,
      dangerMb: 20,
    });
    const own = alertPolicyFromEnv({ FLOE_WAL_DIR_WARNING_MB: '50', FLOE_WAL_DIR_DANGER_MB: '80' });
    expect(dirThresholds(own)).toMatchObject({ warningMb: 50, dangerMb: 80 });
    expect(() => alertPolicyFromEnv({ FLOE_WAL_DIR_WARNING_MB: '9000' })).toThrow(
      /FLOE_WAL_DIR_WARNING_MB \(9000\) must be positive and below/,
    );
  });

  it('runs the pg_wal directory on its own ladder with hysteresis, naming what holds the WAL', () => {
    const a = manager({ dirWarningMb: 400, dirDangerMb: 800 });
    const dir = (mbs: number, largest: number | null) =>
      a.m.observeWalDir({
        sourceId: 'id-1',
        sourceName: 'db',
        walDirBytes: mbs * MIB,
        growthBytesPerSecond: null,
        walKeepSizeBytes: 0,
        archivePendingFiles: 0,
        largestSlot:
          largest === null ? null : { slot: 'old_tool', retainedBytes: largest * MIB, floe: false, active: false, slotType: 'logical' },
      });
    dir(300, null);
    dir(450, 440); // warning, the slot holds nearly all of it
    dir(380, 370); // inside the band
    dir(900, 890); // danger
    dir(350, 10); // resolved
    expect(a.types()).toEqual(['wal_dir_warning', 'wal_dir_danger', 'resolved:wal_dir_danger']);
    expect(a.got[0]!.message).toContain('non-floe inactive logical slot old_tool retains 440 MB');
    expect(a.got[0]!.hint).toContain(`pg_drop_replication_slot('old_tool')`);
    expect(a.got[0]!.slot).toBeNull();
  });

  it('raises archive_failing while the last failure is newer than the last success', () => {
    const a = manager({ repeatMs: 0 });
    const archiver = (lastArchivedAt: string | null, lastFailedAt: string | null, enabled = true) =>
      a.m.observeArchiver({
        sourceId: 'id-1',
        sourceName: 'db',
        enabled,
        archivedCount: 3,
        lastArchivedWal: '000000010000000000000003',
        lastArchivedAt,
        failedCount: 7,
        lastFailedWal: '000000010000000000000004',
        lastFailedAt,
        pendingFiles: 2,
        walDirBytes: null,
      });
    archiver('2026-01-01T00:00:00Z', null);
    archiver('2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z');
    archiver('2026-01-01T00:02:00Z', '2026-01-01T00:01:00Z');
    archiver(null, '2026-01-01T00:01:00Z', false); // archive_mode off: nothing to say
    expect(a.types()).toEqual(['archive_failing', 'resolved:archive_failing']);
    expect(a.got[0]!.message).toContain('fails for WAL file 000000010000000000000004');
  });

  it('resolves an announced slot that was dropped, and suggests fixes that fit whose slot it is', () => {
    const a = manager();
    const abandoned = observation(150, { slot: 'old', floe: false, active: false });
    a.at(0, abandoned);
    a.at(
      1000,
      observation(150, { slot: 'standby', floe: false, active: true, slotType: 'physical', owner: 'walreceiver', clientAddr: '10.0.0.7' }),
    );
    a.at(2000, observation(150, { slot: 'mine', active: false }));
    a.m.slotGone(abandoned);
    expect(a.types()).toEqual(['wal_warning', 'wal_warning', 'wal_warning', 'resolved:wal_warning']);
    expect(a.got[0]!.hint).toMatch(/floe does not own it.*pg_drop_replication_slot\('old'\)/);
    expect(a.got[1]!.hint).toContain('standby walreceiver at 10.0.0.7 is lagging');
    expect(a.got[2]!.hint).toContain('start or resume its pipeline');
    expect(a.got[3]!.message).toContain('the slot was dropped');
    a.m.slotGone(observation(10, { slot: 'never_announced' }));
    expect(a.got).toHaveLength(4);
  });
});

function capture() {
  const lines: string[] = [];
  const log = createLogger({
    destination: new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  });
  return { lines, log };
}

function sampleAlert(i: number): Alert {
  const a = manager({ cooldownMs: 0 });
  a.at(0, observation(120, { slot: `slot_${i}` }));
  return a.got[0]!;
}

describe('webhook delivery', () => {
  it('retries a failing endpoint with backoff, then drops the alert with a log line', async () => {
    const hook = await startWebhookReceiver('fail');
    const { lines, log } = capture();
    const metrics = new FloeMetrics();
    const n = new WebhookNotifier({ urls: [hook.url], log, metrics, attempts: 3, backoffMs: 10 });
    try {
      n.deliver(sampleAlert(1));
      await waitFor('dropped', () => lines.some((l) => l.includes('alert webhook delivery failed')));
      expect(hook.requests).toHaveLength(3);
      const text = await metrics.registry.getSingleMetricAsString('floe_alert_deliveries_total');
      expect(text).toContain('floe_alert_deliveries_total{type="wal_warning",outcome="retried"} 2');
      expect(text).toContain('floe_alert_deliveries_total{type="wal_warning",outcome="failed"} 1');
      const line = JSON.parse(lines.find((l) => l.includes('delivery failed'))!) as Record<string, unknown>;
      expect(line).toMatchObject({ alert: 'wal_warning', err: 'HTTP 503', webhook: hook.url.replace('/hook', '/') });
    } finally {
      await n.close(0);
      await hook.close();
    }
  });

  it('times out a hanging endpoint and keeps its queue bounded, dropping the oldest', async () => {
    const hook = await startWebhookReceiver('hang');
    const { lines, log } = capture();
    const metrics = new FloeMetrics();
    const n = new WebhookNotifier({ urls: [hook.url], log, metrics, attempts: 2, backoffMs: 10, timeoutMs: 200, maxQueue: 5 });
    try {
      for (let i = 0; i < 50; i++) n.deliver(sampleAlert(i)); // returns at once: nothing waits for the endpoint
      expect(n.pending).toBeLessThanOrEqual(6); // 5 queued + 1 in flight
      expect(lines.filter((l) => l.includes('queue full'))).toHaveLength(44);
      await waitFor('first delivery timed out', () => lines.some((l) => l.includes('no answer within 200 ms')));
      const text = await metrics.registry.getSingleMetricAsString('floe_alert_deliveries_total');
      expect(text).toContain('outcome="dropped"} 44');
    } finally {
      await n.close(0);
      await hook.close();
    }
    expect(n.pending).toBe(0);
  });

  it('reaches a second URL while the first is down', async () => {
    const down = await startWebhookReceiver('fail');
    const up = await startWebhookReceiver('ok');
    const n = new WebhookNotifier({ urls: [down.url, up.url], log: silentLogger, attempts: 50, backoffMs: 1000 });
    try {
      n.deliver(sampleAlert(1));
      n.deliver(sampleAlert(2));
      await waitFor('second URL got both', () => up.requests.length === 2);
    } finally {
      await n.close(0);
      await down.close();
      await up.close();
    }
  });
});

describe('replication while the webhook hangs', () => {
  const cluster = testClusters()[0]!;
  let db: TestDatabase;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    await db.sql(`CREATE TABLE w (id int PRIMARY KEY, v text); CREATE PUBLICATION wp FOR TABLE w`);
  });
  afterAll(async () => {
    await db.dropSlot('wslot');
    await db.drop();
    dir.remove();
  });

  it('streams every change while alerts time out and are dropped', async () => {
    const hook = await startWebhookReceiver('hang');
    const port = await freePort();
    const p = startFloe(
      [
        'replicate',
        ...['--source', db.url, '--publication', 'wp', '--slot', 'wslot'],
        ...['--destination', `duckdb:${join(dir.path, 'w.duckdb')}`, '--metrics-port', String(port)],
        ...['--batch-max-ms', '50', '--status-interval-ms', '200', '--monitor-interval', '0.1', '--heartbeat-interval', '0'],
      ],
      // Thresholds of a few KiB: every check of the (briefly unacknowledged) slot raises alerts.
      { FLOE_ALERT_WEBHOOK_URL: hook.url, FLOE_WAL_WARNING_MB: '0.0001', FLOE_WAL_DANGER_MB: '0.0002', FLOE_ALERT_COOLDOWN_MINUTES: '0' },
    );
    const base = `http://127.0.0.1:${port}`;
    const metric = async (re: RegExp) => {
      const text = await (await fetch(`${base}/metrics`).catch(() => undefined))?.text();
      const m = text?.match(re);
      return m ? Number(m[1]) : undefined;
    };
    try {
      await waitFor('ready', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200);
      for (let i = 0; i < 20; i++)
        await db.sql(`INSERT INTO w SELECT g, 'v' FROM generate_series($1::int * 100, $1::int * 100 + 99) g`, [i]);
      await waitFor('alert posted to the hanging webhook', () => hook.requests.length > 0);
      await waitFor(
        'all 2000 inserts durable',
        async () => (await metric(/floe_rows_replicated_total\{pipeline="wslot",op="i"\} (\d+)/)) === 2000,
      );
      // Deliveries time out (10 s per attempt) and retry in the background; the pipeline is not held up.
      expect(await metric(/floe_alerts_raised_total\{type="wal_danger"\} (\d+)/)).toBeGreaterThan(0);
    } finally {
      p.kill('SIGTERM');
      const exit = await p.exited;
      await hook.close();
      expect(exit.code, exit.stderr).toBe(0);
    }
  });
});
