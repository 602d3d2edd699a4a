import { Command, Option } from 'commander';
import { createPool } from '../postgres/pool.js';
import { positiveInt } from './arguments.js';
import { FloeError, coerceError } from '../errors.js';
import { createLogger, registerUrlSecrets } from '../telemetry/logger.js';
import { FloeMetrics } from '../telemetry/metrics.js';
import { startTelemetryServer } from '../telemetry/http.js';
import { onShutdownSignal } from './signals.js';
import { addHealthOptions, type HealthOptions } from './health-options.js';
import { ReadinessChecks } from '../telemetry/http.js';
import { stateStoreReachable } from '../telemetry/health.js';
import { AlertManager, alertPolicyFromEnv } from '../monitor/alerts.js';
import { WebhookNotifier, webhookOptionsFromEnv } from '../monitor/webhook.js';
import { WalMonitor } from '../monitor/wal-monitor.js';
import { RunningSources } from '../monitor/running-sources.js';
import { SourceMonitorLease } from '../monitor/source-lease.js';
import { connectControlPlane, DATABASE_URL_ENV } from '../control/repository.js';
import { PipelineManager } from '../control/manager.js';
import { PgLeaseProvider } from '../control/pg-lease.js';
import { WorkerRegistration, defaultWorkerId } from '../control/worker.js';
import { openStateStore, stateStoreConfig } from '../store/open-store.js';
import { TimedStateStore } from '../store/timed-store.js';
import { RedisLeaseProvider } from '../control/redis-lease.js';
import type { StateStore } from '../store/state-store.js';
import type { LeaseProvider } from '../control/lease.js';
import { redactUrl } from '../postgres/source.js';
import { Console } from '../console/console.js';
import { addConsoleOptions, type ConsoleFlags } from '../console/options.js';
import { controlPlaneBackend } from '../api/server.js';

export function runCommand(): Command {
  const command = new Command('run')
    .description('run as a worker: every started pipeline of the control plane, shared with the other workers, until SIGINT/SIGTERM')
    .addOption(new Option('--database-url <url>', 'the control-plane database').env(DATABASE_URL_ENV))
    .option('--worker-id <id>', 'this worker in floe.worker and pipeline.owner_worker (default: <host>-<pid>)')
    .addOption(
      new Option('--max-pipelines <n>', 'at most this many pipelines on this worker')
        .env('FLOE_MAX_PIPELINES')
        .argParser(positiveInt('--max-pipelines', 1000))
        .default(16),
    )
    .option(
      '--poll-interval-ms <n>',
      'how often the control plane is read without a notification (also the takeover delay of a dead worker)',
      positiveInt('--poll-interval-ms', 3_600_000),
      5000,
    )
    .option(
      '--lease-ttl-ms <n>',
      'Redis leases (FLOE_STATE_STORE=redis): how long a lease outlives a worker that stopped renewing it',
      positiveInt('--lease-ttl-ms', 3_600_000),
      15_000,
    );
  return addConsoleOptions(addHealthOptions(command)).action(async (opts: RunOptions) => {
    await run(opts);
  });
}

interface RunOptions extends HealthOptions, ConsoleFlags {
  databaseUrl?: string;
  workerId?: string;
  maxPipelines: number;
  pollIntervalMs: number;
  leaseTtlMs: number;
}

/** Fits `floe-lease <id>` into application_name (63 bytes), where other workers read lease holders. */
const WORKER_ID = /^[A-Za-z0-9._:@-]{1,52}$/;

