/**
 * Alert decisions for WAL and slot health (design.md §6). The WAL monitor hands every slot check to
 * `AlertManager.observe`; the manager decides what to say and hands alerts to a sink (the webhook
 * notifier), which delivers them in the background.
 *
 * State is kept per (source id, slot) — by id, so renaming a source neither loses nor duplicates an
 * episode — and per condition:
 *
 *   wal      normal → warning → danger on the slot's retained WAL (pg_current_wal_lsn - restart_lsn).
 *            Going up happens at the threshold; going down only below `resolveRatio` × the threshold
 *            (hysteresis), so a figure hovering at a threshold does not flap. danger → warning is
 *            silent; warning/danger → normal sends `resolved`.
 *   stalled  confirmed_flush_lsn has not moved while WAL grew, for longer than the stall time.
 *   lost     wal_status = lost: the server invalidated the slot (critical).
 *
 * Each raised condition repeats every `repeatMs` while it holds. `cooldownMs` is the least time
 * between two alerts of the same type for the same slot: a condition that clears and returns within
 * it is not announced again (and its resolution is not announced either, since nobody was told).
 *
 * Thresholds compare the WAL *this slot* retains, which is what floe can act on; the pg_wal directory
 * size (shared by every slot, wal_keep_size and min_wal_size) is reported as a figure and a metric.
 */
