/**
 * Prometheus metrics (prom-client). Names are constants; labels are few and bounded (`pipeline`, `op`).
 * docs/metrics.md lists every metric. The pipeline feeds them through its events, so the runtime
 * never depends on the metrics library.
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
} as const;

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
  }

  /** Events that keep this pipeline's metrics current; chain them with other listeners. */
  pipelineEvents(pipeline: string): PipelineEvents {
    const l = { pipeline };
    this.#active.set(l, 0);
    return {
      phase: (p) => this.#active.set(l, p === 'snapshotting' || p === 'streaming' ? 1 : 0),
      snapshotRange: (_table, rows) => {
        this.#snapshotRows.inc(l, rows);
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
  };
}
