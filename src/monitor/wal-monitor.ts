/**
 * WalMonitor: the source's guardian against a full disk, on an interval (design.md §6).
 *
 * Per source: the pg_wal directory size (`pg_ls_waldir()`, needs `pg_monitor`; without it one warning and
 * the figure stays unknown), the WAL write rate, `wal_keep_size`, and the archiver (`pg_stat_archiver`,
 * segments waiting in archive_status). Per slot — every permanent slot on the server, logical and
 * physical, active or not, floe's or not: retained WAL (`pg_current_wal_lsn() - restart_lsn`),
 * `wal_status`, `safe_wal_size`, active, who streams from it (application_name and address of its
 * `active_pid`, visible with `pg_monitor`), confirmed-flush lag in bytes and seconds, the retained WAL's
 * growth rate and forecasts (time until the danger threshold, time until `safe_wal_size` runs out), and
 * stall detection. A slot is floe's when a floe pipeline uses it (`MonitoredSource.slots`, or the claim's
 * list of every pipeline's slot on the source) or a floe walsender (`floe-<pipeline>`) streams from it.
 * Each check goes to the AlertManager and the metrics; `snapshot()` returns the last figures for
 * `floe status` and /readyz. Temporary slots are left out: they end with their session.
 *
 * One watcher per source: within a process, a source is one entry however many pipelines use it; across
 * processes, an optional `SourceClaim` (floe run: a lease row in the control plane, source-lease.ts)
 * lets exactly one worker check a source at a time; the others skip it and send nothing.
 *
 * Lag in seconds: PostgreSQL does not record when a WAL position was written, so the monitor remembers
 * when it first saw each `pg_current_wal_lsn()`; a slot's lag is the age of the oldest remembered
 * position its confirmed_flush_lsn has not reached (0 when caught up). Resolution: one interval.
 *
 * Load on the sources (the predecessor's pool-per-source without a cap is what this avoids):
 * - checks run through one concurrency limit across all sources (p-limit);
 * - a source is checked at most once per `minIntervalPerSourceMs`;
 * - each source has a pool of one connection (application_name `floe-monitor`, statement_timeout set
 *   in the startup packet, idle timeout), and the pools together never hold more than `maxConnections`:
 *   before a new connection opens, the least recently used idle pool is closed (a Map kept in use
 *   order; no locks — JS runs one check's bookkeeping at a time). Because `concurrency` is capped at
 *   `maxConnections`, an idle pool to close always exists.
 */
import pg from 'pg';
import { createPool } from '../postgres/pool.js';
import pLimit, { type LimitFunction } from 'p-limit';
import { setTimeout as sleep } from 'node:timers/promises';
import { FloeError, coerceError } from '../errors.js';
import { SourceClient, clientConfig, redactUrl, type SourceConfig } from '../postgres/source.js';
import { parseLsn } from '../postgres/lsn.js';
import type { Logger } from '../telemetry/logger.js';
import { WAL_STATUSES, type FloeMetrics, type SlotFigures, type SlotWalStatus } from '../telemetry/metrics.js';
import type { AlertManager, SlotObservation } from './alerts.js';

export const MONITOR_APPLICATION_NAME = 'floe-monitor';

export interface MonitoredSource {
  /** Stable identity (alert state and pools are keyed by it). */
  readonly id: string;
  /** Shown in alerts, logs and the `source` metric label. */
  readonly name: string;
  readonly config: SourceConfig;
  /** floe's replication slots on this source (every other slot is watched too, as not floe's). */
  readonly slots: readonly string[];
}

/** Cross-process "one watcher per source" (see source-lease.ts). */
export interface SourceClaim {
  /**
   * Takes or renews this process's right to watch `source`. `held: false` when another process watches
   * it (`holder` names it); `floeSlots` lists every floe pipeline's slot on the source, wherever it runs.
   */
  claim(source: MonitoredSource): Promise<{ held: boolean; holder: string | null; floeSlots?: readonly string[] }>;
  /** Publishes the figures of a check (the holder only). */
  report?(health: SourceHealth): Promise<void>;
  /** Gives the source up (no pipeline here uses it any more, or shutdown). */
  release(sourceId: string): Promise<void>;
}