async function run(opts: RunOptions): Promise<void> {
  const worker = opts.workerId ?? defaultWorkerId().slice(0, 52);
  if (!WORKER_ID.test(worker)) {
    throw new FloeError('config', `invalid worker id "${worker.slice(0, 60)}"`, {
      hint: 'use at most 52 letters, digits and . _ : @ -',
    });
  }
  // Refuses a missing or outdated schema ("run floe migrate") before anything starts.
  const check = await connectControlPlane(opts.databaseUrl);
  await check.end().catch(() => undefined);
  const url = opts.databaseUrl!;

  const log = createLogger({ level: opts.logLevel, format: opts.logFormat }).child({ worker });
  registerUrlSecrets(url);
  const alertPolicy = alertPolicyFromEnv();
  // FLOE_STATE_STORE=postgres (default: progress in the control-plane database, leases on its advisory
  // locks) or redis (FLOE_REDIS_URL: progress and leases in Redis).
  const storeConfig = stateStoreConfig('source', url);
  const store: StateStore = await openStateStore(storeConfig);
  const leases: LeaseProvider =
    storeConfig.kind === 'redis'
      ? new RedisLeaseProvider({
          url: storeConfig.redisUrl!,
          ttlMs: opts.leaseTtlMs,
          ...(storeConfig.redisKeyPrefix ? { keyPrefix: storeConfig.redisKeyPrefix } : {}),
        })
      : new PgLeaseProvider({ url, worker, log });
  // Bounded waits: a control plane that stops answering must not hang reconciliation or state reports.
  const db = createPool({
    connectionString: url,
    max: 4,
    application_name: 'floe-worker',
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    query_timeout: 30_000,
  });
  const registration = new WorkerRegistration(db, { id: worker, maxPipelines: opts.maxPipelines, log });
  const metrics = new FloeMetrics();
  const controller = new AbortController();

  // Source health of the pipelines running here: WAL monitor with alerts, heartbeats, readiness.
  const webhookOptions = webhookOptionsFromEnv(process.env, { log, metrics });
  // The console keeps recent alerts and WAL figures for its pages, and is served on the metrics port
  // unless it has its own (--console-port).
  const consolePage = new Console(
    {
      port: opts.consolePort,
      host: opts.consoleHost,
      publicRead: opts.consolePublicRead ?? false,
      readOnly: false,
      sampleIntervalMs: opts.consoleSampleInterval * 1000,
    },
    { alertSink: webhookOptions ? new WebhookNotifier(webhookOptions) : undefined, thresholds: alertPolicy },
  );
  const alerts = new AlertManager({
    policy: alertPolicy,
    sink: consolePage.alerts,
    log,
    metrics,
  });
  const monitor =
    opts.monitorInterval > 0
      ? new WalMonitor({
          intervalMs: opts.monitorInterval * 1000,
          minIntervalPerSourceMs: Math.min(10_000, opts.monitorInterval * 1000),
          stallAfterMs: opts.stallAfter * 1000,
          log,
          metrics,
          alerts,
          // One watcher per source across workers; the holder writes the slot figures of every pipeline
          // on the source to its row (floe status shows what the floe_slot_* metrics show).
          claim: new SourceMonitorLease({ db, worker, leaseMs: Math.max(30_000, 3 * opts.monitorInterval * 1000) }),
          onCheck: (health) => {
            consolePage.onSourceHealth(health);
            for (const slot of health.slots) {
              for (const pipeline of sources.pipelinesOn(health.id, slot.slot)) {
                if (slot.confirmedFlushLagSeconds !== null) metrics.setReplicationLagSeconds(pipeline, slot.confirmedFlushLagSeconds);
              }
            }
          },
        })
      : undefined;
  const sources: RunningSources = new RunningSources({ monitor, heartbeatIntervalMs: opts.heartbeatInterval * 1000, log, metrics });
  const release = onShutdownSignal(() => controller.abort());
  const manager = new PipelineManager({
    url,
    db,
    worker,
    leases,
    store: new TimedStateStore(store, storeConfig.kind, metrics),
    log,
    metrics,
    maxPipelines: opts.maxPipelines,
    pollIntervalMs: opts.pollIntervalMs,
    onPipelineRunning: (config, signal) =>
      sources.attach({ pipeline: config.name, sourceName: config.sourceName, source: config.source, slot: config.slotName }, signal),
  });
  const readiness = new ReadinessChecks()
    .addCheck('control plane', () => {
      const r = manager.ready();
      return r.ok ? undefined : r.reason;
    })
    .addCheck('state store', stateStoreReachable(store, 'floe-readiness-probe'))
    .addCheck('sources', sources.check);
  let telemetry: Awaited<ReturnType<typeof startTelemetryServer>> | undefined;
  let registered = false;
  try {
    await store.init();
    const backend = controlPlaneBackend(db, { history: consolePage.history, alerts: consolePage.alerts, sources: consolePage.sources });
    const onMetricsPort = opts.consolePort === undefined;
    telemetry =
      opts.metricsPort > 0
        ? await startTelemetryServer({
            port: opts.metricsPort,
            host: opts.metricsHost,
            readyzDetails: opts.readyzDetails === true,
            metrics,
            readiness,
            ...(onMetricsPort ? { extend: (app) => consolePage.mount(app, backend) } : {}),
          })
        : undefined;
    const consoleUrl = onMetricsPort
      ? telemetry
        ? `http://127.0.0.1:${opts.metricsPort}/`
        : undefined
      : await consolePage.listen(backend);
    const sampling = consoleUrl ? consolePage.run(backend, controller.signal, log) : undefined;
    await registration.register();
    registered = true;
    log.info(
      { controlPlane: redactUrl(url), maxPipelines: opts.maxPipelines, stateStore: storeConfig.kind, console: consoleUrl },
      'worker started',
    );
    const monitoring = monitor
      ?.run(controller.signal)
      .catch((err: unknown) => log.error({ err: coerceError(err).message }, 'WAL monitor stopped'));
    await manager.run(controller.signal);
    await monitoring;
    await sampling;
    log.info('worker stopped: every pipeline drained and its lease released');
  } catch (err) {
    controller.abort();
    throw coerceError(err);
  } finally {
    release();
    // Only our own row: a refused registration means the row is another live worker's.
    if (registered) await registration.unregister();
    await leases.close().catch(() => undefined);
    await telemetry?.close().catch(() => undefined);
    await consolePage.close();
    await store.close().catch(() => undefined);
    await db.end().catch(() => undefined);
  }
}
