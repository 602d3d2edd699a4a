/**
 * Alert decisions for the source's WAL (design.md §6). The WAL monitor hands every check to the
 * `AlertManager` (`observe` per slot, `observeWalDir` per source, `observeArchiver` per source, `slotGone`
 * when a slot disappeared); the manager decides what to say and hands alerts to a sink (the webhook
 * notifier), which delivers them in the background.
 *
 * State is kept per (source id, subject) — by id, so renaming a source neither loses nor duplicates an
 * episode — where the subject is a slot (any slot on the server, floe's or not), the pg_wal directory, or
 * the archiver; and per condition:
 *
 *   wal      normal → warning → danger on the slot's retained WAL (pg_current_wal_lsn - restart_lsn).
 *            Going up happens at the threshold; going down only below `resolveRatio` × the threshold
 *            (hysteresis), so a figure hovering at a threshold does not flap. danger → warning is
 *            silent; warning/danger → normal sends `resolved`.
 *   stalled  confirmed_flush_lsn has not moved while WAL grew, for longer than the stall time.
 *   lost     wal_status = lost: the server invalidated the slot (critical).
 *   dir      the same ladder on the pg_wal directory size, with its own thresholds: a full disk is
 *            announced whatever holds the WAL (slots, wal_keep_size, a failing archive_command).
 *   archive  pg_stat_archiver: the last failure is newer than the last success.
 *
 * Each raised condition repeats every `repeatMs` while it holds. `cooldownMs` is the least time
 * between two alerts of the same type for the same subject: a condition that clears and returns within
 * it is not announced again (and its resolution is not announced either, since nobody was told). A slot
 * that disappears (dropped) resolves whatever was announced for it.
 */
import { FloeError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { FloeMetrics } from '../telemetry/metrics.js';

export type AlertType =
  'wal_warning' | 'wal_danger' | 'slot_stalled' | 'slot_lost' | 'wal_dir_warning' | 'wal_dir_danger' | 'archive_failing' | 'resolved';
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
  /** Least time between two alerts of one type for one subject. (Default: 5 min, `FLOE_ALERT_COOLDOWN_MINUTES`) */
  readonly cooldownMs: number;
  /** pg_wal directory size (MiB) for a warning. (Default: `warningMb`, `FLOE_WAL_DIR_WARNING_MB`) */
  readonly dirWarningMb?: number;
  /** pg_wal directory size (MiB) for danger. (Default: `dangerMb`, `FLOE_WAL_DIR_DANGER_MB`) */
  readonly dirDangerMb?: number;
}

export const DEFAULT_ALERT_POLICY: AlertPolicy = {
  warningMb: 3000,
  dangerMb: 6000,
  resolveRatio: 0.9,
  repeatMs: 60 * 60_000,
  cooldownMs: 5 * 60_000,
};

/** Who a slot belongs to, as far as the server shows it. */
export interface SlotOwnership {
  /** `logical` or `physical`. (Default: logical) */
  readonly slotType?: 'logical' | 'physical';
  /** True when a floe pipeline uses the slot. (Default: true) */
  readonly floe?: boolean;
  /** application_name of the process streaming from the slot (pg_stat_activity via active_pid); null when inactive or not visible. */
  readonly owner?: string | null;
  readonly clientAddr?: string | null;
}

