import { Command, Option } from 'commander';
import { positiveInt } from './arguments.js';
import { FloeError } from '../errors.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { formatLsn } from '../postgres/lsn.js';
import { BINARY_MODES, type BinaryMode } from '../postgres/replication.js';
import { runPipeline, type Failpoints, type PipelineEvents } from '../pipeline/pipeline.js';
import { openStateStore, stateStoreConfig } from '../store/open-store.js';
import { TimedStateStore } from '../store/timed-store.js';
import { parseDestination } from './destination-url.js';
import { onShutdownSignal } from './signals.js';
import { addHealthOptions, type HealthOptions } from './health-options.js';
import { Console } from '../console/console.js';
import { LocalPipelineStatus } from '../console/local-backend.js';
import { FloeMetrics, combineEvents } from '../telemetry/metrics.js';
import { PipelineReadiness, ReadinessChecks, startTelemetryServer } from '../telemetry/http.js';
import { registerUrlSecrets } from '../telemetry/logger.js';
import { AlertManager, alertPolicyFromEnv } from '../monitor/alerts.js';
import { WebhookNotifier, webhookOptionsFromEnv } from '../monitor/webhook.js';
import { WalMonitor, sourceNameFromUrl } from '../monitor/wal-monitor.js';
import { Heartbeat } from '../monitor/heartbeat.js';
import { postgresReachable, stateStoreReachable } from '../telemetry/health.js';

export function replicateCommand(): Command {
  const command = new Command('replicate')
    .description('replicate one publication into a destination, in the foreground, until SIGINT/SIGTERM')
    .addOption(
      new Option(
        '--source <url>',
        'source PostgreSQL URL (postgres://user@host:5432/db); keep the password out of it (ps shows it): use PGPASSWORD, ~/.pgpass, or the whole URL in FLOE_SOURCE_URL',
      )
        .env('FLOE_SOURCE_URL')
        .makeOptionMandatory(),
    )
    .requiredOption('--publication <name>', 'publication whose tables are replicated')
    .requiredOption('--slot <name>', 'logical replication slot (created if missing)')
    .requiredOption('--destination <url>', 'where to replicate: duckdb:./warehouse.duckdb or snowflake://USER@ACCOUNT/DB/SCHEMA?...')
    .option(
      '--state <url>',
      "state store: a PostgreSQL URL (tables in schema floe), a Redis URL, 'source' or 'memory' (env FLOE_STATE_STORE=redis with FLOE_REDIS_URL)",
      'source',
    )
    .option('--pipeline-name <name>', 'name of this pipeline in the state store (default: the slot name)')
    .addOption(
      new Option('--delete-mode <mode>', 'hard: deleted rows leave the target; soft: they stay with _floe_deleted = true')
        .choices(['hard', 'soft'])
        .default('hard'),
    )
    .option(
      '--snapshot-parallelism <n>',
      'parallel COPY connections for the initial snapshot',
      positiveInt('--snapshot-parallelism', 64),
      4,
    )
    .option(
      '--snapshot-range-pages <n>',
      'heap pages per snapshot range (bounds memory per range)',
      positiveInt('--snapshot-range-pages', 1 << 24),
      4096,
    )
    .option(
      '--batch-max-bytes <n>',
      'write a batch once it holds this many bytes (default: 1048576; 4194304 for Snowflake)',
      positiveInt('--batch-max-bytes', 256 * 1024 * 1024),
    )
    .option('--batch-max-ms <n>', 'write a batch once its first change is this old', positiveInt('--batch-max-ms', 3_600_000), 1000)
    .option(
      '--merge-interval-ms <n>',
      'how often journal changes are merged into target tables (default: 5000; Snowflake: every 1000, its merge_interval decides)',
      positiveInt('--merge-interval-ms', 86_400_000),
    )
    .option(
      '--max-uncommitted-bytes <n>',
      'bytes of row text written but not yet committed by the destination before floe stops reading the source (default: 67108864)',
      positiveInt('--max-uncommitted-bytes', 16 * 1024 * 1024 * 1024),
    )
    .option(
      '--status-interval-ms <n>',
      'standby status update cadence (keep well under wal_sender_timeout)',
      positiveInt('--status-interval-ms', 600_000),
      10_000,
    )
    .addOption(
      new Option(
        '--binary <mode>',
        "on: pgoutput sends values in binary send formats (binary 'true'), decoded by floe to the same text; a published column of a type floe does not decode from binary (money, reg* types, tsquery, composites, user-defined ranges) keeps the stream in text mode",
      )
        .choices(BINARY_MODES)
        .default('off'),
    )
    .option(
      '--no-stream-large-transactions',
      "use pgoutput protocol 1: the server spills a transaction larger than logical_decoding_work_mem to its own disk and sends it at commit (default: protocol 2 with streaming 'on'; floe keeps such a transaction in FLOE_SPOOL_DIR, else the OS temp directory, until it commits)",
    );
  return addHealthOptions(command)
    .option('--console-public-read', 'let the read-only web console and GET /api/v1 on the metrics port be read without FLOE_API_TOKEN')
    .action(async (opts: ReplicateOptions) => {
      await replicate(opts);
    });
}