/** The figures the metrics take (SlotFigures), plus positions and how long a stall has lasted. */
export interface SlotHealth extends Omit<SlotFigures, 'stalled'> {
  readonly slot: string;
  readonly slotType: 'logical' | 'physical';
  /** Used by a floe pipeline. */
  readonly floe: boolean;
  /** application_name of the process streaming from the slot; null when inactive or not visible. */
  readonly owner: string | null;
  readonly activePid: number | null;
  readonly clientAddr: string | null;
  readonly restartLsn: string | null;
  readonly confirmedFlushLsn: string | null;
  /** Seconds confirmed_flush has not moved while WAL grew, once past the stall time; else null. */
  readonly stalledSeconds: number | null;
}

export interface SourceHealth {
  readonly id: string;
  readonly name: string;
  /** False when the last check could not reach the source (see `error`). */
  readonly reachable: boolean;
  readonly error: string | null;
  /** RFC 3339 time of the last check, null before the first. */
  readonly checkedAt: string | null;
  readonly currentLsn: string | null;
  /** pg_wal directory size; null without the pg_monitor privilege. */
  readonly walDirBytes: number | null;
  readonly walDirPrivilege: boolean;
  readonly walGrowthBytesPerSecond: number | null;
  /** WAL kept for `wal_keep_size` (bytes). */
  readonly walKeepSizeBytes: number | null;
  readonly archiver: ArchiverHealth | null;
  /** Another process watches this source (its name); null when this one does. */
  readonly watchedBy: string | null;
  /** Every slot on the server (floe's missing slots included as `missing`), largest retained WAL first. */
  readonly slots: readonly SlotHealth[];
}

export interface ArchiverHealth {
  /** archive_mode is not off. */
  readonly enabled: boolean;
  readonly archivedCount: number;
  readonly lastArchivedWal: string | null;
  readonly lastArchivedAt: string | null;
  readonly failedCount: number;
  readonly lastFailedWal: string | null;
  readonly lastFailedAt: string | null;
  /** Segments waiting for archive_command (`.ready` files); null without pg_monitor. */
  readonly pendingFiles: number | null;
  /** The last failure is newer than the last success. */
  readonly failing: boolean;
}

export interface WalMonitorOptions {
  /** Time between rounds over all sources. (Default: 60000 ms) */
  readonly intervalMs?: number;
  /** A source is checked at most this often, whatever the round cadence. (Default: 10000 ms) */
  readonly minIntervalPerSourceMs?: number;
  /** Sources checked at once. (Default: 10; capped at maxConnections) */
  readonly concurrency?: number;
  /** Open monitoring connections over all sources. (Default: 20) */
  readonly maxConnections?: number;
  /** statement_timeout of every monitoring query. (Default: 5000 ms) */
  readonly statementTimeoutMs?: number;
  /** Idle monitoring connections close after this. (Default: 60000 ms) */
  readonly idleTimeoutMs?: number;
  /** Window of the growth rate (and forecasts). (Default: 300000 ms) */
  readonly growthWindowMs?: number;
  /** confirmed_flush unmoved while WAL grows for longer than this is a stall. (Default: 600000 ms) */
  readonly stallAfterMs?: number;
  /** Danger threshold for the forecast (MiB); taken from the AlertManager when one is given. (Default: 6000) */
  readonly dangerMb?: number;
  readonly log: Logger;
  readonly metrics?: FloeMetrics;
  readonly alerts?: AlertManager;
  /** Called after each check of a source (e.g. to feed per-pipeline metrics). */
  readonly onCheck?: (health: SourceHealth) => void;
  /** One watcher per source across processes; without it, this process watches every source it has. */
  readonly claim?: SourceClaim;
  /** Slots per source exported as metric series: floe's first, then the largest. (Default: 50) */
  readonly maxSlotSeries?: number;
}

interface SlotRow {
  slot_name: string;
  slot_type: string;
  active: boolean;
  active_pid: number | null;
  application_name: string | null;
  client_addr: string | null;
  wal_status: string | null;
  safe_wal_size: string | null;
  restart_lsn: string | null;
  confirmed_flush_lsn: string | null;
  retained: string | null;
  flush_lag: string | null;
}

interface ServerRow {
  lsn: string;
  wal_keep: string | null;
  archive_mode: string;
  archived_count: string;
  last_archived_wal: string | null;
  last_archived_time: Date | null;
  failed_count: string;
  last_failed_wal: string | null;
  last_failed_time: Date | null;
}

interface SlotTrack {
  confirmed: bigint;
  /** When confirmed_flush last moved, and the WAL position at that time. */
  movedAt: number;
  currentAtMove: bigint;
  /** (time, retained bytes) within the growth window. */
  retained: { at: number; bytes: number }[];
}

