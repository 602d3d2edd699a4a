/**
 * WalMonitor: source and slot health on an interval (design.md §6).
 *
 * Per source: the pg_wal directory size (`pg_ls_waldir()`, needs `pg_monitor`; without it one warning and
 * the figure stays unknown) and the WAL write rate. Per slot of interest: retained WAL
 * (`pg_current_wal_lsn() - restart_lsn`), `wal_status`, `safe_wal_size`, active, confirmed-flush lag in
 * bytes and seconds, the retained WAL's growth rate and forecasts (time until the danger threshold, time
 * until `safe_wal_size` runs out), and stall detection. Each check goes to the AlertManager and the
 * metrics; `snapshot()` returns the last figures for `floe status` and /readyz.
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
import type { AlertManager } from './alerts.js';

export const MONITOR_APPLICATION_NAME = 'floe-monitor';

export interface MonitoredSource {
  /** Stable identity (alert state and pools are keyed by it). */
  readonly id: string;
  /** Shown in alerts, logs and the `source` metric label. */
  readonly name: string;
  readonly config: SourceConfig;
  /** Replication slots of interest on this source. */
  readonly slots: readonly string[];
}

/** The figures the metrics take (SlotFigures), plus positions and how long a stall has lasted. */
export interface SlotHealth extends Omit<SlotFigures, 'stalled'> {
  readonly slot: string;
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
  readonly slots: readonly SlotHealth[];
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
}

interface SlotRow {
  slot_name: string;
  active: boolean;
  wal_status: string | null;
  safe_wal_size: string | null;
  restart_lsn: string | null;
  confirmed_flush_lsn: string | null;
  retained: string | null;
  flush_lag: string | null;
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
  health: SourceHealth;
}

const MIB = 1024 * 1024;
/** Samples kept per source for lag seconds; at the default interval, more than a day. */
const MAX_LSN_SAMPLES = 2000;

export class WalMonitor {
  readonly #o: Required<Omit<WalMonitorOptions, 'metrics' | 'alerts' | 'onCheck' | 'log'>>;
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
    };
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
  }

  // ---- one check ------------------------------------------------------------------------------

  async #check(entry: SourceEntry): Promise<void> {
    const { source } = entry;
    entry.lastCheckAt = Date.now();
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
  }

  async #query(c: pg.PoolClient, entry: SourceEntry): Promise<SourceHealth> {
    const { source } = entry;
    const now = Date.now();
    const cur = await c.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`);
    const currentLsn = parseLsn(cur.rows[0]!.lsn);

    let walDirBytes: number | null = null;
    let walDirPrivilege = true;
    try {
      const r = await c.query<{ bytes: string }>(`SELECT coalesce(sum(size), 0)::bigint AS bytes FROM pg_ls_waldir()`);
      walDirBytes = Number(r.rows[0]!.bytes);
    } catch (err) {
      if ((err as { code?: string }).code !== '42501') throw err;
      walDirPrivilege = false;
      if (!entry.privilegeWarned) {
        entry.privilegeWarned = true;
        const role = (await c.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
        this.#log.warn(
          { source: source.name, sourceId: source.id },
          `WAL monitor: no privilege to read the WAL directory size (pg_ls_waldir); run GRANT pg_monitor TO ${role} on the source. Per-slot figures are still monitored.`,
        );
      }
    }

    const slotRows = (
      await c.query<SlotRow>(
        `SELECT slot_name, active, wal_status, safe_wal_size::text, restart_lsn::text, confirmed_flush_lsn::text,
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained,
                pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS flush_lag
           FROM pg_replication_slots WHERE slot_name = ANY($1)`,
        [source.slots],
      )
    ).rows;

    // Remember when each WAL position was first seen (for lag seconds and the growth rate).
    const last = entry.lsnSeen.at(-1);
    if (!last || last.lsn !== currentLsn) entry.lsnSeen.push({ at: now, lsn: currentLsn });
    if (entry.lsnSeen.length > MAX_LSN_SAMPLES) entry.lsnSeen.splice(0, entry.lsnSeen.length - MAX_LSN_SAMPLES);
    const walGrowth = this.#walGrowth(entry, now, currentLsn);

    const slots: SlotHealth[] = [];
    for (const name of source.slots) {
      const row = slotRows.find((r) => r.slot_name === name);
      slots.push(row ? this.#slotHealth(entry, row, now, currentLsn) : missingSlot(name));
      if (!row) entry.slots.delete(name);
    }
    // Positions every slot has confirmed are no longer needed for lag seconds (keep the newest).
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

    const health: SourceHealth = {
      id: source.id,
      name: source.name,
      reachable: true,
      error: null,
      checkedAt: new Date(now).toISOString(),
      currentLsn: cur.rows[0]!.lsn,
      walDirBytes,
      walDirPrivilege,
      walGrowthBytesPerSecond: walGrowth,
      slots,
    };
    // Removed while it was being checked: report nothing (its series and alert state are gone).
    if (this.#sources.get(source.id) !== entry) return health;
    this.#metrics?.setSourceWal(source.name, walDirBytes, walGrowth);
    for (const s of slots) {
      this.#metrics?.setSlot(source.name, s.slot, { ...s, stalled: s.stalledSeconds !== null });
      if (s.walStatus !== 'lost') entry.lostLogged.delete(s.slot);
      else if (!entry.lostLogged.has(s.slot)) {
        entry.lostLogged.add(s.slot);
        this.#log.error({ source: source.name, sourceId: source.id, slot: s.slot }, slotLostError(source.name, s.slot).oneLine());
      }
      if (s.walStatus === 'missing') continue; // the pipeline creates it; nothing to alert on
      this.#alerts?.observe({
        sourceId: source.id,
        sourceName: source.name,
        slot: s.slot,
        walStatus: s.walStatus,
        active: s.active,
        retainedBytes: s.retainedBytes,
        walDirBytes,
        safeWalSizeBytes: s.safeWalSizeBytes,
        confirmedFlushLagBytes: s.confirmedFlushLagBytes,
        confirmedFlushLagSeconds: s.confirmedFlushLagSeconds,
        growthBytesPerSecond: s.retainedGrowthBytesPerSecond,
        secondsUntilDanger: s.secondsUntilDanger,
        secondsUntilSafeWalExhausted: s.secondsUntilSafeWalExhausted,
        stalledSeconds: s.stalledSeconds,
      });
    }
    return health;
  }

  #walGrowth(entry: SourceEntry, now: number, currentLsn: bigint): number | null {
    const windowStart = now - this.#o.growthWindowMs;
    const first = entry.lsnSeen.find((s) => s.at >= windowStart) ?? entry.lsnSeen[0];
    if (!first || now - first.at <= 0) return null;
    return Number(currentLsn - first.lsn) / ((now - first.at) / 1000);
  }

  #slotHealth(entry: SourceEntry, row: SlotRow, now: number, currentLsn: bigint): SlotHealth {
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