interface ReplicateOptions extends HealthOptions {
  consolePublicRead?: boolean;
  source: string;
  publication: string;
  slot: string;
  destination: string;
  state: string;
  pipelineName?: string;
  deleteMode: 'hard' | 'soft';
  snapshotParallelism: number;
  snapshotRangePages: number;
  batchMaxBytes?: number;
  batchMaxMs: number;
  maxUncommittedBytes?: number;
  mergeIntervalMs?: number;
  statusIntervalMs: number;
  streamLargeTransactions: boolean;
  binary: BinaryMode;
}

/**
 * Test-only: `FLOE_TEST_CRASH_AT=<point>[:<n>]` kills this process with SIGKILL at the n-th time
 * (default 1st) it reaches <point>: `after-destination-write`, `mid-transaction-write` (a batch
 * that ends inside a transaction), `before-record-range` or `after-slot-created`. The crash tests use it to stop the
 * process at exact risky steps; it is never set in production.
 */
function crashFailpoints(spec: string | undefined): Failpoints | undefined {
  if (!spec) return undefined;
  const [point, nth] = spec.split(':');
  let remaining = Number(nth ?? '1');
  const hit = () => {
    if (--remaining <= 0) process.kill(process.pid, 'SIGKILL');
  };
  return {
    afterDestinationWrite: (batch) => {
      if (point === 'after-destination-write' || (point === 'mid-transaction-write' && batch.endsMidTransaction)) hit();
    },
    beforeRecordRange: () => {
      if (point === 'before-record-range') hit();
    },
    afterSlotCreated: () => {
      if (point === 'after-slot-created') hit();
    },
  };
}

/** Logs phase changes, and every 10 s what was copied and streamed since the start. */
function progressReporter(log: Logger): { events: PipelineEvents; stop(): void } {
  let phase = 'connecting';
  let snapshotRows = 0;
  let changes = 0;
  let lastChanges = 0;
  let durableLsn = 0n;
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    const rate = Math.round(((changes - lastChanges) * 1000) / Math.max(1, now - last));
    log.info({ phase, snapshotRows, changes, changesPerSecond: rate, durableLsn: formatLsn(durableLsn) }, 'progress');
    lastChanges = changes;
    last = now;
  }, 10_000);
  timer.unref();
  return {
    events: {
      phase: (p) => {
        phase = p;
        log.info({ phase: p }, 'pipeline phase');
      },
      snapshotRange: (_table, rows) => {
        snapshotRows += rows;
      },
      batchWritten: (rows, _bytes, lsn) => {
        changes += rows;
        durableLsn = lsn;
      },
    },
    stop: () => clearInterval(timer),
  };
}