/** What the monitor saw of one slot in one check. Numbers are bytes and seconds; null = unknown/unlimited. */
export interface SlotObservation extends SlotOwnership {
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

/** The slot that retains the most WAL, named in directory alerts. */
export interface LargestSlot {
  readonly slot: string;
  readonly retainedBytes: number;
  readonly floe: boolean;
  readonly active: boolean;
  readonly slotType: 'logical' | 'physical';
}

/** One check of the pg_wal directory. */
export interface WalDirObservation {
  readonly sourceId: string;
  readonly sourceName: string;
  /** null: unknown (no pg_monitor privilege): the condition keeps its state. */
  readonly walDirBytes: number | null;
  readonly growthBytesPerSecond: number | null;
  readonly walKeepSizeBytes: number | null;
  readonly largestSlot: LargestSlot | null;
  /** WAL segments waiting for archive_command (`.ready` files); null when unknown. */
  readonly archivePendingFiles: number | null;
}

/** One check of pg_stat_archiver. */
export interface ArchiverObservation {
  readonly sourceId: string;
  readonly sourceName: string;
  /** archive_mode is on (or always). */
  readonly enabled: boolean;
  readonly archivedCount: number;
  readonly lastArchivedWal: string | null;
  readonly lastArchivedAt: string | null;
  readonly failedCount: number;
  readonly lastFailedWal: string | null;
  readonly lastFailedAt: string | null;
  readonly pendingFiles: number | null;
  readonly walDirBytes: number | null;
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
  /** The culprit slot; null for directory and archiver alerts. */
  readonly slot: string | null;
  /** Whose slot it is; null for directory and archiver alerts. */
  readonly slot_info: {
    readonly type: 'logical' | 'physical';
    readonly floe: boolean;
    readonly active: boolean;
    readonly owner: string | null;
    readonly client_addr: string | null;
  } | null;
  readonly message: string;
  /** What to do about it. */
  readonly hint: string;
  readonly figures: {
    readonly retained_wal_bytes: number | null;
    readonly retained_wal_mb: number | null;
    readonly wal_dir_bytes: number | null;
    readonly wal_dir_mb: number | null;
    readonly safe_wal_size_bytes: number | null;
    readonly wal_status: string | null;
    readonly active: boolean | null;
    readonly confirmed_flush_lag_bytes: number | null;
    readonly confirmed_flush_lag_seconds: number | null;
    readonly growth_bytes_per_second: number | null;
    readonly stalled_seconds: number | null;
    /** Directory alerts: WAL kept for wal_keep_size, and the slot retaining the most. */
    readonly wal_keep_size_bytes?: number | null;
    readonly largest_slot?: { readonly slot: string; readonly retained_wal_bytes: number; readonly floe: boolean } | null;
    /** Archiver alerts (and directory alerts when archiving is on): pg_stat_archiver. */
    readonly archive?: {
      readonly failed_count: number;
      readonly last_failed_wal: string | null;
      readonly last_failed_at: string | null;
      readonly archived_count: number;
      readonly last_archived_wal: string | null;
      readonly last_archived_at: string | null;
      readonly pending_files: number | null;
    };
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

type Condition = 'wal' | 'stalled' | 'lost' | 'dir' | 'archive';
type Raised = Exclude<AlertType, 'resolved'>;

interface ConditionState {
  /** Raised type, or undefined while the condition does not hold. */
  raised: Raised | undefined;
  since: number;
  /** Whether anyone was told about the current episode (only then is its resolution announced). */
  announced: boolean;
  /** The most severe type announced in the current episode: what its resolution resolves. */
  worst: Raised | undefined;
  lastSentAt: number;
}

/** Builds the alert for one transition; `resolves` is set for `resolved`. */
type Build = (type: AlertType, resolves: Alert['resolves'], repeat: boolean, since: number, now: number) => Alert;

const MIB = 1024 * 1024;
/** Subject keys of the source-wide conditions; \u0001 cannot occur in a slot name. */
const DIR_SUBJECT = '\u0001pg_wal';
const ARCHIVER_SUBJECT = '\u0001archiver';

const SEVERITY: Record<AlertType, AlertSeverity> = {
  wal_warning: 'warning',
  wal_danger: 'critical',
  slot_stalled: 'warning',
  slot_lost: 'critical',
  wal_dir_warning: 'warning',
  wal_dir_danger: 'critical',
  archive_failing: 'critical',
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
  const dir = dirThresholds(p);
  if (!(dir.warningMb > 0) || dir.warningMb >= dir.dangerMb) {
    throw new FloeError(
      'config',
      `FLOE_WAL_DIR_WARNING_MB (${dir.warningMb}) must be positive and below FLOE_WAL_DIR_DANGER_MB (${dir.dangerMb})`,
      {
        hint: 'unset both to use FLOE_WAL_WARNING_MB and FLOE_WAL_DANGER_MB for the pg_wal directory too',
      },
    );
  }
  if (!(p.resolveRatio > 0 && p.resolveRatio <= 1)) {
    throw new FloeError('config', `FLOE_WAL_RESOLVE_RATIO must be in (0, 1], got ${p.resolveRatio}`);
  }
  if (!(p.repeatMs >= 0) || !(p.cooldownMs >= 0)) {
    throw new FloeError('config', 'alert repeat and cooldown must be >= 0');
  }
  return p;
}

/** The pg_wal directory thresholds: their own when set, else the slot thresholds. */
export function dirThresholds(p: AlertPolicy): AlertThresholds {
  return { warningMb: p.dirWarningMb ?? p.warningMb, dangerMb: p.dirDangerMb ?? p.dangerMb, resolveRatio: p.resolveRatio };
}

/**
 * The alert policy from `FLOE_WAL_WARNING_MB`, `FLOE_WAL_DANGER_MB`, `FLOE_WAL_DIR_WARNING_MB`,
 * `FLOE_WAL_DIR_DANGER_MB`, `FLOE_WAL_RESOLVE_RATIO`, `FLOE_ALERT_REPEAT_MINUTES`, `FLOE_ALERT_COOLDOWN_MINUTES`.
 */
export function alertPolicyFromEnv(env: NodeJS.ProcessEnv = process.env): AlertPolicy {
  const num = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new FloeError('config', `${name} must be a number >= 0, got "${raw}"`);
    return n;
  };
  const optional = (name: string): number | undefined => (env[name]?.trim() ? num(name, 0) : undefined);
  const dirWarningMb = optional('FLOE_WAL_DIR_WARNING_MB');
  const dirDangerMb = optional('FLOE_WAL_DIR_DANGER_MB');
  return validateAlertPolicy({
    warningMb: num('FLOE_WAL_WARNING_MB', DEFAULT_ALERT_POLICY.warningMb),
    dangerMb: num('FLOE_WAL_DANGER_MB', DEFAULT_ALERT_POLICY.dangerMb),
    resolveRatio: num('FLOE_WAL_RESOLVE_RATIO', DEFAULT_ALERT_POLICY.resolveRatio),
    repeatMs: num('FLOE_ALERT_REPEAT_MINUTES', DEFAULT_ALERT_POLICY.repeatMs / 60_000) * 60_000,
    cooldownMs: num('FLOE_ALERT_COOLDOWN_MINUTES', DEFAULT_ALERT_POLICY.cooldownMs / 60_000) * 60_000,
    ...(dirWarningMb !== undefined ? { dirWarningMb } : {}),
    ...(dirDangerMb !== undefined ? { dirDangerMb } : {}),
  });
}

export class AlertManager {
  readonly policy: AlertPolicy;
  readonly #sink: AlertSink | undefined;
  readonly #log: Logger;
  readonly #metrics: FloeMetrics | undefined;
  readonly #now: () => number;
  readonly #states = new Map<string, Partial<Record<Condition, ConditionState>>>();

