/**
 * Prometheus metrics (prom-client). Names are constants; labels are few and bounded (`pipeline`, `op`,
 * `source`, `slot`, `destination`, ...: one value per configured object, never per row or request).
 * docs/metrics.md lists every metric. The pipeline feeds them through its events, so the runtime
 * never depends on the metrics library; other components (WAL monitor, alerts, destinations, state
 * stores) call the small methods below.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PipelineEvents } from '../pipeline/pipeline.js';

export const METRIC = {
  pipelineActive: 'pipeline_active',
  throughputRows: 'etl_throughput_rows',
  rowsReplicated: 'floe_rows_replicated_total',
  bytesReplicated: 'floe_bytes_replicated_total',
  snapshotRows: 'floe_snapshot_rows_total',
  durableLsn: 'floe_durable_lsn',
  replicationLagBytes: 'floe_replication_lag_bytes',
  batchRows: 'floe_batch_rows',
  flushSeconds: 'floe_destination_flush_seconds',
  mergedRows: 'floe_merged_journal_rows_total',
  retries: 'floe_pipeline_retries_total',
  replicationLagSeconds: 'floe_replication_lag_seconds',
  snapshotTables: 'floe_snapshot_tables',
  snapshotRanges: 'floe_snapshot_ranges',
  // WAL monitor (src/monitor/wal-monitor.ts), per source and per slot.
  sourceUp: 'floe_source_up',
  sourceWalSizeMb: 'pg_source_wal_size_mb',
  sourceWalGrowth: 'floe_source_wal_growth_bytes_per_second',
  slotRetainedWal: 'floe_slot_retained_wal_bytes',
  slotWalStatus: 'floe_slot_wal_status',
  slotSafeWalSize: 'floe_slot_safe_wal_size_bytes',
  slotActive: 'floe_slot_active',
  slotFlushLagBytes: 'floe_slot_confirmed_flush_lag_bytes',
  slotFlushLagSeconds: 'floe_slot_confirmed_flush_lag_seconds',
  slotRetainedGrowth: 'floe_slot_retained_wal_growth_bytes_per_second',
  slotSecondsUntilDanger: 'floe_slot_seconds_until_danger',
  slotSecondsUntilWalLost: 'floe_slot_seconds_until_safe_wal_exhausted',
  slotStalled: 'floe_slot_stalled',
  slotInfo: 'floe_slot_info',
  sourceWalKeepSize: 'floe_source_wal_keep_size_bytes',
  archiverFailing: 'floe_source_archiver_failing',
  archiverArchived: 'floe_source_archiver_archived_count',
  archiverFailed: 'floe_source_archiver_failed_count',
  archiverPending: 'floe_source_archiver_pending_files',
  archiverLastArchived: 'floe_source_archiver_last_archived_timestamp_seconds',
  archiverLastFailed: 'floe_source_archiver_last_failed_timestamp_seconds',
  monitorConnections: 'floe_monitor_connections',
  monitorChecks: 'floe_monitor_checks_total',
  // Alerts (src/monitor/alerts.ts, src/monitor/webhook.ts).
  alertsRaised: 'floe_alerts_raised_total',
  alertDeliveries: 'floe_alert_deliveries_total',
  // Destinations and state stores.
  destinationRequestSeconds: 'floe_destination_request_seconds',
  destinationErrors: 'floe_destination_request_errors_total',
  breakerState: 'floe_destination_breaker_state',
  storeOperationSeconds: 'floe_state_store_operation_seconds',
  heartbeats: 'floe_heartbeats_total',
} as const;

/** The values of `floe_slot_wal_status` (one series per status; the current one is 1). */
export const WAL_STATUSES = ['reserved', 'extended', 'unreserved', 'lost', 'missing'] as const;
export type SlotWalStatus = (typeof WAL_STATUSES)[number];