import { FloeError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { FloeMetrics } from '../telemetry/metrics.js';

export type AlertType = 'wal_warning' | 'wal_danger' | 'slot_stalled' | 'slot_lost' | 'resolved';
export type AlertSeverity = 'info' | 'warning' | 'critical';

export interface AlertThresholds {
  /** Retained WAL (MiB) at which a warning is raised. (Default: 3000, `FLOE_WAL_WARNING_MB`) */
  readonly warningMb: number;
  /** Retained WAL (MiB) at which danger is raised. (Default: 6000, `FLOE_WAL_DANGER_MB`) */
  readonly dangerMb: number;
  /** A raised level clears only below this fraction of its threshold. (Default: 0.9, `FLOE_WAL_RESOLVE_RATIO`) */
  readonly resolveRatio: number;
}

export interface AlertPolicy extends AlertThresholds {
  /** Repeat a raised condition this often while it holds; 0 = never. (Default: 60 min, `FLOE_ALERT_REPEAT_MINUTES`) */
  readonly repeatMs: number;
  /** Least time between two alerts of one type for one slot. (Default: 5 min, `FLOE_ALERT_COOLDOWN_MINUTES`) */
  readonly cooldownMs: number;
}

export const DEFAULT_ALERT_POLICY: AlertPolicy = {
  warningMb: 3000,
  dangerMb: 6000,
  resolveRatio: 0.9,
  repeatMs: 60 * 60_000,
  cooldownMs: 5 * 60_000,
};

/** What the monitor saw of one slot in one check. Numbers are bytes and seconds; null = unknown/unlimited. */
export interface SlotObservation {
  readonly sourceId: string;
  readonly sourceName: string;
  readonly slot: string;
  readonly walStatus: string;
  readonly active: boolean;
  readonly retainedBytes: number | null;
  readonly walDirBytes: number | null;
  readonly safeWalSizeBytes: number | null;
  readonly confirmedFlushLagBytes: number | null;
  readonly confirmedFlushLagSeconds: number | null;
  readonly growthBytesPerSecond: number | null;
  readonly secondsUntilDanger: number | null;
  readonly secondsUntilSafeWalExhausted: number | null;
  /** Seconds confirmed_flush has not moved while WAL grew, once past the stall time; else null. */
  readonly stalledSeconds: number | null;
}

/** The generic alert (docs/operations.md documents its JSON form). */
export interface Alert {
  readonly type: AlertType;
  readonly severity: AlertSeverity;
  /** For `resolved`: the type that cleared. */
  readonly resolves: Exclude<AlertType, 'resolved'> | null;
  /** True when this repeats an alert already sent for the same episode. */
  readonly repeat: boolean;
  readonly source: { readonly id: string; readonly name: string };
  readonly slot: string;
  readonly message: string;
  readonly figures: {
    readonly retained_wal_bytes: number | null;
    readonly retained_wal_mb: number | null;
    readonly wal_dir_bytes: number | null;
    readonly wal_dir_mb: number | null;
    readonly safe_wal_size_bytes: number | null;
    readonly wal_status: string;
    readonly active: boolean;
    readonly confirmed_flush_lag_bytes: number | null;
    readonly confirmed_flush_lag_seconds: number | null;
    readonly growth_bytes_per_second: number | null;
    readonly stalled_seconds: number | null;
  };
  readonly thresholds: { readonly warning_mb: number; readonly danger_mb: number; readonly resolve_ratio: number };
  readonly forecast: { readonly seconds_until_danger: number | null; readonly seconds_until_safe_wal_exhausted: number | null };
  /** When the condition was first seen (RFC 3339). */
  readonly since: string;
  /** When this alert was raised (RFC 3339). */
  readonly timestamp: string;
}

/** Where alerts go. `deliver` must return at once: delivery happens in the background. */
export interface AlertSink {
  deliver(alert: Alert): void;
}

type Condition = 'wal' | 'stalled' | 'lost';
type WalLevel = 'normal' | 'warning' | 'danger';

interface ConditionState {
  /** Raised type, or undefined while the condition does not hold. */
  raised: Exclude<AlertType, 'resolved'> | undefined;
  since: number;
  /** Whether anyone was told about the current episode (only then is its resolution announced). */
  announced: boolean;
  /** The most severe type announced in the current episode: what its resolution resolves. */
  worst: Exclude<AlertType, 'resolved'> | undefined;
  lastSentAt: number;
}

const MIB = 1024 * 1024;

const SEVERITY: Record<AlertType, AlertSeverity> = {
  wal_warning: 'warning',
  wal_danger: 'critical',
  slot_stalled: 'warning',
  slot_lost: 'critical',
  resolved: 'info',
};

/** Validates thresholds (warning < danger, positive, ratio in (0, 1]). */
export function validateAlertPolicy(p: AlertPolicy): AlertPolicy {
  if (!(p.warningMb > 0) || !(p.dangerMb > 0)) {
    throw new FloeError('config', 'WAL thresholds must be positive numbers of MiB', {
      hint: 'set FLOE_WAL_WARNING_MB and FLOE_WAL_DANGER_MB',
    });
  }
  if (p.warningMb >= p.dangerMb) {
    throw new FloeError('config', `FLOE_WAL_WARNING_MB (${p.warningMb}) must be below FLOE_WAL_DANGER_MB (${p.dangerMb})`, {
      hint: 'raise the danger threshold or lower the warning threshold',
    });
  }
  if (!(p.resolveRatio > 0 && p.resolveRatio <= 1)) {
    throw new FloeError('config', `FLOE_WAL_RESOLVE_RATIO must be in (0, 1], got ${p.resolveRatio}`);
  }
  if (!(p.repeatMs >= 0) || !(p.cooldownMs >= 0)) {
    throw new FloeError('config', 'alert repeat and cooldown must be >= 0');
  }
  return p;
}

/** The alert policy from `FLOE_WAL_WARNING_MB`, `FLOE_WAL_DANGER_MB`, `FLOE_WAL_RESOLVE_RATIO`, `FLOE_ALERT_REPEAT_MINUTES`, `FLOE_ALERT_COOLDOWN_MINUTES`. */
export function alertPolicyFromEnv(env: NodeJS.ProcessEnv = process.env): AlertPolicy {
  const num = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new FloeError('config', `${name} must be a number >= 0, got "${raw}"`);
    return n;
  };
  return validateAlertPolicy({
    warningMb: num('FLOE_WAL_WARNING_MB', DEFAULT_ALERT_POLICY.warningMb),
    dangerMb: num('FLOE_WAL_DANGER_MB', DEFAULT_ALERT_POLICY.dangerMb),
    resolveRatio: num('FLOE_WAL_RESOLVE_RATIO', DEFAULT_ALERT_POLICY.resolveRatio),
    repeatMs: num('FLOE_ALERT_REPEAT_MINUTES', DEFAULT_ALERT_POLICY.repeatMs / 60_000) * 60_000,
    cooldownMs: num('FLOE_ALERT_COOLDOWN_MINUTES', DEFAULT_ALERT_POLICY.cooldownMs / 60_000) * 60_000,
  });
}

