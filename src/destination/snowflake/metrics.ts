/**
 * Prometheus metrics of the Snowflake clients. Labels stay low-cardinality: route templates (never URLs),
 * HTTP status classes and a small set of reopen reasons; no channel, table or account names.
 * docs/metrics.md lists them.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export const SNOWFLAKE_METRIC = {
  requests: 'floe_snowflake_requests_total',
  requestSeconds: 'floe_snowflake_request_seconds',
  retries: 'floe_snowflake_retries_total',
  rowsAppended: 'floe_snowflake_rows_appended_total',
  bytesAppended: 'floe_snowflake_bytes_appended_total',
  wireBytesAppended: 'floe_snowflake_wire_bytes_appended_total',
  commitLagSeconds: 'floe_snowflake_commit_lag_seconds',
  breakerState: 'floe_snowflake_breaker_state',
  channelReopens: 'floe_snowflake_channel_reopens_total',
} as const;

/** Route templates used as the `route` label. */
export type SnowflakeRoute =
  | 'hostname'
  | 'oauth_token'
  | 'channel_open'
  | 'channel_append'
  | 'channel_drop'
  | 'bulk_channel_status'
  | 'statement_submit'
  | 'statement_poll'
  | 'statement_cancel';

/** `2xx`, `4xx`, `5xx` or `network` (no HTTP answer). */
export type StatusClass = '2xx' | '3xx' | '4xx' | '5xx' | 'network';

export type ReopenReason = 'error_code' | 'conflict' | 'ambiguous' | 'channel_status';

export type BreakerStateName = 'closed' | 'open' | 'half-open';

const BREAKER_GAUGE: Record<BreakerStateName, number> = { closed: 0, 'half-open': 1, open: 2 };

export function statusClass(status: number | undefined): StatusClass {
  if (status === undefined) return 'network';
  if (status >= 500) return '5xx';
  if (status >= 400) return '4xx';
  if (status >= 300) return '3xx';
  return '2xx';
}

export class SnowflakeMetrics {
  readonly #requests: Counter<'route' | 'status_class'>;
  readonly #seconds: Histogram<'route'>;
  readonly #retries: Counter<'route'>;
  readonly #rows: Counter;
  readonly #bytes: Counter;
  readonly #wireBytes: Counter;
  readonly #commitLag: Histogram;
  readonly #breaker: Gauge;
  readonly #reopens: Counter<'reason'>;

  /** Safe to construct more than once per registry (a destination re-created after a restart): metrics are reused. */
  constructor(registry: Registry) {
    const registers = [registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []): Counter<L> =>
      (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: L[] = []): Histogram<L> =>
      (registry.getSingleMetric(name) as Histogram<L> | undefined) ?? new Histogram({ name, help, labelNames, buckets, registers });
    this.#requests = counter(
      SNOWFLAKE_METRIC.requests,
      'HTTP requests to Snowflake, by route template and status class (network = no answer)',
      ['route', 'status_class'],
    );
    this.#seconds = histogram(
      SNOWFLAKE_METRIC.requestSeconds,
      'latency of one HTTP request to Snowflake, by route template',
      [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      ['route'],
    );
    this.#retries = counter(SNOWFLAKE_METRIC.retries, 'requests retried after 429, 5xx or a network error, by route template', ['route']);
    this.#rows = counter(SNOWFLAKE_METRIC.rowsAppended, 'rows accepted by Snowpipe Streaming appends');
    this.#bytes = counter(SNOWFLAKE_METRIC.bytesAppended, 'NDJSON bytes (uncompressed) accepted by Snowpipe Streaming appends');
    this.#wireBytes = counter(SNOWFLAKE_METRIC.wireBytesAppended, 'compressed request bytes accepted by Snowpipe Streaming appends');
    this.#commitLag = histogram(
      SNOWFLAKE_METRIC.commitLagSeconds,
      'time from an append being accepted to its offset token being reported committed',
      [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    );
    this.#breaker =
      (registry.getSingleMetric(SNOWFLAKE_METRIC.breakerState) as Gauge | undefined) ??
      new Gauge({ name: SNOWFLAKE_METRIC.breakerState, help: 'Snowflake circuit breaker: 0 closed, 1 half-open, 2 open', registers });
    this.#reopens = counter(
      SNOWFLAKE_METRIC.channelReopens,
      'Snowpipe Streaming channel reopens (error_code, conflict, ambiguous, channel_status)',
      ['reason'],
    );
  }

  request(route: SnowflakeRoute, status: number | undefined, seconds: number): void {
    this.#requests.inc({ route, status_class: statusClass(status) });
    this.#seconds.observe({ route }, seconds);
  }

  retry(route: SnowflakeRoute): void {
    this.#retries.inc({ route });
  }

  appended(rows: number, bytes: number, wireBytes: number): void {
    this.#rows.inc(rows);
    this.#bytes.inc(bytes);
    this.#wireBytes.inc(wireBytes);
  }

  committed(lagSeconds: number): void {
    this.#commitLag.observe(lagSeconds);
  }

  breakerState(state: BreakerStateName): void {
    this.#breaker.set(BREAKER_GAUGE[state]);
  }

  reopened(reason: ReopenReason): void {
    this.#reopens.inc({ reason });
  }
}