  constructor(options: { policy?: AlertPolicy; sink?: AlertSink; log: Logger; metrics?: FloeMetrics; now?: () => number }) {
    this.policy = validateAlertPolicy(options.policy ?? DEFAULT_ALERT_POLICY);
    this.#sink = options.sink;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#now = options.now ?? Date.now;
  }

  /** Feeds one slot check; raises, repeats or resolves alerts. */
  observe(o: SlotObservation): void {
    const build: Build = (...args) => slotAlert(o, ...args, this.policy);
    const lost = o.walStatus === 'lost';
    this.#step(o.sourceId, o.slot, 'lost', lost ? 'slot_lost' : undefined, build);
    // A lost slot retains nothing and cannot stall: only the loss is worth telling.
    this.#step(o.sourceId, o.slot, 'stalled', !lost && o.stalledSeconds !== null ? 'slot_stalled' : undefined, build);
    const raised = this.#state(o.sourceId, o.slot, 'wal').raised;
    this.#step(
      o.sourceId,
      o.slot,
      'wal',
      lost ? undefined : level(raised, o.retainedBytes, this.policy, 'wal_warning', 'wal_danger'),
      build,
    );
  }

  /**
   * The slot no longer exists (dropped): whatever was announced for it is resolved, with its last
   * observation as the figures.
   */
  slotGone(last: SlotObservation): void {
    const gone: SlotObservation = { ...last, walStatus: 'dropped', active: false, retainedBytes: null, stalledSeconds: null };
    const build: Build = (...args) => slotAlert(gone, ...args, this.policy);
    for (const c of ['lost', 'stalled', 'wal'] as const) this.#step(last.sourceId, last.slot, c, undefined, build);
    this.#states.delete(key(last.sourceId, last.slot));
  }

  /** Feeds one check of the pg_wal directory size against the directory thresholds. */
  observeWalDir(o: WalDirObservation): void {
    const t = dirThresholds(this.policy);
    const raised = this.#state(o.sourceId, DIR_SUBJECT, 'dir').raised;
    const next = level(raised, o.walDirBytes, t, 'wal_dir_warning', 'wal_dir_danger');
    this.#step(o.sourceId, DIR_SUBJECT, 'dir', next, (...args) => dirAlert(o, ...args, t));
  }