async function replicate(opts: ReplicateOptions): Promise<void> {
  if (!/^[a-z0-9_]{1,63}$/.test(opts.slot)) {
    throw new FloeError('config', `invalid slot name "${opts.slot}"`, {
      hint: 'slot names use lower-case letters, digits and underscores (at most 63)',
    });
  }
  if (!/^postgres(ql)?:\/\//.test(opts.source)) {
    throw new FloeError('config', 'the --source URL must start with postgres:// or postgresql://');
  }
  registerUrlSecrets(opts.source);
  registerUrlSecrets(opts.state);
  registerUrlSecrets(opts.destination);
  const name = opts.pipelineName ?? opts.slot;
  // Every line of this process is about one pipeline: bind its name once.
  const log = createLogger({ level: opts.logLevel, format: opts.logFormat }).child({ pipeline: name });
  const alertPolicy = alertPolicyFromEnv();
  const storeConfig = stateStoreConfig(opts.state, opts.source);
  const metrics = new FloeMetrics();
  const destination = parseDestination(opts.destination, { deleteMode: opts.deleteMode, log, registry: metrics.registry });
  const store = await openStateStore(storeConfig, log).catch(async (err: unknown) => {
    await destination.close().catch(() => undefined);
    throw err;
  });
  const pipelineReadiness = new PipelineReadiness();
  const readiness = new ReadinessChecks().addCheck('pipeline', pipelineReadiness.check);

  // Source health beside the pipeline: the WAL monitor (alerts, metrics, /readyz) and the heartbeat.
  const sourceName = sourceNameFromUrl(opts.source);
  const webhookOptions = webhookOptionsFromEnv(process.env, { log, metrics });
  const notifier = webhookOptions ? new WebhookNotifier(webhookOptions) : undefined;
  // The read-only console on the metrics port: this pipeline's figures, its source's WAL, recent alerts.
  const consolePage = new Console(
    { publicRead: opts.consolePublicRead ?? false, readOnly: true },
    { alertSink: notifier, thresholds: alertPolicy },
  );
  const local = new LocalPipelineStatus({
    name,
    source: sourceName,
    destination: opts.destination.split(':')[0]!,
    publication: opts.publication,
    slot: opts.slot,
  });
  const consoleBackend = local.backend(consolePage);
  const alerts = new AlertManager({ policy: alertPolicy, sink: consolePage.alerts, log, metrics });
  const monitor = new WalMonitor({
    intervalMs: Math.max(1, opts.monitorInterval * 1000),
    minIntervalPerSourceMs: Math.min(10_000, opts.monitorInterval * 1000),
    concurrency: 1,
    maxConnections: 1,
    stallAfterMs: opts.stallAfter * 1000,
    log,
    metrics,
    alerts,
    onCheck: (health) => {
      consolePage.onSourceHealth(health);
      const slot = health.slots.find((s) => s.slot === opts.slot);
      if (slot?.confirmedFlushLagSeconds != null) metrics.setReplicationLagSeconds(name, slot.confirmedFlushLagSeconds);
    },
  });
  monitor.addSource({ id: sourceName, name: sourceName, config: { url: opts.source }, slots: [opts.slot] });
  readiness.addCheck('source', () => monitor.probe(sourceName));
  // A state store apart from the source is probed on its own (the source check covers `--state source`).
  const storeProbe =
    storeConfig.kind === 'postgres' && storeConfig.postgresUrl !== opts.source ? postgresReachable(storeConfig.postgresUrl!) : undefined;
  if (storeProbe) readiness.addCheck('state store', storeProbe.check);
  else if (storeConfig.kind === 'redis') readiness.addCheck('state store', stateStoreReachable(store, name));
  const heartbeat =
    opts.heartbeatInterval > 0
      ? new Heartbeat({ source: { url: opts.source }, sourceName, pipeline: name, intervalMs: opts.heartbeatInterval * 1000, log, metrics })
      : undefined;

  const telemetry =
    opts.metricsPort > 0
      ? await startTelemetryServer({
          port: opts.metricsPort,
          host: opts.metricsHost,
          readyzDetails: opts.readyzDetails === true,
          metrics,
          readiness,
          extend: (app) => consolePage.mount(app, consoleBackend),
        })
      : undefined;
  const controller = new AbortController();
  const release = onShutdownSignal(() => controller.abort());
  const progress = progressReporter(log);
  // The helpers stop with the pipeline, whether it was asked to stop or failed.
  const helpers = new AbortController();
  const stopHelpers = () => helpers.abort();
  controller.signal.addEventListener('abort', stopHelpers, { once: true });
  const running = [
    opts.monitorInterval > 0 ? monitor.run(helpers.signal) : Promise.resolve(),
    heartbeat ? heartbeat.run(helpers.signal) : Promise.resolve(),
    telemetry ? consolePage.run(consoleBackend, helpers.signal, log) : Promise.resolve(),
  ];
  try {
    await runPipeline(
      {
        name,
        source: { url: opts.source },
        publication: opts.publication,
        slotName: opts.slot,
        destination,
        store: new TimedStateStore(store, storeConfig.kind, metrics),
        log,
        snapshotParallelism: opts.snapshotParallelism,
        snapshotRangePages: opts.snapshotRangePages,
        batchMaxBytes: opts.batchMaxBytes,
        batchMaxMs: opts.batchMaxMs,
        maxUncommittedBytes: opts.maxUncommittedBytes,
        mergeIntervalMs: opts.mergeIntervalMs,
        statusIntervalMs: opts.statusIntervalMs,
        streamLargeTransactions: opts.streamLargeTransactions,
        binary: opts.binary,
        events: combineEvents(progress.events, metrics.pipelineEvents(name), pipelineReadiness.events, local.events),
        failpoints: crashFailpoints(process.env.FLOE_TEST_CRASH_AT),
      },
      controller.signal,
    );
  } finally {
    progress.stop();
    release();
    stopHelpers();
    await Promise.allSettled(running);
    await monitor.close();
    await storeProbe?.close();
    await notifier?.close();
    await telemetry?.close().catch(() => undefined);
    await destination.close().catch(() => undefined);
    await store.close().catch(() => undefined);
  }
}