/** `floe_destination_breaker_state`: 0 closed (requests flow), 1 half-open (probing), 2 open (requests refused). */
export const BREAKER_STATE = { closed: 0, 'half-open': 1, open: 2 } as const;
export type BreakerState = keyof typeof BREAKER_STATE;

/** The per-slot figures the WAL monitor reports (numbers in bytes and seconds; null = unknown or unlimited). */
export interface SlotFigures {
  readonly walStatus: SlotWalStatus;
  readonly active: boolean;
  readonly retainedBytes: number | null;
  readonly safeWalSizeBytes: number | null;
  readonly confirmedFlushLagBytes: number | null;
  readonly confirmedFlushLagSeconds: number | null;
  readonly retainedGrowthBytesPerSecond: number | null;
  readonly secondsUntilDanger: number | null;
  readonly secondsUntilSafeWalExhausted: number | null;
  readonly stalled: boolean;
  /** For `floe_slot_info`: the slot's type, whether floe uses it, who streams from it. */
  readonly slotType?: 'logical' | 'physical';
  readonly floe?: boolean;
  readonly owner?: string | null;
}

/** pg_stat_archiver figures of a source (times RFC 3339). */
export interface ArchiverFigures {
  readonly failing: boolean;
  readonly archivedCount: number;
  readonly failedCount: number;
  readonly pendingFiles: number | null;
  readonly lastArchivedAt: string | null;
  readonly lastFailedAt: string | null;
}

const MIB = 1024 * 1024;

/** Seconds over which etl_throughput_rows averages. */
const THROUGHPUT_WINDOW_MS = 10_000;