export class AlertManager {
  readonly policy: AlertPolicy;
  readonly #sink: AlertSink | undefined;
  readonly #log: Logger;
  readonly #metrics: FloeMetrics | undefined;
  readonly #now: () => number;
  readonly #states = new Map<string, Record<Condition, ConditionState>>();

  constructor(options: { policy?: AlertPolicy; sink?: AlertSink; log: Logger; metrics?: FloeMetrics; now?: () => number }) {
    this.policy = validateAlertPolicy(options.policy ?? DEFAULT_ALERT_POLICY);
    this.#sink = options.sink;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#now = options.now ?? Date.now;
  }

  /** Feeds one slot check; raises, repeats or resolves alerts. */
  observe(o: SlotObservation): void {
    const key = `${o.sourceId}\u0000${o.slot}`;
    let state = this.#states.get(key);
    if (!state) {
      const fresh = (): ConditionState => ({ raised: undefined, since: 0, announced: false, worst: undefined, lastSentAt: -Infinity });
      this.#states.set(key, (state = { wal: fresh(), stalled: fresh(), lost: fresh() }));
    }
    const lost = o.walStatus === 'lost';
    this.#step(o, state.lost, lost ? 'slot_lost' : undefined);
    // A lost slot retains nothing and cannot stall: only the loss is worth telling.
    this.#step(o, state.stalled, !lost && o.stalledSeconds !== null ? 'slot_stalled' : undefined);
    this.#step(o, state.wal, lost ? undefined : this.#walLevel(state.wal.raised, o.retainedBytes));
  }

  /** Forgets a source's states (it was removed); nothing is sent. */
  forgetSource(sourceId: string): void {
    for (const key of this.#states.keys()) if (key.startsWith(`${sourceId}\u0000`)) this.#states.delete(key);
  }

  #walLevel(raised: ConditionState['raised'], retainedBytes: number | null): 'wal_warning' | 'wal_danger' | undefined {
    if (retainedBytes === null) return raised === 'wal_warning' || raised === 'wal_danger' ? raised : undefined;
    const mb = retainedBytes / MIB;
    const { warningMb, dangerMb, resolveRatio } = this.policy;
    const current: WalLevel = raised === 'wal_danger' ? 'danger' : raised === 'wal_warning' ? 'warning' : 'normal';
    let level: WalLevel;
    if (mb >= dangerMb) level = 'danger';
    else if (current === 'danger' && mb >= dangerMb * resolveRatio) level = 'danger';
    else if (mb >= warningMb) level = 'warning';
    else if (current !== 'normal' && mb >= warningMb * resolveRatio) level = 'warning';
    else level = 'normal';
    return level === 'danger' ? 'wal_danger' : level === 'warning' ? 'wal_warning' : undefined;
  }