interface SourceEntry {
  source: MonitoredSource;
  lastCheckAt: number;
  /** (time, pg_current_wal_lsn) samples: the growth window and the first-seen times for lag seconds. */
  lsnSeen: { at: number; lsn: bigint }[];
  slots: Map<string, SlotTrack>;
  privilegeWarned: boolean;
  unreachableLogged: boolean;
  /** Slots whose loss was logged (once per loss; the alert repeats on its own schedule). */
  lostLogged: Set<string>;
  /** The last observation of each slot alerted on: a slot that disappears resolves with it. */
  observed: Map<string, SlotObservation>;
  /** Slots with metric series (removed when the slot is gone). */
  exported: Set<string>;
  /** floe slots on the source according to the claim (other workers' pipelines). */
  claimedFloeSlots: readonly string[];
  /** This process watched the source at its last check. */
  held: boolean;
  health: SourceHealth;
}

const MIB = 1024 * 1024;
/** Samples kept per source for lag seconds; at the default interval, more than a day. */
const MAX_LSN_SAMPLES = 2000;

export class WalMonitor {
  readonly #o: Required<Omit<WalMonitorOptions, 'metrics' | 'alerts' | 'onCheck' | 'log' | 'claim'>>;
  readonly #claim: SourceClaim | undefined;
  readonly #log: Logger;
  readonly #metrics: FloeMetrics | undefined;
  readonly #alerts: AlertManager | undefined;
  readonly #onCheck: WalMonitorOptions['onCheck'];
  readonly #limit: LimitFunction;
  readonly #sources = new Map<string, SourceEntry>();
  /** Pools in least-recently-used-first order (re-inserted on use). */
  readonly #pools = new Map<string, { pool: pg.Pool; busy: number }>();
  #openConnections = 0;
  /** Places under the cap taken by checks that are opening a connection right now. */
  #reserved = 0;
  #maxOpenSeen = 0;