export class FloeMetrics {
  readonly registry = new Registry();
  readonly #active: Gauge<'pipeline'>;
  readonly #throughput: Gauge<'pipeline'>;
  readonly #rows: Counter<'pipeline' | 'op'>;
  readonly #bytes: Counter<'pipeline'>;
  readonly #snapshotRows: Counter<'pipeline'>;
  readonly #durableLsn: Gauge<'pipeline'>;
  readonly #lag: Gauge<'pipeline'>;
  readonly #batchRows: Histogram<'pipeline'>;
  readonly #flushSeconds: Histogram<'pipeline'>;
  readonly #merged: Counter<'pipeline'>;
  readonly #retries: Counter<'pipeline'>;
  readonly #lagSeconds: Gauge<'pipeline'>;
  readonly #snapshotTables: Gauge<'pipeline' | 'state'>;
  readonly #snapshotRanges: Gauge<'pipeline' | 'state'>;
  readonly #sourceUp: Gauge<'source'>;
  readonly #walSizeMb: Gauge<'source'>;
  readonly #walGrowth: Gauge<'source'>;
  readonly #slot: {
    retained: Gauge<'source' | 'slot'>;
    status: Gauge<'source' | 'slot' | 'status'>;
    safe: Gauge<'source' | 'slot'>;
    active: Gauge<'source' | 'slot'>;
    lagBytes: Gauge<'source' | 'slot'>;
    lagSeconds: Gauge<'source' | 'slot'>;
    growth: Gauge<'source' | 'slot'>;
    untilDanger: Gauge<'source' | 'slot'>;
    untilLost: Gauge<'source' | 'slot'>;
    stalled: Gauge<'source' | 'slot'>;
  };
  /** Source-wide WAL figures beside the directory size: wal_keep_size and the archiver. */
  readonly #sourceWal: Record<'keep' | 'failing' | 'archived' | 'failed' | 'pending' | 'lastArchived' | 'lastFailed', Gauge<'source'>>;
  readonly #slotInfo: Gauge<'source' | 'slot' | 'type' | 'floe' | 'owner'>;
  /** The labels of each slot's current floe_slot_info series, to remove it when they change. */
  readonly #slotInfoLabels = new Map<string, { source: string; slot: string; type: string; floe: string; owner: string }>();
  readonly #monitorConnections: Gauge;
  readonly #monitorChecks: Counter<'outcome'>;
  readonly #alertsRaised: Counter<'type'>;
  readonly #alertDeliveries: Counter<'type' | 'outcome'>;
  readonly #destinationSeconds: Histogram<'destination' | 'route' | 'status'>;
  readonly #destinationErrors: Counter<'destination' | 'route' | 'status'>;
  readonly #breaker: Gauge<'destination'>;
  readonly #storeSeconds: Histogram<'kind' | 'op'>;
  readonly #heartbeats: Counter<'source' | 'outcome'>;
  /** Ranges copied per pipeline since the last plan, for floe_snapshot_ranges{state="done"}. */
  readonly #rangesDone = new Map<string, number>();
  readonly #slotsBySource = new Map<string, Set<string>>();
  /** Recent (time, rows) samples per pipeline, for the throughput gauge. */
  readonly #samples = new Map<string, { at: number; rows: number }[]>();

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'floe_' });
    this.#active = new Gauge({
      name: METRIC.pipelineActive,
      help: '1 while the pipeline snapshots or streams, else 0',
      labelNames: ['pipeline'],
      registers,
    });
    this.#throughput = new Gauge({
      name: METRIC.throughputRows,
      help: `rows per second made durable in the destination (snapshot and stream), over the last ${THROUGHPUT_WINDOW_MS / 1000} s`,
      labelNames: ['pipeline'],
      registers,
      collect: () => this.#updateThroughput(),
    });
    this.#rows = new Counter({
      name: METRIC.rowsReplicated,
      help: 'changes made durable, by operation (r snapshot, i, u, d, t)',
      labelNames: ['pipeline', 'op'],
      registers,
    });
    this.#bytes = new Counter({
      name: METRIC.bytesReplicated,
      help: 'bytes of row text made durable',
      labelNames: ['pipeline'],
      registers,
    });
    this.#snapshotRows = new Counter({ name: METRIC.snapshotRows, help: 'snapshot rows copied', labelNames: ['pipeline'], registers });
    this.#durableLsn = new Gauge({
      name: METRIC.durableLsn,
      help: 'commit LSN of the last durable transaction (as a number)',
      labelNames: ['pipeline'],
      registers,
    });
    this.#lag = new Gauge({
      name: METRIC.replicationLagBytes,
      help: "bytes between the server's WAL end last seen and the acknowledged LSN",
      labelNames: ['pipeline'],
      registers,
    });
    this.#batchRows = new Histogram({
      name: METRIC.batchRows,
      help: 'changes per destination write',
      labelNames: ['pipeline'],
      buckets: [1, 10, 100, 1000, 5000, 20000, 100000],
      registers,
    });
    this.#flushSeconds = new Histogram({
      name: METRIC.flushSeconds,
      help: 'time to make one batch durable in the destination',
      labelNames: ['pipeline'],
      buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
      registers,
    });
    this.#merged = new Counter({
      name: METRIC.mergedRows,
      help: 'journal rows merged into target tables',
      labelNames: ['pipeline'],
      registers,
    });
    this.#retries = new Counter({
      name: METRIC.retries,
      help: 'pipeline restarts after a transient failure',
      labelNames: ['pipeline'],
      registers,
    });
    this.#lagSeconds = new Gauge({
      name: METRIC.replicationLagSeconds,
      help: "seconds since the oldest WAL the pipeline's slot has not confirmed was first seen (0 when caught up)",
      labelNames: ['pipeline'],
      registers,
    });
    this.#snapshotTables = new Gauge({
      name: METRIC.snapshotTables,
      help: 'tables of the current snapshot, by state (done, total)',
      labelNames: ['pipeline', 'state'],
      registers,
    });
    this.#snapshotRanges = new Gauge({
      name: METRIC.snapshotRanges,
      help: 'CTID ranges of the current snapshot, by state (done, total)',
      labelNames: ['pipeline', 'state'],
      registers,
    });
    const sourceGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['source'], registers });
    const slotGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['source', 'slot'], registers });
    this.#sourceUp = sourceGauge(METRIC.sourceUp, '1 when the last WAL monitor check reached the source, else 0');
    this.#walSizeMb = sourceGauge(METRIC.sourceWalSizeMb, 'size of the pg_wal directory in MiB (needs pg_monitor; absent without it)');
    this.#walGrowth = sourceGauge(
      METRIC.sourceWalGrowth,
      'WAL written per second on the source (pg_current_wal_lsn over the growth window)',
    );
    this.#slot = {
      retained: slotGauge(METRIC.slotRetainedWal, 'WAL the slot retains: pg_current_wal_lsn() - restart_lsn, in bytes'),
      status: new Gauge({
        name: METRIC.slotWalStatus,
        help: `1 for the slot's current wal_status (${WAL_STATUSES.join(', ')}), 0 for the others`,
        labelNames: ['source', 'slot', 'status'],
        registers,
      }),
      safe: slotGauge(METRIC.slotSafeWalSize, 'bytes of WAL that can still be written before the slot is lost (absent: unlimited)'),
      active: slotGauge(METRIC.slotActive, '1 while a walsender streams from the slot'),
      lagBytes: slotGauge(METRIC.slotFlushLagBytes, 'pg_current_wal_lsn() - confirmed_flush_lsn, in bytes'),
      lagSeconds: slotGauge(METRIC.slotFlushLagSeconds, 'seconds since the oldest WAL position the slot has not confirmed was first seen'),
      growth: slotGauge(METRIC.slotRetainedGrowth, 'growth of the retained WAL in bytes per second over the growth window'),
      untilDanger: slotGauge(
        METRIC.slotSecondsUntilDanger,
        'forecast seconds until the retained WAL reaches the danger threshold (+Inf: not growing)',
      ),
      untilLost: slotGauge(
        METRIC.slotSecondsUntilWalLost,
        'forecast seconds until safe_wal_size runs out (+Inf: not growing or unlimited)',
      ),
      stalled: slotGauge(METRIC.slotStalled, '1 while confirmed_flush does not move although WAL grows (longer than the stall time)'),
    };
    this.#slotInfo = new Gauge({
      name: METRIC.slotInfo,
      help: 'always 1: the slot type (logical, physical), floe ("true" when a floe pipeline uses it) and owner (application_name streaming from it, "" when none)',
      labelNames: ['source', 'slot', 'type', 'floe', 'owner'],
      registers,
    });
    this.#sourceWal = {
      keep: sourceGauge(METRIC.sourceWalKeepSize, 'WAL the server keeps for wal_keep_size, in bytes'),
      failing: sourceGauge(METRIC.archiverFailing, '1 while archive_command fails (last failure newer than the last success)'),
      archived: sourceGauge(METRIC.archiverArchived, 'pg_stat_archiver.archived_count (resets with the server statistics)'),
      failed: sourceGauge(METRIC.archiverFailed, 'pg_stat_archiver.failed_count (resets with the server statistics)'),
      pending: sourceGauge(METRIC.archiverPending, 'WAL segments waiting for archive_command (.ready files; needs pg_monitor)'),
      lastArchived: sourceGauge(METRIC.archiverLastArchived, 'unix time of the last archived WAL segment'),
      lastFailed: sourceGauge(METRIC.archiverLastFailed, 'unix time of the last failed archive attempt'),
    };
    this.#monitorConnections = new Gauge({
      name: METRIC.monitorConnections,
      help: 'open WAL monitor connections (all sources)',
      registers,
    });
    this.#monitorChecks = new Counter({
      name: METRIC.monitorChecks,
      help: 'WAL monitor checks by outcome (ok, error)',
      labelNames: ['outcome'],
      registers,
    });
    this.#alertsRaised = new Counter({
      name: METRIC.alertsRaised,
      help: 'alerts raised by type (wal_warning, wal_danger, slot_stalled, slot_lost, wal_dir_warning, wal_dir_danger, archive_failing, resolved), delivered or not',
      labelNames: ['type'],
      registers,
    });
    this.#alertDeliveries = new Counter({
      name: METRIC.alertDeliveries,
      help: 'webhook deliveries by alert type and outcome (sent, retried, failed, dropped)',
      labelNames: ['type', 'outcome'],
      registers,
    });
    this.#destinationSeconds = new Histogram({
      name: METRIC.destinationRequestSeconds,
      help: 'latency of destination requests (e.g. Snowflake REST calls) by route and status',
      labelNames: ['destination', 'route', 'status'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.#destinationErrors = new Counter({
      name: METRIC.destinationErrors,
      help: 'destination requests that failed (non-2xx status or network error)',
      labelNames: ['destination', 'route', 'status'],
      registers,
    });
    this.#breaker = new Gauge({
      name: METRIC.breakerState,
      help: 'circuit breaker state of a destination: 0 closed, 1 half-open, 2 open',
      labelNames: ['destination'],
      registers,
    });
    this.#storeSeconds = new Histogram({
      name: METRIC.storeOperationSeconds,
      help: 'state store operation latency by store kind (postgres, redis, memory) and operation',
      labelNames: ['kind', 'op'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 2],
      registers,
    });
    this.#heartbeats = new Counter({
      name: METRIC.heartbeats,
      help: 'heartbeat messages written to a source, by outcome (ok, error)',
      labelNames: ['source', 'outcome'],
      registers,
    });
  }

  // ---- pipeline-level figures other components feed ----------------------------------------

  setReplicationLagSeconds(pipeline: string, seconds: number): void {
    this.#lagSeconds.set({ pipeline }, seconds);
  }

  /** The snapshot planner calls this when it has planned the tables and ranges to copy. */
  snapshotPlanned(pipeline: string, tables: number, ranges: number): void {
    this.#snapshotTables.set({ pipeline, state: 'total' }, tables);
    this.#snapshotTables.set({ pipeline, state: 'done' }, 0);
    this.#snapshotRanges.set({ pipeline, state: 'total' }, ranges);
    this.#snapshotRanges.set({ pipeline, state: 'done' }, 0);
    this.#rangesDone.set(pipeline, 0);
  }

  snapshotTableDone(pipeline: string): void {
    this.#snapshotTables.inc({ pipeline, state: 'done' });
  }

  // ---- WAL monitor ---------------------------------------------------------------------------

  setSourceReachable(source: string, up: boolean): void {
    this.#sourceUp.set({ source }, up ? 1 : 0);
  }

  /** null: unknown (no pg_monitor privilege): the series is removed rather than reported as 0. */
  setSourceWal(source: string, walDirBytes: number | null, growthBytesPerSecond: number | null): void {
    if (walDirBytes === null) this.#walSizeMb.remove({ source });
    else this.#walSizeMb.set({ source }, walDirBytes / MIB);
    if (growthBytesPerSecond === null) this.#walGrowth.remove({ source });
    else this.#walGrowth.set({ source }, growthBytesPerSecond);
  }

  setSlot(source: string, slot: string, f: SlotFigures): void {
    const l = { source, slot };
    let slots = this.#slotsBySource.get(source);
    if (!slots) this.#slotsBySource.set(source, (slots = new Set()));
    slots.add(slot);
    const set = (g: Gauge<'source' | 'slot'>, v: number | null, whenNull?: number) => {
      if (v !== null) g.set(l, v);
      else if (whenNull !== undefined) g.set(l, whenNull);
      else g.remove(l);
    };
    for (const status of WAL_STATUSES) this.#slot.status.set({ ...l, status }, status === f.walStatus ? 1 : 0);
    set(this.#slot.retained, f.retainedBytes);
    set(this.#slot.safe, f.safeWalSizeBytes);
    this.#slot.active.set(l, f.active ? 1 : 0);
    set(this.#slot.lagBytes, f.confirmedFlushLagBytes);
    set(this.#slot.lagSeconds, f.confirmedFlushLagSeconds);
    set(this.#slot.growth, f.retainedGrowthBytesPerSecond);
    set(this.#slot.untilDanger, f.secondsUntilDanger, Infinity);
    set(this.#slot.untilLost, f.secondsUntilSafeWalExhausted, Infinity);
    this.#slot.stalled.set(l, f.stalled ? 1 : 0);
    const info = { ...l, type: f.slotType ?? 'logical', floe: String(f.floe ?? true), owner: (f.owner ?? '').slice(0, 63) };
    const key = `${source}\u0000${slot}`;
    const before = this.#slotInfoLabels.get(key);
    if (before && (before.type !== info.type || before.floe !== info.floe || before.owner !== info.owner)) this.#slotInfo.remove(before);
    this.#slotInfoLabels.set(key, info);
    this.#slotInfo.set(info, 1);
  }

  /** Forgets one slot's series (the slot was dropped, or is no longer among the exported ones). */
  removeSlot(source: string, slot: string): void {
    const l = { source, slot };
    for (const [key, g] of Object.entries(this.#slot)) {
      if (key === 'status') for (const status of WAL_STATUSES) g.remove({ ...l, status });
      else g.remove(l);
    }
    const info = this.#slotInfoLabels.get(`${source}\u0000${slot}`);
    if (info) this.#slotInfo.remove(info);
    this.#slotInfoLabels.delete(`${source}\u0000${slot}`);
    this.#slotsBySource.get(source)?.delete(slot);
  }

  /** WAL kept for wal_keep_size; null removes the series. */
  setSourceWalKeep(source: string, bytes: number | null): void {
    if (bytes === null) this.#sourceWal.keep.remove({ source });
    else this.#sourceWal.keep.set({ source }, bytes);
  }

  setArchiver(source: string, a: ArchiverFigures): void {
    const l = { source };
    const set = (g: Gauge<'source'>, v: number | null) => (v === null ? g.remove(l) : g.set(l, v));
    const time = (t: string | null) => (t === null ? null : Date.parse(t) / 1000);
    set(this.#sourceWal.failing, a.failing ? 1 : 0);
    set(this.#sourceWal.archived, a.archivedCount);
    set(this.#sourceWal.failed, a.failedCount);
    set(this.#sourceWal.pending, a.pendingFiles);
    set(this.#sourceWal.lastArchived, time(a.lastArchivedAt));
    set(this.#sourceWal.lastFailed, time(a.lastFailedAt));
  }

  /** Forgets a source's series (it was removed from monitoring). */
  removeSource(source: string): void {
    this.#sourceUp.remove({ source });
    this.#walSizeMb.remove({ source });
    this.#walGrowth.remove({ source });
    for (const g of Object.values(this.#sourceWal)) g.remove({ source });
    for (const slot of [...(this.#slotsBySource.get(source) ?? [])]) this.removeSlot(source, slot);
    this.#slotsBySource.delete(source);
  }

  setMonitorConnections(n: number): void {
    this.#monitorConnections.set(n);
  }

  monitorCheck(outcome: 'ok' | 'error'): void {
    this.#monitorChecks.inc({ outcome });
  }

  // ---- alerts --------------------------------------------------------------------------------

  alertRaised(type: string): void {
    this.#alertsRaised.inc({ type });
  }

  alertDelivery(type: string, outcome: 'sent' | 'retried' | 'failed' | 'dropped'): void {
    this.#alertDeliveries.inc({ type, outcome });
  }

  // ---- destinations and state stores -----------------------------------------------------------

  /**
   * One destination request (the Snowflake client calls this per REST call). `route` is the
   * operation, not the URL (e.g. `open-channel`, `insert-rows`, `sql`); `status` the HTTP status or
   * `error` for a network failure. Non-2xx statuses also count as errors.
   */
  observeDestinationRequest(destination: string, route: string, status: number | 'error', seconds: number): void {
    const l = { destination, route, status: String(status) };
    this.#destinationSeconds.observe(l, seconds);
    if (status === 'error' || status < 200 || status >= 300) this.#destinationErrors.inc(l);
  }

  setBreakerState(destination: string, state: BreakerState): void {
    this.#breaker.set({ destination }, BREAKER_STATE[state]);
  }

  /** One state store call: `kind` postgres|redis|memory, `op` the method name (recordDurable, markRangeDone, ...). */
  observeStoreOperation(kind: string, op: string, seconds: number): void {
    this.#storeSeconds.observe({ kind, op }, seconds);
  }

  heartbeat(source: string, outcome: 'ok' | 'error'): void {
    this.#heartbeats.inc({ source, outcome });
  }

  /** Events that keep this pipeline's metrics current; chain them with other listeners. */
  pipelineEvents(pipeline: string): PipelineEvents {
    const l = { pipeline };
    this.#active.set(l, 0);
    const snapshotting = new Set<string>();
    let tablesDone = 0;
    return {
      phase: (p) => this.#active.set(l, p === 'snapshotting' || p === 'streaming' ? 1 : 0),
      snapshotRange: (_table, rows) => {
        this.#snapshotRows.inc(l, rows);
        this.#rangesDone.set(pipeline, (this.#rangesDone.get(pipeline) ?? 0) + 1);
        this.#snapshotRanges.set({ ...l, state: 'done' }, this.#rangesDone.get(pipeline)!);
        this.#rows.inc({ ...l, op: 'r' }, rows);
        this.#sample(pipeline, rows);
      },
      batchWritten: (rows, bytes, durableLsn, details) => {
        this.#bytes.inc(l, bytes);
        this.#durableLsn.set(l, Number(durableLsn));
        this.#batchRows.observe(l, rows);
        if (details) {
          this.#flushSeconds.observe(l, details.seconds);
          for (const [op, n] of Object.entries(details.ops)) if (n > 0) this.#rows.inc({ ...l, op }, n);
        }
        this.#sample(pipeline, rows);
      },
      acknowledged: (lsn, walEnd) => this.#lag.set(l, Number(walEnd - lsn)),
      merged: (rows) => this.#merged.inc(l, rows),
      retrying: () => this.#retries.inc(l),
      table: (table, state) => {
        // Tables snapshotted since this pipeline started here (initial, added, resynced) and how many finished.
        if (state === 'snapshotting') snapshotting.add(table);
        else if (snapshotting.delete(table) && state === 'streaming') tablesDone++;
        this.#snapshotTables.set({ ...l, state: 'total' }, tablesDone + snapshotting.size);
        this.#snapshotTables.set({ ...l, state: 'done' }, tablesDone);
      },
    };
  }

  #sample(pipeline: string, rows: number): void {
    let list = this.#samples.get(pipeline);
    if (!list) this.#samples.set(pipeline, (list = []));
    list.push({ at: Date.now(), rows });
  }

  #updateThroughput(): void {
    const now = Date.now();
    for (const [pipeline, list] of this.#samples) {
      while (list.length > 0 && list[0]!.at < now - THROUGHPUT_WINDOW_MS) list.shift();
      const rows = list.reduce((n, s) => n + s.rows, 0);
      this.#throughput.set({ pipeline }, rows / (THROUGHPUT_WINDOW_MS / 1000));
    }
  }
}

/** Calls every listener of each event, in order. */
export function combineEvents(...all: (PipelineEvents | undefined)[]): PipelineEvents {
  const present = all.filter((e): e is PipelineEvents => e !== undefined);
  const fan =
    <K extends keyof PipelineEvents>(key: K) =>
    (...args: Parameters<NonNullable<PipelineEvents[K]>>) => {
      for (const e of present) (e[key] as ((...a: typeof args) => void) | undefined)?.(...args);
    };
  return {
    phase: fan('phase'),
    snapshotRange: fan('snapshotRange'),
    batchWritten: fan('batchWritten'),
    acknowledged: fan('acknowledged'),
    merged: fan('merged'),
    retrying: fan('retrying'),
    table: fan('table'),
  };
}