  /** Feeds one check of pg_stat_archiver: failing while the last failure is newer than the last success. */
  observeArchiver(o: ArchiverObservation): void {
    const failing =
      o.enabled && o.lastFailedAt !== null && (o.lastArchivedAt === null || Date.parse(o.lastFailedAt) > Date.parse(o.lastArchivedAt));
    this.#step(o.sourceId, ARCHIVER_SUBJECT, 'archive', failing ? 'archive_failing' : undefined, (...args) =>
      archiverAlert(o, ...args, this.policy),
    );
  }

  /** Forgets a source's states (it was removed, or another worker watches it now); nothing is sent. */
  forgetSource(sourceId: string): void {
    for (const k of this.#states.keys()) if (k.startsWith(`${sourceId}\u0000`)) this.#states.delete(k);
  }

  #state(sourceId: string, subject: string, c: Condition): ConditionState {
    const k = key(sourceId, subject);
    let states = this.#states.get(k);
    if (!states) this.#states.set(k, (states = {}));
    return (states[c] ??= { raised: undefined, since: 0, announced: false, worst: undefined, lastSentAt: -Infinity });
  }

  #step(sourceId: string, subject: string, c: Condition, next: Raised | undefined, build: Build): void {
    const s = this.#state(sourceId, subject, c);
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
        if (tell) this.#emit(build('resolved', cleared, false, since, now));
      }
      return;
    }
    if (s.raised === next) {
      if (s.announced && repeatMs > 0 && now - s.lastSentAt >= repeatMs) {
        s.lastSentAt = now;
        this.#emit(build(next, null, true, s.since, now));
      } else if (!s.announced && now - s.lastSentAt >= cooldownMs) {
        // Held back by the cooldown when it began: announce it now that the cooldown has passed.
        s.announced = true;
        s.worst = next;
        s.lastSentAt = now;
        this.#emit(build(next, null, false, s.since, now));
      }
      return;
    }
    const danger = next === 'wal_danger' || next === 'wal_dir_danger';
    const escalation = s.raised === undefined || danger;
    if (s.raised === undefined) s.since = now;
    s.raised = next;
    if (!escalation) return; // danger → warning: the figure is falling; say nothing until it resolves
    // Escalation to danger is never held back by the cooldown.
    if (danger || now - s.lastSentAt >= cooldownMs) {
      s.announced = true;
      s.worst = next;
      s.lastSentAt = now;
      this.#emit(build(next, null, false, s.since, now));
    }
  }

  #emit(alert: Alert): void {
    this.#metrics?.alertRaised(alert.type);
    const level = alert.severity === 'critical' ? 'error' : alert.severity === 'warning' ? 'warn' : 'info';
    this.#log[level](
      {
        alert: alert.type,
        resolves: alert.resolves,
        repeat: alert.repeat,
        source: alert.source.name,
        sourceId: alert.source.id,
        slot: alert.slot,
      },
      alert.message,
    );
    this.#sink?.deliver(alert);
  }
}

function key(sourceId: string, subject: string): string {
  return `${sourceId}\u0000${subject}`;
}

/** The warning/danger ladder with hysteresis; an unknown figure keeps the raised level. */
function level<W extends Raised, D extends Raised>(
  raised: Raised | undefined,
  bytes: number | null,
  t: AlertThresholds,
  warning: W,
  danger: D,
): W | D | undefined {
  if (bytes === null) return raised === warning || raised === danger ? (raised as W | D) : undefined;
  const mb = bytes / MIB;
  const { warningMb, dangerMb, resolveRatio } = t;
  if (mb >= dangerMb || (raised === danger && mb >= dangerMb * resolveRatio)) return danger;
  if (mb >= warningMb || (raised !== undefined && mb >= warningMb * resolveRatio)) return warning;
  return undefined;
}

const mb = (b: number | null | undefined) => (b === null || b === undefined ? null : Math.round((b / MIB) * 100) / 100);