  constructor(options: WalMonitorOptions) {
    const maxConnections = Math.max(1, options.maxConnections ?? 20);
    this.#o = {
      intervalMs: options.intervalMs ?? 60_000,
      minIntervalPerSourceMs: options.minIntervalPerSourceMs ?? 10_000,
      concurrency: Math.max(1, Math.min(options.concurrency ?? 10, maxConnections)),
      maxConnections,
      statementTimeoutMs: options.statementTimeoutMs ?? 5000,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      growthWindowMs: options.growthWindowMs ?? 300_000,
      stallAfterMs: options.stallAfterMs ?? 600_000,
      dangerMb: options.alerts?.policy.dangerMb ?? options.dangerMb ?? 6000,
      maxSlotSeries: options.maxSlotSeries ?? 50,
    };
    this.#claim = options.claim;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#alerts = options.alerts;
    this.#onCheck = options.onCheck;
    this.#limit = pLimit(this.#o.concurrency);
  }

  addSource(source: MonitoredSource): void {
    const existing = this.#sources.get(source.id);
    if (existing) {
      // Same id: new slots or a new URL take effect at the next check; history stays.
      const urlChanged = existing.source.config.url !== source.config.url;
      existing.source = source;
      if (urlChanged) void this.#closePool(source.id);
      return;
    }
    this.#sources.set(source.id, {
      source,
      lastCheckAt: -Infinity,
      lsnSeen: [],
      slots: new Map(),
      privilegeWarned: false,
      unreachableLogged: false,
      lostLogged: new Set(),
      observed: new Map(),
      exported: new Set(),
      claimedFloeSlots: [],
      held: false,
      health: {
        id: source.id,
        name: source.name,
        reachable: true,
        error: null,
        checkedAt: null,
        currentLsn: null,
        walDirBytes: null,
        walDirPrivilege: true,
        walGrowthBytesPerSecond: null,
        walKeepSizeBytes: null,
        archiver: null,
        watchedBy: null,
        slots: [],
      },
    });
  }

  removeSource(id: string): void {
    const entry = this.#sources.get(id);
    if (!entry) return;
    this.#sources.delete(id);
    this.#alerts?.forgetSource(id);
    this.#metrics?.removeSource(entry.source.name);
    void this.#closePool(id);
    if (entry.held && this.#claim) {
      void this.#claim
        .release(id)
        .catch((err: unknown) =>
          this.#log.warn({ err: coerceError(err).message, source: entry.source.name }, 'WAL monitor: could not release the source'),
        );
    }
  }

  snapshot(): SourceHealth[] {
    return [...this.#sources.values()].map((e) => e.health);
  }

  /** Most monitoring connections open at once so far (for tests and `floe status`). */
  get maxOpenConnections(): number {
    return this.#maxOpenSeen;
  }

  /** Checks every source now (respecting the per-source minimum interval); resolves when all are done. */
  async tick(): Promise<void> {
    const due = [...this.#sources.values()].filter((e) => Date.now() - e.lastCheckAt >= this.#o.minIntervalPerSourceMs);
    await Promise.all(due.map((e) => this.#limit(() => this.#check(e))));
  }

  /**
   * Quick reachability probe of one source through its monitoring pool (for /readyz). Resolves with
   * undefined when reachable, or the reason it is not.
   */
  async probe(id: string): Promise<string | undefined> {
    const entry = this.#sources.get(id);
    if (!entry) return `source ${id} is not monitored`;
    try {
      await this.#limit(() => this.#withClient(entry, (c) => c.query('SELECT 1')));
      return undefined;
    } catch (err) {
      return coerceError(err).message;
    }
  }

  /** Rounds every `intervalMs` until `signal` aborts; then closes every connection. */
  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        await this.tick();
        await sleep(this.#o.intervalMs, undefined, { signal }).catch(() => undefined);
      }
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.#pools.keys()].map((id) => this.#closePool(id)));
    // Another worker takes over at once rather than after the lease runs out.
    const held = [...this.#sources.values()].filter((e) => e.held);
    for (const e of held) e.held = false;
    await Promise.all(held.map((e) => this.#claim?.release(e.source.id).catch(() => undefined)));
  }

  // ---- one check ------------------------------------------------------------------------------

  async #check(entry: SourceEntry): Promise<void> {
    const { source } = entry;
    entry.lastCheckAt = Date.now();
    if (!(await this.#claimed(entry))) return;
    try {
      const result = await this.#withClient(entry, (c) => this.#query(c, entry));
      if (this.#sources.get(source.id) !== entry) return; // removed while it was being checked
      entry.unreachableLogged = false;
      this.#metrics?.monitorCheck('ok');
      this.#metrics?.setSourceReachable(source.name, true);
      entry.health = result;
    } catch (err) {
      const e = coerceError(err, `WAL monitor cannot check source ${source.name}`);
      this.#metrics?.monitorCheck('error');
      this.#metrics?.setSourceReachable(source.name, false);
      if (!entry.unreachableLogged) {
        entry.unreachableLogged = true;
        this.#log.warn({ source: source.name, sourceId: source.id, err: e.message }, 'WAL monitor: source unreachable');
      }
      entry.health = { ...entry.health, reachable: false, error: e.message, checkedAt: new Date().toISOString() };
      // A connection error leaves a broken pool behind; the next check opens a fresh one.
      await this.#closePool(source.id);
    }
    try {
      this.#onCheck?.(entry.health);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'WAL monitor check listener failed');
    }
    if (entry.health.reachable) {
      await this.#claim
        ?.report?.(entry.health)
        .catch((err: unknown) =>
          this.#log.warn({ err: coerceError(err).message, source: source.name }, 'WAL monitor: could not publish the source figures'),
        );
    }
  }

  /**
   * Whether this process watches the source now. A process that loses the source to another forgets its
   * alert state and series (the other one reports now). When the claim cannot be decided (control plane
   * unreachable), the last answer stands: a guardian that stops on a control-plane blip is worse than a
   * duplicate alert.
   */
  async #claimed(entry: SourceEntry): Promise<boolean> {
    if (!this.#claim) return (entry.held = true);
    let answer: Awaited<ReturnType<SourceClaim['claim']>>;
    try {
      answer = await this.#claim.claim(entry.source);
    } catch (err) {
      this.#log.warn(
        { err: coerceError(err).message, source: entry.source.name },
        'WAL monitor: cannot tell which worker watches the source',
      );
      return entry.held;
    }
    if (this.#sources.get(entry.source.id) !== entry) return false;
    if (answer.floeSlots) entry.claimedFloeSlots = answer.floeSlots;
    if (!answer.held && entry.held) {
      this.#alerts?.forgetSource(entry.source.id);
      this.#metrics?.removeSource(entry.source.name);
      entry.observed.clear();
      entry.exported.clear();
    }
    entry.held = answer.held;
    if (!answer.held) entry.health = { ...entry.health, watchedBy: answer.holder, slots: [], checkedAt: new Date().toISOString() };
    return answer.held;
  }

  async #query(c: pg.PoolClient, entry: SourceEntry): Promise<SourceHealth> {
    const { source } = entry;
    const now = Date.now();
    // Readable by any role: the position, the settings and pg_stat_archiver.
    const head = (
      await c.query<ServerRow>(
        `SELECT pg_current_wal_lsn()::text AS lsn,
                (SELECT setting::bigint * 1048576 FROM pg_settings WHERE name = 'wal_keep_size')::text AS wal_keep,
                current_setting('archive_mode') AS archive_mode,
                a.archived_count::text, a.last_archived_wal, a.last_archived_time, a.failed_count::text,
                a.last_failed_wal, a.last_failed_time
           FROM pg_stat_archiver a`,
      )
    ).rows[0]!;
    const currentLsn = parseLsn(head.lsn);
    const dir = await this.#walDir(c, entry);

    const slotRows = (
      await c.query<SlotRow>(
        `SELECT s.slot_name, s.slot_type, s.active, s.active_pid, s.wal_status, s.safe_wal_size::text,
                s.restart_lsn::text, s.confirmed_flush_lsn::text,
                pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint::text AS retained,
                pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint::text AS flush_lag,
                a.application_name, host(a.client_addr) AS client_addr
           FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
          WHERE NOT s.temporary
          ORDER BY s.slot_name`,
      )
    ).rows;

    // Remember when each WAL position was first seen (for lag seconds and the growth rate).
    const last = entry.lsnSeen.at(-1);
    if (!last || last.lsn !== currentLsn) entry.lsnSeen.push({ at: now, lsn: currentLsn });
    if (entry.lsnSeen.length > MAX_LSN_SAMPLES) entry.lsnSeen.splice(0, entry.lsnSeen.length - MAX_LSN_SAMPLES);
    const walGrowth = this.#walGrowth(entry, now, currentLsn);

    const floeSlots = new Set([...source.slots, ...entry.claimedFloeSlots]);
    const slots: SlotHealth[] = slotRows.map((row) => this.#slotHealth(entry, row, now, currentLsn, floeSlots));
    // floe's slots that do not exist (yet): the pipeline creates them; shown as missing.
    for (const name of source.slots) if (!slotRows.some((r) => r.slot_name === name)) slots.push(missingSlot(name));
    for (const name of entry.slots.keys()) if (!slotRows.some((r) => r.slot_name === name)) entry.slots.delete(name);
    slots.sort((a, b) => (b.retainedBytes ?? -1) - (a.retainedBytes ?? -1) || a.slot.localeCompare(b.slot));
    this.#trimLsnSeen(entry, slots, now);

    const num = (v: string | null) => (v === null ? null : Number(v));
    const archiveEnabled = head.archive_mode !== 'off';
    const lastArchivedAt = head.last_archived_time?.toISOString() ?? null;
    const lastFailedAt = head.last_failed_time?.toISOString() ?? null;
    const archiver: ArchiverHealth = {
      enabled: archiveEnabled,
      archivedCount: Number(head.archived_count),
      lastArchivedWal: head.last_archived_wal,
      lastArchivedAt,
      failedCount: Number(head.failed_count),
      lastFailedWal: head.last_failed_wal,
      lastFailedAt,
      pendingFiles: dir.pendingFiles,
      failing:
        archiveEnabled &&
        head.last_failed_time !== null &&
        (head.last_archived_time === null || head.last_failed_time.getTime() > head.last_archived_time.getTime()),
    };
    const health: SourceHealth = {
      id: source.id,
      name: source.name,
      reachable: true,
      error: null,
      checkedAt: new Date(now).toISOString(),
      currentLsn: head.lsn,
      walDirBytes: dir.bytes,
      walDirPrivilege: dir.privilege,
      walGrowthBytesPerSecond: walGrowth,
      walKeepSizeBytes: num(head.wal_keep),
      archiver,
      watchedBy: null,
      slots,
    };
    // Removed while it was being checked: report nothing (its series and alert state are gone).
    if (this.#sources.get(source.id) !== entry) return health;
    this.#report(entry, health);
    return health;
  }

  /** pg_wal size and archive_status `.ready` files: both need pg_monitor; without it, one warning. */
  async #walDir(c: pg.PoolClient, entry: SourceEntry): Promise<{ bytes: number | null; pendingFiles: number | null; privilege: boolean }> {
    try {
      const r = await c.query<{ bytes: string; ready: number }>(
        `SELECT (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint::text AS bytes,
                (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')::int AS ready`,
      );
      return { bytes: Number(r.rows[0]!.bytes), pendingFiles: r.rows[0]!.ready, privilege: true };
    } catch (err) {
      if ((err as { code?: string }).code !== '42501') throw err;
      if (!entry.privilegeWarned) {
        entry.privilegeWarned = true;
        const role = (await c.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
        this.#log.warn(
          { source: entry.source.name, sourceId: entry.source.id },
          `WAL monitor: no privilege to read the WAL directory size (pg_ls_waldir); run GRANT pg_monitor TO ${role} on the source. Per-slot figures are still monitored.`,
        );
      }
      return { bytes: null, pendingFiles: null, privilege: false };
    }
  }

  /** Positions every slot has confirmed are no longer needed for lag seconds (keep the newest). */
  #trimLsnSeen(entry: SourceEntry, slots: readonly SlotHealth[], now: number): void {
    const minConfirmed = slots.reduce<bigint | undefined>((m, s) => {
      if (s.confirmedFlushLsn === null) return m;
      const v = parseLsn(s.confirmedFlushLsn);
      return m === undefined || v < m ? v : m;
    }, undefined);
    const windowStart = now - this.#o.growthWindowMs;
    while (
      entry.lsnSeen.length > 1 &&
      entry.lsnSeen[1]!.at < windowStart &&
      (minConfirmed === undefined || entry.lsnSeen[0]!.lsn <= minConfirmed)
    ) {
      entry.lsnSeen.shift();
    }
  }

  /** Metrics and alerts of one check. */
  #report(entry: SourceEntry, health: SourceHealth): void {
    const { source } = entry;
    this.#metrics?.setSourceWal(source.name, health.walDirBytes, health.walGrowthBytesPerSecond);
    this.#metrics?.setSourceWalKeep(source.name, health.walKeepSizeBytes);
    if (health.archiver) this.#metrics?.setArchiver(source.name, health.archiver);
    this.#exportSlots(entry, health.slots);
    const seen = new Set<string>();
    for (const s of health.slots) {
      if (s.walStatus !== 'lost') entry.lostLogged.delete(s.slot);
      else if (!entry.lostLogged.has(s.slot)) {
        entry.lostLogged.add(s.slot);
        if (s.floe)
          this.#log.error({ source: source.name, sourceId: source.id, slot: s.slot }, slotLostError(source.name, s.slot).oneLine());
      }
      if (s.walStatus === 'missing') continue; // the pipeline creates it; nothing to alert on
      seen.add(s.slot);
      const o = observation(source, s, health);
      entry.observed.set(s.slot, o);
      this.#alerts?.observe(o);
    }
    for (const [slot, last] of entry.observed) {
      if (seen.has(slot)) continue;
      entry.observed.delete(slot);
      this.#alerts?.slotGone(last);
    }
    const largest = health.slots.find((s) => s.retainedBytes !== null);
    this.#alerts?.observeWalDir({
      sourceId: source.id,
      sourceName: source.name,
      walDirBytes: health.walDirBytes,
      growthBytesPerSecond: health.walGrowthBytesPerSecond,
      walKeepSizeBytes: health.walKeepSizeBytes,
      archivePendingFiles: health.archiver?.pendingFiles ?? null,
      largestSlot: largest
        ? {
            slot: largest.slot,
            retainedBytes: largest.retainedBytes!,
            floe: largest.floe,
            active: largest.active,
            slotType: largest.slotType,
          }
        : null,
    });
    if (health.archiver)
      this.#alerts?.observeArchiver({ sourceId: source.id, sourceName: source.name, walDirBytes: health.walDirBytes, ...health.archiver });
  }

  /**
   * Per-slot series: floe's slots always, then the largest others up to `maxSlotSeries` per source, so
   * a server with hundreds of slots cannot blow up the series count. Series of slots that are gone (or
   * fell out of the top) are removed.
   */
  #exportSlots(entry: SourceEntry, slots: readonly SlotHealth[]): void {
    const metrics = this.#metrics;
    if (!metrics) return;
    const chosen = [...slots.filter((s) => s.floe), ...slots.filter((s) => !s.floe)].slice(0, Math.max(this.#o.maxSlotSeries, 0));
    const names = new Set(chosen.map((s) => s.slot));
    for (const slot of entry.exported) if (!names.has(slot)) metrics.removeSlot(entry.source.name, slot);
    entry.exported = names;
    for (const s of chosen) metrics.setSlot(entry.source.name, s.slot, { ...s, stalled: s.stalledSeconds !== null });
  }

  #walGrowth(entry: SourceEntry, now: number, currentLsn: bigint): number | null {
    const windowStart = now - this.#o.growthWindowMs;
    const first = entry.lsnSeen.find((s) => s.at >= windowStart) ?? entry.lsnSeen[0];
    if (!first || now - first.at <= 0) return null;
    return Number(currentLsn - first.lsn) / ((now - first.at) / 1000);
  }

  #slotHealth(entry: SourceEntry, row: SlotRow, now: number, currentLsn: bigint, floeSlots: ReadonlySet<string>): SlotHealth {
    const status = (WAL_STATUSES as readonly string[]).includes(row.wal_status ?? '') ? (row.wal_status as SlotWalStatus) : 'reserved';
    const num = (v: string | null) => (v === null ? null : Number(v));
    const retained = num(row.retained);
    const confirmed = row.confirmed_flush_lsn === null ? null : parseLsn(row.confirmed_flush_lsn);

    let track = entry.slots.get(row.slot_name);
    if (!track || (confirmed !== null && confirmed !== track.confirmed)) {
      const retainedHistory = track?.retained ?? [];
      track = { confirmed: confirmed ?? 0n, movedAt: now, currentAtMove: currentLsn, retained: retainedHistory };
      entry.slots.set(row.slot_name, track);
    }
    if (retained !== null) track.retained.push({ at: now, bytes: retained });
    const windowStart = now - this.#o.growthWindowMs;
    while (track.retained.length > 2 && track.retained[0]!.at < windowStart) track.retained.shift();

    const firstRetained = track.retained[0];
    const growth =
      firstRetained && retained !== null && now > firstRetained.at
        ? (retained - firstRetained.bytes) / ((now - firstRetained.at) / 1000)
        : null;
    const growing = growth !== null && growth > 0;
    const dangerBytes = this.#o.dangerMb * MIB;
    const safe = num(row.safe_wal_size);

    let lagSeconds: number | null = null;
    if (confirmed !== null) {
      const oldestUnconfirmed = entry.lsnSeen.find((s) => s.lsn > confirmed);
      lagSeconds = oldestUnconfirmed ? Math.max(0, (now - oldestUnconfirmed.at) / 1000) : 0;
    }
    const stalledFor = now - track.movedAt;
    const stalled = confirmed !== null && currentLsn > track.currentAtMove && currentLsn > confirmed && stalledFor > this.#o.stallAfterMs;

    return {
      slot: row.slot_name,
      slotType: row.slot_type === 'physical' ? 'physical' : 'logical',
      // A floe walsender is named floe-<pipeline> (pipeline.ts): another worker's pipeline is floe's too.
      floe: floeSlots.has(row.slot_name) || (row.active && /^floe-/.test(row.application_name ?? '')),
      owner: row.application_name || null,
      activePid: row.active_pid,
      clientAddr: row.client_addr,
      walStatus: status,
      active: row.active,
      restartLsn: row.restart_lsn,
      confirmedFlushLsn: row.confirmed_flush_lsn,
      retainedBytes: retained,
      safeWalSizeBytes: safe,
      confirmedFlushLagBytes: num(row.flush_lag),
      confirmedFlushLagSeconds: lagSeconds,
      retainedGrowthBytesPerSecond: growth,
      secondsUntilDanger: growing && retained !== null ? Math.max(0, (dangerBytes - retained) / growth) : null,
      secondsUntilSafeWalExhausted: growing && safe !== null ? Math.max(0, safe / growth) : null,
      stalledSeconds: stalled ? stalledFor / 1000 : null,
    };
  }

  // ---- pools ---------------------------------------------------------------------------------

  async #withClient<T>(entry: SourceEntry, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const id = entry.source.id;
    let slot = this.#pools.get(id);
    if (slot) this.#pools.delete(id); // re-inserted below: the Map's order is least recently used first
    slot ??= { pool: this.#newPool(entry.source), busy: 0 };
    this.#pools.set(id, slot);
    slot.busy++;
    try {
      // A pool without its connection (new, or closed when idle) opens one: it must fit under the cap.
      const opens = slot.pool.totalCount === 0;
      if (opens) await this.#reserveConnection(id);
      let client: pg.PoolClient;
      try {
        client = await slot.pool.connect();
      } finally {
        if (opens) this.#reserved--;
      }
      try {
        return await fn(client);
      } finally {
        client.release();
      }
    } finally {
      slot.busy--;
    }
  }

  /**
   * Takes one place under the global cap, closing least recently used idle pools to make room. The
   * check and the reservation happen without an await between them, so two checks cannot both take
   * the last place.
   */
  async #reserveConnection(forId: string): Promise<void> {
    for (;;) {
      if (this.#openConnections + this.#reserved < this.#o.maxConnections) {
        this.#reserved++;
        return;
      }
      const victim = [...this.#pools.entries()].find(([id, p]) => id !== forId && p.busy === 0 && p.pool.totalCount > 0);
      if (victim) await this.#closePool(victim[0]);
      // Every connection is in use by a running check (only when concurrency = maxConnections): wait for one.
      else await sleep(20);
    }
  }

  #newPool(source: MonitoredSource): pg.Pool {
    const pool = createPool({
      ...clientConfig({ ...source.config, applicationName: MONITOR_APPLICATION_NAME }),
      // The cleartext-password guard (source.ts) holds for the monitor's connections too.
      Client: SourceClient,
      // Every monitoring query is bounded by the server, and nothing here may wait on a lock.
      options: `-c statement_timeout=${this.#o.statementTimeoutMs} -c lock_timeout=${this.#o.statementTimeoutMs}`,
      max: 1,
      // Not allowExitOnIdle: an unreferenced socket could let the process exit while close() waits for it.
      idleTimeoutMillis: this.#o.idleTimeoutMs,
    });
    pool.on('connect', () => this.#countConnections(+1));
    pool.on('remove', () => this.#countConnections(-1));
    return pool;
  }

  #countConnections(delta: number): void {
    this.#openConnections += delta;
    this.#maxOpenSeen = Math.max(this.#maxOpenSeen, this.#openConnections);
    this.#metrics?.setMonitorConnections(this.#openConnections);
  }

  async #closePool(id: string): Promise<void> {
    const slot = this.#pools.get(id);
    if (!slot) return;
    this.#pools.delete(id);
    // pool.end() resolves before its connections have closed; the count (and the cap) must only
    // drop once they are gone, so wait for their 'remove' events too.
    let open = slot.pool.totalCount;
    const closed =
      open === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            // Never hang on a socket that will not close; the timer is cleared as soon as it is not needed.
            const timer = setTimeout(resolve, 5000);
            slot.pool.on('remove', () => {
              if (--open <= 0) {
                clearTimeout(timer);
                resolve();
              }
            });
          });
    await Promise.all([slot.pool.end().catch(() => undefined), closed]);
  }
}