  #step(o: SlotObservation, s: ConditionState, next: ConditionState['raised']): void {
    const now = this.#now();
    const { cooldownMs, repeatMs } = this.policy;
    if (next === undefined) {
      if (s.raised !== undefined) {
        const cleared = s.worst ?? s.raised;
        const since = s.since;
        const tell = s.announced;
        s.raised = undefined;
        s.announced = false;
        s.worst = undefined;
        if (tell) this.#emit(o, 'resolved', cleared, false, since, now);
      }
      return;
    }
    if (s.raised === next) {
      if (s.announced && repeatMs > 0 && now - s.lastSentAt >= repeatMs) {
        s.lastSentAt = now;
        this.#emit(o, next, null, true, s.since, now);
      } else if (!s.announced && now - s.lastSentAt >= cooldownMs) {
        // Held back by the cooldown when it began: announce it now that the cooldown has passed.
        s.announced = true;
        s.worst = next;
        s.lastSentAt = now;
        this.#emit(o, next, null, false, s.since, now);
      }
      return;
    }
    const escalation = s.raised === undefined || (s.raised === 'wal_warning' && next === 'wal_danger');
    if (s.raised === undefined) s.since = now;
    s.raised = next;
    if (!escalation) return; // danger → warning: the figure is falling; say nothing until it resolves
    if (s.raised === 'wal_danger' || now - s.lastSentAt >= cooldownMs) {
      s.announced = true;
      s.worst = next;
      s.lastSentAt = now;
      this.#emit(o, next, null, false, s.since, now);
    }
  }

  #emit(o: SlotObservation, type: AlertType, resolves: Alert['resolves'], repeat: boolean, since: number, now: number): void {
    const alert = buildAlert(o, type, resolves, repeat, since, now, this.policy);
    this.#metrics?.alertRaised(type);
    const level = alert.severity === 'critical' ? 'error' : alert.severity === 'warning' ? 'warn' : 'info';
    this.#log[level]({ alert: type, resolves, repeat, source: o.sourceName, sourceId: o.sourceId, slot: o.slot }, alert.message);
    this.#sink?.deliver(alert);
  }
}

function buildAlert(
  o: SlotObservation,
  type: AlertType,
  resolves: Alert['resolves'],
  repeat: boolean,
  since: number,
  now: number,
  p: AlertThresholds,
): Alert {
  const mb = (b: number | null) => (b === null ? null : Math.round((b / MIB) * 100) / 100);
  const retainedMb = mb(o.retainedBytes);
  const where = `slot ${o.slot} on source ${o.sourceName}`;
  const what: Record<AlertType, string> = {
    wal_warning: `${where} retains ${retainedMb} MB of WAL (warning threshold ${p.warningMb} MB)`,
    wal_danger: `${where} retains ${retainedMb} MB of WAL (danger threshold ${p.dangerMb} MB)`,
    slot_stalled: `${where} has not confirmed any WAL for ${Math.round(o.stalledSeconds ?? 0)} s while WAL grows`,
    slot_lost: `${where} was invalidated by the server (wal_status = lost); the pipeline must resync every table`,
    resolved: `${where}: ${resolves ?? 'alert'} resolved (retained WAL ${retainedMb} MB)`,
  };
  return {
    type,
    severity: SEVERITY[type],
    resolves,
    repeat,
    source: { id: o.sourceId, name: o.sourceName },
    slot: o.slot,
    message: (repeat ? 'still: ' : '') + what[type],
    figures: {
      retained_wal_bytes: o.retainedBytes,
      retained_wal_mb: retainedMb,
      wal_dir_bytes: o.walDirBytes,
      wal_dir_mb: mb(o.walDirBytes),
      safe_wal_size_bytes: o.safeWalSizeBytes,
      wal_status: o.walStatus,
      active: o.active,
      confirmed_flush_lag_bytes: o.confirmedFlushLagBytes,
      confirmed_flush_lag_seconds: o.confirmedFlushLagSeconds,
      growth_bytes_per_second: o.growthBytesPerSecond,
      stalled_seconds: o.stalledSeconds,
    },
    thresholds: { warning_mb: p.warningMb, danger_mb: p.dangerMb, resolve_ratio: p.resolveRatio },
    forecast: { seconds_until_danger: o.secondsUntilDanger, seconds_until_safe_wal_exhausted: o.secondsUntilSafeWalExhausted },
    since: new Date(since).toISOString(),
    timestamp: new Date(now).toISOString(),
  };
}