/** What to do about a slot, by whose it is and what it is doing. */
function slotHint(o: SlotObservation, type: AlertType): string {
  const drop = `SELECT pg_drop_replication_slot('${o.slot}')`;
  if (o.floe ?? true) {
    if (type === 'slot_lost')
      return "floe recreates the slot and resyncs every table at the pipeline's next start; raise max_slot_wal_keep_size or fix what kept the pipeline from keeping up";
    return o.active
      ? 'the floe pipeline is behind: check floe status and its destination (a slow or failing destination holds the slot back)'
      : 'no floe worker streams from this slot: start or resume its pipeline (floe status shows it), or delete the pipeline with --drop-slot if it is no longer wanted';
  }
  if (type === 'slot_lost') return `the slot is unusable: its consumer must be re-seeded; drop it when no longer needed (${drop})`;
  if (o.slotType === 'physical') {
    return o.active
      ? `the standby${o.owner ? ` ${o.owner}` : ''}${o.clientAddr ? ` at ${o.clientAddr}` : ''} is lagging: look at its replay (pg_stat_replication on this server, the standby's logs)`
      : `no standby is connected to this physical slot: reconnect the replica, or if it is gone for good, drop the slot (${drop})`;
  }
  return o.active
    ? `its consumer${o.owner ? ` (${o.owner})` : ''} is not keeping up: look at that consumer; floe does not own this slot`
    : `nothing consumes this slot and floe does not own it: if it is abandoned, drop it (${drop}); otherwise restart its consumer`;
}