function missingSlot(slot: string): SlotHealth {
  return {
    slot,
    slotType: 'logical',
    floe: true,
    owner: null,
    activePid: null,
    clientAddr: null,
    walStatus: 'missing',
    active: false,
    restartLsn: null,
    confirmedFlushLsn: null,
    retainedBytes: null,
    safeWalSizeBytes: null,
    confirmedFlushLagBytes: null,
    confirmedFlushLagSeconds: null,
    retainedGrowthBytesPerSecond: null,
    secondsUntilDanger: null,
    secondsUntilSafeWalExhausted: null,
    stalledSeconds: null,
  };
}

function observation(source: MonitoredSource, s: SlotHealth, health: SourceHealth): SlotObservation {
  return {
    sourceId: source.id,
    sourceName: source.name,
    slot: s.slot,
    slotType: s.slotType,
    floe: s.floe,
    owner: s.owner,
    clientAddr: s.clientAddr,
    walStatus: s.walStatus,
    active: s.active,
    retainedBytes: s.retainedBytes,
    walDirBytes: health.walDirBytes,
    safeWalSizeBytes: s.safeWalSizeBytes,
    confirmedFlushLagBytes: s.confirmedFlushLagBytes,
    confirmedFlushLagSeconds: s.confirmedFlushLagSeconds,
    growthBytesPerSecond: s.retainedGrowthBytesPerSecond,
    secondsUntilDanger: s.secondsUntilDanger,
    secondsUntilSafeWalExhausted: s.secondsUntilSafeWalExhausted,
    stalledSeconds: s.stalledSeconds,
  };
}

/** The error a pipeline reports when its slot was invalidated (wal_status = lost). */
export function slotLostError(sourceName: string, slot: string): FloeError {
  return new FloeError('replication', `replication slot ${slot} on source ${sourceName} was invalidated (wal_status = lost)`, {
    retry: 'timed',
    hint: 'the server removed WAL the slot still needed (max_slot_wal_keep_size); floe recreates the slot and resyncs every table at the next start — raise max_slot_wal_keep_size or fix what stopped the pipeline from keeping up',
  });
}

/** A display name for a source from its URL: host:port/database, without user or password. */
export function sourceNameFromUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname || '/'}`;
  } catch {
    return redactUrl(url);
  }
}
