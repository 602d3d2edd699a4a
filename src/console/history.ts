/**
 * What the console shows beyond the control-plane rows, kept in memory and bounded:
 * - PipelineHistory: lag, throughput and retained WAL of every pipeline over the last hour, one sample
 *   per interval (a ring of at most `windowMs / intervalMs` points per pipeline);
 * - RecentAlerts: the last alerts the WAL monitor raised (an AlertSink that forwards to the real one);
 * - SourceHealthBoard: the WAL monitor's latest check of each source.
 * A worker that restarts starts with empty charts; the control plane keeps the current figures.
 */
import type { Alert, AlertSink } from '../monitor/alerts.js';
import type { SourceHealth } from '../monitor/wal-monitor.js';
import { parseLsn } from '../postgres/lsn.js';

export interface HistorySample {
  /** Milliseconds since the epoch. */
  readonly t: number;
  readonly lag_bytes: number | null;
  readonly lag_seconds: number | null;
  readonly retained_wal_bytes: number | null;
  /** WAL bytes per second made durable in the destination since the previous sample. */
  readonly throughput_bytes_per_second: number | null;
}

export interface PipelineFigures {
  readonly name: string;
  readonly lag_bytes: number | null;
  readonly lag_seconds: number | null;
  readonly slot_retained_bytes: number | null;
  readonly durable_lsn: string | null;
}

export const HISTORY_WINDOW_MS = 60 * 60_000;

export class PipelineHistory {
  readonly #rings = new Map<string, HistorySample[]>();
  readonly #last = new Map<string, { t: number; lsn: bigint }>();
  readonly #max: number;
  readonly #windowMs: number;

  constructor(options: { intervalMs: number; windowMs?: number }) {
    this.#windowMs = options.windowMs ?? HISTORY_WINDOW_MS;
    this.#max = Math.max(2, Math.ceil(this.#windowMs / options.intervalMs) + 1);
  }

  /** One sample of every pipeline; pipelines no longer listed are forgotten. */
  record(pipelines: readonly PipelineFigures[], now = Date.now()): void {
    const seen = new Set<string>();
    for (const p of pipelines) {
      seen.add(p.name);
      let ring = this.#rings.get(p.name);
      if (!ring) this.#rings.set(p.name, (ring = []));
      ring.push({
        t: now,
        lag_bytes: p.lag_bytes,
        lag_seconds: p.lag_seconds,
        retained_wal_bytes: p.slot_retained_bytes,
        throughput_bytes_per_second: this.#throughput(p, now),
      });
      while (ring.length > this.#max || (ring.length > 0 && ring[0]!.t < now - this.#windowMs)) ring.shift();
    }
    for (const name of [...this.#rings.keys()]) {
      if (!seen.has(name)) {
        this.#rings.delete(name);
        this.#last.delete(name);
      }
    }
  }

  samples(pipeline: string): readonly HistorySample[] {
    return this.#rings.get(pipeline) ?? [];
  }

  #throughput(p: PipelineFigures, now: number): number | null {
    if (p.durable_lsn === null) return null;
    let lsn: bigint;
    try {
      lsn = parseLsn(p.durable_lsn);
    } catch {
      return null;
    }
    const prev = this.#last.get(p.name);
    this.#last.set(p.name, { t: now, lsn });
    // A recreated slot starts over at a lower LSN: no rate across that.
    if (!prev || now <= prev.t || lsn < prev.lsn) return null;
    return Number(lsn - prev.lsn) / ((now - prev.t) / 1000);
  }
}

export interface RecentAlert {
  readonly type: string;
  readonly severity: string;
  readonly source: string;
  /** null for source-wide alerts (pg_wal directory, archiver). */
  readonly slot: string | null;
  readonly message: string;
  readonly since: string;
  readonly timestamp: string;
}

/** Keeps the last `max` alerts and passes every alert on to `next` (the webhook, if any). */
export class RecentAlerts implements AlertSink {
  readonly #alerts: RecentAlert[] = [];
  constructor(
    private readonly next: AlertSink | undefined,
    private readonly max = 100,
  ) {}

  deliver(alert: Alert): void {
    this.#alerts.push({
      type: alert.type,
      severity: alert.severity,
      source: alert.source.name,
      slot: alert.slot,
      message: alert.message,
      since: alert.since,
      timestamp: alert.timestamp,
    });
    if (this.#alerts.length > this.max) this.#alerts.shift();
    this.next?.deliver(alert);
  }

  /** Newest first. */
  list(): readonly RecentAlert[] {
    return [...this.#alerts].reverse();
  }
}

/** The WAL monitor's latest figures per source (fed by WalMonitor's onCheck). */
export class SourceHealthBoard {
  readonly #sources = new Map<string, SourceHealth>();
  constructor(readonly thresholds: { readonly warningMb: number; readonly dangerMb: number }) {}

  update(health: SourceHealth): void {
    this.#sources.set(health.id, health);
  }

  list(): readonly SourceHealth[] {
    return [...this.#sources.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
}