function slotAlert(
  o: SlotObservation,
  type: AlertType,
  resolves: Alert['resolves'],
  repeat: boolean,
  since: number,
  now: number,
  p: AlertPolicy,
): Alert {
  const retainedMb = mb(o.retainedBytes);
  const kind = `${(o.floe ?? true) ? "floe's" : 'non-floe'} ${o.active ? 'active' : 'inactive'} ${o.slotType ?? 'logical'} slot`;
  const where = `${kind} ${o.slot} on source ${o.sourceName}`;
  const what: Record<AlertType, string> = {
    wal_warning: `${where} retains ${retainedMb} MB of WAL (warning threshold ${p.warningMb} MB)`,
    wal_danger: `${where} retains ${retainedMb} MB of WAL (danger threshold ${p.dangerMb} MB)`,
    slot_stalled: `${where} has not confirmed any WAL for ${Math.round(o.stalledSeconds ?? 0)} s while WAL grows`,
    slot_lost: `${where} was invalidated by the server (wal_status = lost)${(o.floe ?? true) ? '; the pipeline must resync every table' : ''}`,
    wal_dir_warning: '',
    wal_dir_danger: '',
    archive_failing: '',
    resolved:
      o.walStatus === 'dropped'
        ? `${where}: ${resolves ?? 'alert'} resolved (the slot was dropped)`
        : `${where}: ${resolves ?? 'alert'} resolved (retained WAL ${retainedMb} MB)`,
  };
  return {
    type,
    severity: SEVERITY[type],
    resolves,
    repeat,
    source: { id: o.sourceId, name: o.sourceName },
    slot: o.slot,
    slot_info: {
      type: o.slotType ?? 'logical',
      floe: o.floe ?? true,
      active: o.active,
      owner: o.owner ?? null,
      client_addr: o.clientAddr ?? null,
    },
    message: (repeat ? 'still: ' : '') + what[type],
    hint: type === 'resolved' ? 'nothing to do' : slotHint(o, type),
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

/** Source-wide alerts (directory, archiver) carry no slot figures. */
function sourceFigures(walDirBytes: number | null, growth: number | null): Alert['figures'] {
  return {
    retained_wal_bytes: null,
    retained_wal_mb: null,
    wal_dir_bytes: walDirBytes,
    wal_dir_mb: mb(walDirBytes),
    safe_wal_size_bytes: null,
    wal_status: null,
    active: null,
    confirmed_flush_lag_bytes: null,
    confirmed_flush_lag_seconds: null,
    growth_bytes_per_second: growth,
    stalled_seconds: null,
  };
}

/** What holds the directory's WAL, in the order an operator should look. */
function dirCulprit(o: WalDirObservation): { says: string; hint: string } {
  const big = o.largestSlot;
  const dir = o.walDirBytes ?? 0;
  // A slot holding most of the directory is the culprit; otherwise the WAL is kept for other reasons.
  if (big && big.retainedBytes >= dir / 2) {
    const whose = `${big.floe ? "floe's" : 'non-floe'} ${big.active ? 'active' : 'inactive'} ${big.slotType} slot ${big.slot}`;
    return {
      says: `; ${whose} retains ${mb(big.retainedBytes)} MB`,
      hint: big.floe
        ? "floe's own pipeline is behind or stopped: see floe status"
        : `look at slot ${big.slot} (see its own alert); drop it if abandoned (SELECT pg_drop_replication_slot('${big.slot}'))`,
    };
  }
  const keep = o.walKeepSizeBytes ?? 0;
  const parts = [
    big ? `the largest slot (${big.slot}) retains only ${mb(big.retainedBytes)} MB` : 'no slot retains WAL',
    `wal_keep_size keeps ${mb(keep)} MB`,
  ];
  if (o.archivePendingFiles) parts.push(`${o.archivePendingFiles} segments wait for archive_command`);
  return {
    says: `; ${parts.join(', ')}`,
    hint: o.archivePendingFiles
      ? 'WAL waits for archiving: check archive_command (pg_stat_archiver) and the archive destination'
      : keep >= dir / 2
        ? 'wal_keep_size holds this WAL: lower wal_keep_size, or give pg_wal more disk'
        : 'no slot is at fault: check max_wal_size and min_wal_size, long checkpoints, and the free space of the pg_wal disk',
  };
}

function dirAlert(
  o: WalDirObservation,
  type: AlertType,
  resolves: Alert['resolves'],
  repeat: boolean,
  since: number,
  now: number,
  t: AlertThresholds,
): Alert {
  const where = `pg_wal on source ${o.sourceName}`;
  const dirMb = mb(o.walDirBytes);
  const culprit = dirCulprit(o);
  const message =
    type === 'resolved'
      ? `${where}: ${resolves ?? 'alert'} resolved (pg_wal ${dirMb} MB)`
      : `${where} holds ${dirMb} MB (${type === 'wal_dir_danger' ? `danger threshold ${t.dangerMb}` : `warning threshold ${t.warningMb}`} MB)${culprit.says}`;
  const big = o.largestSlot;
  return {
    type,
    severity: SEVERITY[type],
    resolves,
    repeat,
    source: { id: o.sourceId, name: o.sourceName },
    slot: null,
    slot_info: null,
    message: (repeat ? 'still: ' : '') + message,
    hint: type === 'resolved' ? 'nothing to do' : culprit.hint,
    figures: {
      ...sourceFigures(o.walDirBytes, o.growthBytesPerSecond),
      wal_keep_size_bytes: o.walKeepSizeBytes,
      largest_slot: big ? { slot: big.slot, retained_wal_bytes: big.retainedBytes, floe: big.floe } : null,
    },
    thresholds: { warning_mb: t.warningMb, danger_mb: t.dangerMb, resolve_ratio: t.resolveRatio },
    forecast: { seconds_until_danger: null, seconds_until_safe_wal_exhausted: null },
    since: new Date(since).toISOString(),
    timestamp: new Date(now).toISOString(),
  };
}

function archiverAlert(
  o: ArchiverObservation,
  type: AlertType,
  resolves: Alert['resolves'],
  repeat: boolean,
  since: number,
  now: number,
  p: AlertPolicy,
): Alert {
  const where = `archive_command on source ${o.sourceName}`;
  const message =
    type === 'resolved'
      ? `${where}: archiving works again (last archived ${o.lastArchivedWal ?? 'nothing'})`
      : `${where} fails for WAL file ${o.lastFailedWal ?? '?'} (${o.failedCount} failures, last at ${o.lastFailedAt}; last success ${o.lastArchivedAt ?? 'never'})`;
  return {
    type,
    severity: SEVERITY[type],
    resolves,
    repeat,
    source: { id: o.sourceId, name: o.sourceName },
    slot: null,
    slot_info: null,
    message: (repeat ? 'still: ' : '') + message,
    hint:
      type === 'resolved'
        ? 'nothing to do'
        : `fix archive_command or the archive destination (the server log shows the command's error for ${o.lastFailedWal ?? 'the segment'}); until it succeeds every WAL segment stays in pg_wal`,
    figures: {
      ...sourceFigures(o.walDirBytes, null),
      archive: {
        failed_count: o.failedCount,
        last_failed_wal: o.lastFailedWal,
        last_failed_at: o.lastFailedAt,
        archived_count: o.archivedCount,
        last_archived_wal: o.lastArchivedWal,
        last_archived_at: o.lastArchivedAt,
        pending_files: o.pendingFiles,
      },
    },
    thresholds: { warning_mb: p.warningMb, danger_mb: p.dangerMb, resolve_ratio: p.resolveRatio },
    forecast: { seconds_until_danger: null, seconds_until_safe_wal_exhausted: null },
    since: new Date(since).toISOString(),
    timestamp: new Date(now).toISOString(),
  };
}
