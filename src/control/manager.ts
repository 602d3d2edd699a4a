/**
 * The PipelineManager: one per worker (`floe run`). It makes the pipelines this worker runs follow the
 * control-plane tables.
 *
 * Reconciliation. A single-flight loop reads every pipeline row (one statement) and compares it with the
 * pipelines running here. It runs when a `floe_config` notification arrives (LISTEN on a dedicated
 * connection that reconnects), every `pollIntervalMs` (the fallback for a lost notification), and when
 * one of this worker's pipelines ends. For a pipeline running here:
 *   row gone            → stop (the slot is kept: a hand-deleted row says nothing about it)
 *   delete requested    → stop, drop the slot if the row asks for it, delete the row
 *   status PAUSE        → stop, state `paused`
 *   config_version moved → graceful restart with the new configuration
 * For a pipeline with status START that runs nowhere, the worker takes its lease (LeaseProvider) when it
 * has room, and starts it.
 *
 * Spreading. A worker takes at most `maxPipelines`, and no more than its share (started pipelines
 * divided by live workers, from `floe.worker` heartbeats) unless a pipeline has had no owner for
 * `orphanGraceMs` (its owner died and the heartbeat has not expired yet). Candidates are ranked by
 * rendezvous hashing of (worker, pipeline), so workers starting together prefer different pipelines. A
 * worker above its share while another live worker is below it hands one pipeline over (a graceful
 * stop; it does not take that pipeline back for a while), and the next one only once another worker
 * holds it. When a worker above its share ends up taking it (the "underloaded" worker is dead but its
 * heartbeat has not expired yet), handovers pause for ten poll intervals instead of bouncing pipelines.
 *
 * Isolation. Each pipeline runs in its own task: configuration resolution, source connections and the
 * runtime of one pipeline never wait for another's. The reconciliation only starts and stops tasks; it
 * awaits nothing but control-plane statements and lease calls, and the map of tasks is plain data (no
 * lock is ever held across I/O).
 *
 * A pipeline task (PipelineTask) runs `runPipeline` until asked to stop, restarting it after a crash with
 * capped exponential backoff, and writes what it observes (state, last_error, lag, durable LSN, table
 * states) back to the rows, guarded by `owner_worker` so a worker that lost the lease cannot overwrite
 * the new owner's reports.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Registry } from 'prom-client';
import { FloeError, coerceError } from '../errors.js';
import type { Destination } from '../destination/destination.js';
import type { StateStore } from '../store/state-store.js';
import type { Logger } from '../telemetry/logger.js';
import { formatLsn } from '../postgres/lsn.js';
import { connectSource, redactUrl } from '../postgres/source.js';
import { runPipeline, type PipelineEvents } from '../pipeline/pipeline.js';
import { PipelineControl, type TableState } from '../pipeline/controls.js';
import { combineEvents, type FloeMetrics } from '../telemetry/metrics.js';
import { parseDestination } from '../cli/destination-url.js';
import type { Lease, LeaseProvider } from './lease.js';
import {
  resolvePipelineConfig,
  type PipelineState,
  type ResolvedDestination,
  type ResolvedPipeline,
  type RuntimeOptions,
} from './config.js';
import { clearResyncRequest, listPipelineTables, loadPipelineRows, reportTableState, type PipelineRows } from './repository.js';
import type { PipelineTableRow } from './config.js';
import { CONFIG_CHANNEL } from './schema.js';
import { redactSecrets, type Environment } from './secrets.js';
import { liveWorkers } from './worker.js';
import { withTls } from '../postgres/tls.js';

export interface ManagerOptions {
  /** The control-plane database (for the LISTEN connection). */
  readonly url: string;
  /** Control-plane statements (reads, state reports). A few connections suffice. */
  readonly db: pg.Pool;
  readonly worker: string;
  readonly leases: LeaseProvider;
  /** The state store; each pipeline writes through `store.fenced(lease.token)`. */
  readonly store: StateStore;
  readonly log: Logger;
  readonly metrics?: FloeMetrics;
  /** At most this many pipelines on this worker. (Default: 16) */
  readonly maxPipelines?: number;
  /** Reconciliation without a notification. (Default: 5000 ms) */
  readonly pollIntervalMs?: number;
  /** Lag and durable LSN are written to the row at most this often. (Default: 5000 ms) */
  readonly reportIntervalMs?: number;
  /** A worker whose heartbeat is older than this is not counted as alive. (Default: 15000 ms) */
  readonly workerTtlMs?: number;
  /** A pipeline without an owner for this long is taken even above this worker's share. (Default: 2 × pollIntervalMs) */
  readonly orphanGraceMs?: number;
  /** Restart delays after a crash. (Defaults: 1 s doubling to 5 min; reset after 2 min of health) */
  readonly restartBackoff?: { readonly initialMs?: number; readonly maxMs?: number; readonly healthyMs?: number };
  /** Environment for secret references. (Default: process.env) */
  readonly env?: Environment;
  /** Runtime settings under the rows' options (tests use short intervals). */
  readonly runtimeDefaults?: RuntimeOptions;
  /**
   * Called when an attempt to run a pipeline starts; `signal` aborts when that attempt ends (stop, restart,
   * crash). `floe run` uses it to watch the pipeline's source and slot and to run its heartbeat.
   */
  readonly onPipelineRunning?: (config: ResolvedPipeline, signal: AbortSignal) => void;
  /** Opens a destination (Default: parseDestination, which knows DuckDB). */
  readonly openDestination?: (destination: ResolvedDestination) => Destination;
}

type StopReason = 'shutdown' | 'pause' | 'delete' | 'row-deleted' | 'rebalance' | 'lease-lost';

interface Settings {
  readonly maxPipelines: number;
  readonly pollIntervalMs: number;
  readonly reportIntervalMs: number;
  readonly workerTtlMs: number;
  readonly orphanGraceMs: number;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number; readonly healthyMs: number };
}

export class PipelineManager {
  readonly #o: ManagerOptions;
  readonly #s: Settings;
  readonly #log: Logger;
  readonly #tasks = new Map<string, PipelineTask>();
  /** Pipelines handed over to another worker, and when this worker may take them again. */
  readonly #cooldown = new Map<string, number>();
  /** First reconciliation at which each START pipeline had no lease holder. */
  readonly #orphanSince = new Map<string, number>();
  #wake: (() => void) | undefined;
  #dirty = true;
  #lastReconcileOk = 0;
  #workersSeen: { count: number; since: number } = { count: 0, since: 0 };
  /** The pipeline last handed over, until another worker holds it (one handover at a time). */
  #handover: { name: string; at: number } | undefined;
  #handoverPausedUntil = 0;

  constructor(options: ManagerOptions) {
    this.#o = options;
    const pollIntervalMs = options.pollIntervalMs ?? 5000;
    this.#s = {
      maxPipelines: options.maxPipelines ?? 16,
      pollIntervalMs,
      reportIntervalMs: options.reportIntervalMs ?? 5000,
      workerTtlMs: options.workerTtlMs ?? 15_000,
      orphanGraceMs: options.orphanGraceMs ?? 2 * pollIntervalMs,
      backoff: {
        initialMs: options.restartBackoff?.initialMs ?? 1000,
        maxMs: options.restartBackoff?.maxMs ?? 300_000,
        healthyMs: options.restartBackoff?.healthyMs ?? 120_000,
      },
    };
    this.#log = options.log;
  }

  /** Ready when the control plane answered within the last three poll intervals. */
  ready(): { ok: true } | { ok: false; reason: string } {
    if (Date.now() - this.#lastReconcileOk <= 3 * this.#s.pollIntervalMs) return { ok: true };
    return { ok: false, reason: 'the control-plane database has not answered recently' };
  }

  /**
   * Runs until `signal` aborts, then stops every pipeline gracefully (each drains: flushes and
   * acknowledges what is durable) and releases its lease.
   */
  async run(signal: AbortSignal): Promise<void> {
    const listener = this.#listen(signal);
    const timer = setInterval(() => this.#kick(), this.#s.pollIntervalMs);
    try {
      while (!signal.aborted) {
        if (!this.#dirty) {
          await new Promise<void>((resolve) => {
            this.#wake = resolve;
            signal.addEventListener('abort', this.#wake, { once: true });
          });
          if (this.#wake) signal.removeEventListener('abort', this.#wake);
          this.#wake = undefined;
          continue;
        }
        this.#dirty = false;
        try {
          await this.#reconcile(signal);
          this.#lastReconcileOk = Date.now();
        } catch (err) {
          // The control plane is unreachable: pipelines keep running on their leases; try again later.
          this.#log.warn({ err: coerceError(err).message }, 'reconciliation failed; retrying at the next poll');
        }
      }
    } finally {
      clearInterval(timer);
      const tasks = [...this.#tasks.values()];
      for (const t of tasks) t.stop('shutdown');
      await Promise.all(tasks.map((t) => t.done));
      await listener;
    }
  }

  #kick(): void {
    this.#dirty = true;
    this.#wake?.();
  }

  /** LISTEN on a dedicated connection; reconnects with backoff, and reconciles after each (re)connect. */
  async #listen(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    while (!signal.aborted) {
      const client = new pg.Client({ connectionString: withTls(this.#o.url), application_name: 'floe-listen', keepAlive: true });
      const closed = new Promise<string>((resolve) => {
        client.on('error', (err) => resolve(coerceError(err).message));
        client.on('end', () => resolve('connection closed'));
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${CONFIG_CHANNEL}`);
        attempt = 0;
        client.on('notification', () => this.#kick());
        this.#kick(); // notifications may have been missed while disconnected
        const onAbort = () => void client.end().catch(() => undefined);
        signal.addEventListener('abort', onAbort, { once: true });
        const reason = await closed;
        signal.removeEventListener('abort', onAbort);
        if (!signal.aborted) this.#log.warn({ reason }, 'control-plane notification connection lost; reconnecting');
      } catch (err) {
        if (!signal.aborted) {
          this.#log.warn({ err: coerceError(err).message }, 'cannot listen for control-plane notifications; polling meanwhile');
        }
      } finally {
        await client.end().catch(() => undefined);
      }
      attempt++;
      await sleep(Math.min(30_000, 500 * 2 ** Math.min(attempt, 6)), undefined, { signal }).catch(() => undefined);
    }
  }

  async #reconcile(signal: AbortSignal): Promise<void> {
    const rows = await loadPipelineRows(this.#o.db);
    const byId = new Map(rows.map((r) => [r.pipeline.id, r]));
    const now = Date.now();

    // ---- pipelines running here ------------------------------------------------------------
    for (const task of this.#tasks.values()) {
      const r = byId.get(task.id);
      if (!r) task.stop('row-deleted');
      else if (r.pipeline.deleteRequestedAt) task.stop('delete', r);
      else if (r.pipeline.status !== 'START') task.stop('pause');
      else task.update(r);
    }
    await this.#feedControls();
    if (signal.aborted) return;

    // ---- pipelines to take -----------------------------------------------------------------
    for (const [id, until] of this.#cooldown) if (until <= now) this.#cooldown.delete(id);
    const started = rows.filter((r) => r.pipeline.status === 'START' && !r.pipeline.deleteRequestedAt);
    const toDelete = rows.filter((r) => r.pipeline.deleteRequestedAt);
    const candidates = [...started, ...toDelete].filter((r) => !this.#tasks.has(r.pipeline.id) && !this.#cooldown.has(r.pipeline.id));
    const workers = await liveWorkers(this.#o.db, this.#s.workerTtlMs);
    if (!workers.includes(this.#o.worker)) workers.push(this.#o.worker);
    if (workers.length !== this.#workersSeen.count) this.#workersSeen = { count: workers.length, since: now };
    const share = Math.ceil(started.length / workers.length);
    const limit = Math.min(this.#s.maxPipelines, share);
    const active = () => [...this.#tasks.values()].filter((t) => !t.stopping && t.mode === 'run').length;
    if (candidates.length === 0 && active() <= share && !this.#handover) {
      this.#orphanSince.clear();
      return;
    }
    const holders = await this.#o.leases.holders();
    const names = new Set(rows.map((r) => r.pipeline.name));
    for (const name of this.#orphanSince.keys()) if (!names.has(name) || holders.has(name)) this.#orphanSince.delete(name);
    const ranked = candidates.sort((a, b) => rank(this.#o.worker, b.pipeline.id).localeCompare(rank(this.#o.worker, a.pipeline.id)));
    for (const r of ranked) {
      if (signal.aborted) return;
      const { name } = r.pipeline;
      if (holders.has(name)) continue;
      const orphanSince = this.#orphanSince.get(name) ?? now;
      this.#orphanSince.set(name, orphanSince);
      const deleting = r.pipeline.deleteRequestedAt !== null;
      if (!deleting) {
        const n = active();
        if (n >= this.#s.maxPipelines) continue;
        if (n >= limit && now - orphanSince < this.#s.orphanGraceMs) continue;
      }
      const lease = await this.#o.leases.tryAcquire(name, this.#o.worker);
      if (!lease) continue;
      this.#orphanSince.delete(name);
      this.#start(r, lease, deleting ? 'delete' : 'run');
    }

    // ---- hand one pipeline over when above the share and another worker is below it -------
    const counts = new Map<string, number>(workers.map((w) => [w, 0]));
    for (const owner of holders.values()) counts.set(owner, (counts.get(owner) ?? 0) + 1);
    const pending = this.#handover;
    if (pending) {
      const holder = holders.get(pending.name);
      if (holder && holder !== this.#o.worker) {
        // Taken by a worker that is now above its share: the worker that looked underloaded is not
        // claiming (it died and its heartbeat has not expired, or it is at its maximum). Stop handing over.
        if (counts.get(holder)! > share) this.#handoverPausedUntil = now + 10 * this.#s.pollIntervalMs;
        this.#handover = undefined;
      } else if (now - pending.at > this.#s.orphanGraceMs + 4 * this.#s.pollIntervalMs) {
        this.#handoverPausedUntil = now + 10 * this.#s.pollIntervalMs;
        this.#handover = undefined;
      }
    }
    const mine = [...this.#tasks.values()].filter((t) => !t.stopping && t.mode === 'run');
    const settled = now - this.#workersSeen.since >= 2 * this.#s.pollIntervalMs;
    if (mine.length > share && settled && !this.#handover && now >= this.#handoverPausedUntil) {
      const underloaded = [...counts].some(([w, n]) => w !== this.#o.worker && n < share && n < this.#s.maxPipelines);
      if (underloaded) {
        const victim = mine.sort((a, b) => rank(this.#o.worker, a.id).localeCompare(rank(this.#o.worker, b.id)))[0]!;
        this.#log.info({ pipeline: victim.name, share, running: mine.length }, 'handing a pipeline over to a less loaded worker');
        this.#cooldown.set(victim.id, now + 6 * this.#s.pollIntervalMs);
        this.#handover = { name: victim.name, at: now };
        victim.stop('rebalance');
      }
    }
  }

  #start(rows: PipelineRows, lease: Lease, mode: 'run' | 'delete'): void {
    const task = new PipelineTask(rows, lease, mode, {
      manager: this.#o,
      settings: this.#s,
      log: this.#log.child({ pipeline: rows.pipeline.name }),
    });
    this.#tasks.set(task.id, task);
    void task.done.finally(() => {
      if (this.#tasks.get(task.id) === task) this.#tasks.delete(task.id);
      this.#kick();
    });
  }

  /** Per-table controls (skip, resync) of the running pipelines, from floe.pipeline_table. */
  async #feedControls(): Promise<void> {
    const running = [...this.#tasks.values()].filter((t) => !t.stopping && t.mode === 'run');
    if (running.length === 0) return;
    const tables = await listPipelineTables(this.#o.db);
    for (const task of running) {
      await task.applyTableControls(tables.filter((t) => t.pipelineId === task.id));
    }
  }
}

/** Rendezvous hash: each worker ranks pipelines differently, all workers agree on nothing but the lock. */
function rank(worker: string, pipeline: string): string {
  return createHash('sha1').update(`${worker}\0${pipeline}`).digest('hex');
}

/** PipelineControl that only announces a skip set when it really changed. */
class TableControls extends PipelineControl {
  #key = '';

  setSkippedIfChanged(tables: string[]): void {
    const key = [...tables].sort().join('\n');
    if (key === this.#key) return;
    this.#key = key;
    this.setSkipped(tables);
  }
}

interface TaskContext {
  readonly manager: ManagerOptions;
  readonly settings: Settings;
  readonly log: Logger;
}

/**
 * One pipeline on this worker, from taking its lease to releasing it.
 *
 *   run:    loop { resolve config → runPipeline } until stopped; a crash is written as `failed` and
 *           retried after a backoff (1 s doubling to the cap; errors that need an operator wait the cap,
 *           or less if the configuration changes meanwhile);
 *   delete: stop (if running), drop the slot when the row asks for it, delete the row.
 */
class PipelineTask {
  readonly id: string;
  readonly mode: 'run' | 'delete';
  readonly log: Logger;
  readonly control = new TableControls();
  readonly done: Promise<void>;
  #rows: PipelineRows;
  readonly #lease: Lease;
  readonly #ctx: TaskContext;
  readonly #stop = new AbortController();
  #stopReason: StopReason | undefined;
  /** Aborts the current attempt (or backoff wait) so the loop restarts with the latest configuration. */
  #restart = new AbortController();
  /** config_version of the rows the current attempt was built from. */
  #configVersion: number;
  #status: StatusReporter;
  readonly #tablePending = new Map<string, { state: TableState; rows: number | undefined; error: string | null }>();
  #tableWriting: Promise<void> | undefined;

  constructor(rows: PipelineRows, lease: Lease, mode: 'run' | 'delete', ctx: TaskContext) {
    this.id = rows.pipeline.id;
    this.mode = mode;
    this.log = ctx.log;
    this.#rows = rows;
    this.#lease = lease;
    this.#ctx = ctx;
    this.#configVersion = rows.pipeline.configVersion;
    this.#status = new StatusReporter(ctx.manager.db, this.id, ctx.manager.worker, ctx.settings.reportIntervalMs, ctx.log);
    lease.lost.addEventListener('abort', () => this.stop('lease-lost'), { once: true });
    if (lease.lost.aborted) this.stop('lease-lost');
    this.done = this.#main().catch((err) => this.log.error({ err: coerceError(err).message }, 'pipeline task failed'));
  }

  get name(): string {
    return this.#rows.pipeline.name;
  }

  get stopping(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Newer rows from a reconciliation: a changed configuration restarts the pipeline gracefully. */
  update(rows: PipelineRows): void {
    this.#rows = rows;
    if (rows.pipeline.configVersion !== this.#configVersion && !this.stopping) {
      this.log.info({ from: this.#configVersion, to: rows.pipeline.configVersion }, 'configuration changed; restarting the pipeline');
      this.#configVersion = rows.pipeline.configVersion;
      this.#restart.abort();
    }
  }

  /** Feeds the pipeline's per-table controls (floe.pipeline_table) to the running runtime. */
  async applyTableControls(tables: readonly PipelineTableRow[]): Promise<void> {
    this.control.setSkippedIfChanged(tables.filter((t) => t.skip).map((t) => t.tableName));
    for (const t of tables) {
      if (!t.resyncRequestedAt) continue;
      this.control.requestResync(t.tableName);
      // Handed over: the request is cleared so it is not repeated at the next start. A pipeline that
      // stops mid-resync resumes the table's snapshot from the state store.
      await clearResyncRequest(this.#ctx.manager.db, this.id, t.tableName, t.resyncRequestedAt);
      this.log.info({ table: t.tableName }, 'table resync requested');
    }
  }

  stop(reason: StopReason, rows?: PipelineRows): void {
    if (rows) this.#rows = rows;
    if (this.#stopReason === 'delete' || this.#stopReason === 'row-deleted') return;
    // A delete request that arrives while the task is already stopping still has to be carried out.
    if (this.stopping && reason !== 'delete' && reason !== 'row-deleted') return;
    this.#stopReason = reason;
    this.#stop.abort();
  }

  async #main(): Promise<void> {
    const { log } = this;
    let config: ResolvedPipeline | undefined;
    try {
      if (this.mode === 'run') config = await this.#runLoop();
      if (this.#stopReason === 'delete' || this.mode === 'delete') {
        await this.#delete(config);
        return;
      }
      await this.#status.flush();
      await this.#tableWriting;
      if (this.#stopReason === 'row-deleted') {
        if (config) {
          log.warn(
            { slot: config.slotName, source: config.sourceName },
            'pipeline row deleted: stopped; its replication slot is kept (drop it, or delete with drop_slot next time)',
          );
        }
        return;
      }
      const final: PipelineState = this.#stopReason === 'pause' ? 'paused' : this.#status.state === 'failed' ? 'failed' : 'stopped';
      // Giving the pipeline up: the next owner (or nobody, when paused) reports from here on.
      await this.#status.report({ state: final, ownerWorker: null }, true);
    } finally {
      this.#status.close();
      await this.#lease.release().catch(() => undefined);
    }
  }

  /** Runs the pipeline until stopped; returns the last configuration it ran with. */
  async #runLoop(): Promise<ResolvedPipeline | undefined> {
    const { manager, settings } = this.#ctx;
    const { log } = this;
    const stop = this.#stop.signal;
    let attempt = 0;
    let config: ResolvedPipeline | undefined;
    // Claims the row; the token shows which lease the current owner holds (the PostgreSQL provider has
    // recorded it already, the Redis one keeps its counter in Redis).
    await this.#status.report({ state: 'starting', ownerWorker: manager.worker, leaseToken: this.#lease.token }, true);
    while (!stop.aborted) {
      if (this.#restart.signal.aborted) this.#restart = new AbortController();
      const attemptSignal = linked([stop, this.#restart.signal]);
      const startedAt = Date.now();
      let error: FloeError | undefined;
      const resolved = resolvePipelineConfig(this.#rows, manager.env ?? process.env);
      this.#configVersion = this.#rows.pipeline.configVersion;
      try {
        if (!resolved.ok) {
          error = resolved.error;
        } else {
          config = resolved.config;
          error = await this.#attempt(config, attemptSignal.signal);
        }
      } finally {
        attemptSignal.dispose();
      }
      if (stop.aborted) break;
      if (!error) continue; // a configuration change: start again at once
      if (Date.now() - startedAt >= settings.backoff.healthyMs) attempt = 0;
      const needsOperator = error.retry !== 'timed';
      const delay = needsOperator
        ? settings.backoff.maxMs
        : Math.min(settings.backoff.maxMs, settings.backoff.initialMs * 2 ** attempt) * (0.75 + Math.random() / 4);
      attempt++;
      const message = redactSecrets(error.oneLine(), config?.secretValues ?? []);
      log.error({ err: message, kind: error.kind, retry: error.retry, attempt, delayMs: Math.round(delay) }, 'pipeline failed');
      await this.#status.report({ state: 'failed', lastError: message }, true);
      // A configuration change ends the wait early: the operator may just have fixed the problem.
      const wait = linked([stop, this.#restart.signal]);
      await sleep(delay, undefined, { signal: wait.signal }).catch(() => undefined);
      wait.dispose();
      if (!stop.aborted) await this.#status.report({ state: 'starting' }, true);
    }
    return config;
  }

  /** One run of the pipeline; resolves with its error, or undefined when it was stopped or restarted. */
  async #attempt(config: ResolvedPipeline, signal: AbortSignal): Promise<FloeError | undefined> {
    const { manager } = this.#ctx;
    let destination: Destination | undefined;
    const attempt = new AbortController();
    try {
      const store = manager.store.fenced(this.#lease.token);
      // Records this lease's token in the store at once (a write of the recorded position, which
      // changes nothing else): from here on a previous owner that still believes it holds the lease
      // has every progress write refused, even before this owner's first batch.
      await store.init();
      const progress = await store.getProgress(config.name);
      if (progress) await store.recordDurable(config.name, progress.incarnation, progress.durableLsn, progress.ackLsn);
      // The runtime reads the controls at start: a skipped table is never snapshotted.
      await this.applyTableControls(await listPipelineTables(manager.db, this.id));
      destination = manager.openDestination
        ? manager.openDestination(config.destination)
        : defaultDestination(config.destination, this.log, manager.metrics?.registry);
      const metricsEvents = manager.metrics?.pipelineEvents(config.name);
      const events: PipelineEvents = combineEvents(metricsEvents, this.#status.events(config.secretValues), {
        table: (table, state, detail) => this.#reportTable(table, state, detail, config),
      });
      const attemptSignal = linked([signal, attempt.signal]);
      attempt.signal.addEventListener('abort', () => attemptSignal.dispose(), { once: true });
      manager.onPipelineRunning?.(config, attemptSignal.signal);
      // The destination's circuit breaker, for floe status (written with the lag, at most every interval).
      const opened = destination;
      let breaker: string | undefined;
      const health = setInterval(() => {
        const now = opened.health?.().breaker;
        if (now !== breaker) void this.#status.report({ destinationBreaker: (breaker = now) ?? null }, false);
      }, 1000);
      attempt.signal.addEventListener(
        'abort',
        () => {
          clearInterval(health);
          void this.#status.report({ destinationBreaker: null }, false);
        },
        { once: true },
      );
      await runPipeline(
        {
          ...stripUndefined(manager.runtimeDefaults ?? {}),
          ...stripUndefined(config.runtime),
          // The name keys the state store, the lease and the destination's bookkeeping: it cannot change
          // (schema.ts), and a pipeline deleted without dropping its slot resumes when added again.
          name: config.name,
          source: { ...config.source, applicationName: `floe-${config.name}` },
          publication: config.publication,
          slotName: config.slotName,
          destination,
          store,
          log: this.log,
          control: this.control,
          events,
        },
        signal,
      );
      return undefined;
    } catch (err) {
      const e = coerceError(err);
      if (signal.aborted && e.retry === 'timed') return undefined;
      return e;
    } finally {
      attempt.abort();
      await destination?.close().catch(() => undefined);
    }
  }

  /**
   * Table states go to floe.pipeline_table one write at a time per pipeline, the latest per table: a
   * snapshot reporting progress per range never queues up statements.
   */
  #reportTable(table: string, state: TableState, detail: { rows?: number; error?: string } | undefined, config: ResolvedPipeline): void {
    const error = detail?.error === undefined ? null : redactSecrets(detail.error, config.secretValues);
    this.#tablePending.set(table, { state, rows: detail?.rows, error });
    if (this.#tableWriting) return;
    this.#tableWriting = (async () => {
      while (this.#tablePending.size > 0) {
        const [name, report] = this.#tablePending.entries().next().value!;
        this.#tablePending.delete(name);
        await reportTableState(this.#ctx.manager.db, this.id, name, report.state, { rows: report.rows, error: report.error }).catch((err) =>
          this.log.warn({ err: coerceError(err).message, table: name }, 'could not report a table state'),
        );
      }
    })().finally(() => {
      this.#tableWriting = undefined;
    });
  }

  /** Carries out a delete request: the pipeline is stopped; drop its slot if asked, then its row. */
  async #delete(ran: ResolvedPipeline | undefined): Promise<void> {
    const { manager, settings } = this.#ctx;
    const rows = this.#rows;
    const fail = async (message: string) => {
      this.log.error({ err: message }, 'cannot delete the pipeline');
      await this.#status.report({ state: 'failed', lastError: message, ownerWorker: manager.worker }, true);
      // The row stays and the lease is held a while, so workers do not retry in a tight loop; the
      // operator fixes the configuration (or clears drop_slot) and the next attempt succeeds.
      await sleep(Math.min(settings.backoff.maxMs, 60_000), undefined, { signal: this.#stop.signal }).catch(() => undefined);
    };
    if (rows.pipeline.dropSlot) {
      let config = ran;
      if (!config) {
        const resolved = resolvePipelineConfig(rows, manager.env ?? process.env);
        if (!resolved.ok) return fail(`cannot drop the slot of the deleted pipeline: ${resolved.error.oneLine()}`);
        config = resolved.config;
      }
      try {
        await dropSlotWhenReleased(config);
        this.log.info({ slot: config.slotName }, 'replication slot dropped');
      } catch (err) {
        return fail(`cannot drop the replication slot: ${redactSecrets(coerceError(err).oneLine(), config.secretValues)}`);
      }
    }
    await this.#status.flush();
    await manager.db.query(`DELETE FROM floe.pipeline WHERE id = $1 AND delete_requested_at IS NOT NULL`, [this.id]);
    this.log.info({ droppedSlot: rows.pipeline.dropSlot }, 'pipeline deleted (destination data is kept)');
  }
}

function defaultDestination(d: ResolvedDestination, log: Logger, registry: Registry | undefined): Destination {
  // Snowflake takes its key (`private_key`) and passphrase from the resolved secret references.
  return parseDestination(d.url, { deleteMode: d.deleteMode, secrets: d.secrets, log, registry });
}

/** Drops the slot once the stopped pipeline's walsender has let it go (that takes a moment). */
async function dropSlotWhenReleased(config: ResolvedPipeline): Promise<void> {
  const client = await connectSource({ ...config.source, applicationName: 'floe-drop-slot' });
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [config.slotName]);
        return;
      } catch (err) {
        // 55006: the slot is still active (its walsender is exiting).
        if ((err as { code?: string }).code !== '55006' || Date.now() > deadline) {
          throw coerceError(err, `cannot drop slot ${config.slotName} on ${redactUrl(config.source.url)}`);
        }
      }
      await sleep(200);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

interface StatusFields {
  state?: PipelineState;
  lastError?: string;
  lagBytes?: number;
  durableLsn?: string;
  ownerWorker?: string | null;
  leaseToken?: bigint;
  destinationBreaker?: string | null;
}

/**
 * Writes what a task observes to its pipeline row. Writes are coalesced and run one at a time; state
 * changes go out at once, lag and durable LSN at most every `intervalMs`. Every write is guarded by
 * `owner_worker` (except the one that claims the row), so a worker that lost its lease cannot overwrite
 * the reports of the pipeline's new owner.
 */
class StatusReporter {
  readonly #db: pg.Pool;
  readonly #id: string;
  readonly #worker: string;
  readonly #log: Logger;
  readonly #timer: NodeJS.Timeout;
  #pending: StatusFields = {};
  #writing: Promise<void> | undefined;
  state: PipelineState | undefined;

  constructor(db: pg.Pool, id: string, worker: string, intervalMs: number, log: Logger) {
    this.#db = db;
    this.#id = id;
    this.#worker = worker;
    this.#log = log;
    this.#timer = setInterval(() => void this.flush(), intervalMs);
    this.#timer.unref();
  }

  /** Pipeline events that feed the row: phase → state, retries → last_error, lag and durable LSN. */
  events(secrets: readonly string[]): PipelineEvents {
    return {
      phase: (p) => {
        const state: PipelineState | undefined =
          p === 'connecting' ? 'starting' : p === 'snapshotting' ? 'snapshotting' : p === 'streaming' ? 'streaming' : undefined;
        if (state) void this.report({ state }, true);
      },
      retrying: (error) => void this.report({ lastError: redactSecrets(error.oneLine(), secrets) }, true),
      batchWritten: (_rows, _bytes, durableLsn) => void this.report({ durableLsn: formatLsn(durableLsn) }, false),
      acknowledged: (lsn, walEnd) => void this.report({ lagBytes: Number(walEnd > lsn ? walEnd - lsn : 0n) }, false),
    };
  }

  report(fields: StatusFields, now: boolean): Promise<void> {
    if (fields.state) this.state = fields.state;
    this.#pending = { ...this.#pending, ...fields };
    return now ? this.flush() : Promise.resolve();
  }

  /** Writes what is pending; resolves when everything reported so far is written (or failed). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
    const fields = this.#pending;
    if (Object.keys(fields).length === 0) return;
    this.#pending = {};
    this.#writing = this.#write(fields).finally(() => {
      this.#writing = undefined;
    });
    await this.#writing;
  }

  close(): void {
    clearInterval(this.#timer);
  }

  async #write(f: StatusFields): Promise<void> {
    const sets: string[] = [];
    const values: unknown[] = [this.#id, this.#worker];
    const set = (column: string, value: unknown, cast = '') => {
      values.push(value);
      sets.push(`${column} = $${values.length}${cast}`);
    };
    if (f.state) set('state', f.state);
    if (f.lastError !== undefined) {
      set('last_error', f.lastError);
      sets.push('last_error_at = now()');
    }
    if (f.lagBytes !== undefined) set('lag_bytes', f.lagBytes, '::bigint');
    if (f.durableLsn !== undefined) set('durable_lsn', f.durableLsn, '::pg_lsn');
    if (f.ownerWorker !== undefined) set('owner_worker', f.ownerWorker);
    if (f.leaseToken !== undefined) set('lease_token', f.leaseToken.toString(), '::bigint');
    if (f.destinationBreaker !== undefined) set('destination_breaker', f.destinationBreaker);
    // Claiming the row (owner_worker := me) is unconditional: the caller holds the lease. Every other
    // write only lands while this worker is still the recorded owner.
    const guard = f.ownerWorker === this.#worker ? '' : ' AND owner_worker = $2';
    try {
      await this.#db.query(`UPDATE floe.pipeline SET ${sets.join(', ')} WHERE id = $1 AND $2::text IS NOT NULL${guard}`, values);
    } catch (err) {
      // Reports are best effort: the next one carries the latest values again.
      this.#log.warn({ err: coerceError(err).message }, 'could not report the pipeline state');
      this.#pending = { ...f, ...this.#pending };
    }
  }
}

/** A signal aborted when any of `signals` aborts; dispose() removes its listeners (AbortSignal.any keeps them). */
function linked(signals: readonly AbortSignal[]): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const abort = () => controller.abort();
  for (const s of signals) {
    if (s.aborted) controller.abort();
    else s.addEventListener('abort', abort, { once: true });
  }
  return { signal: controller.signal, dispose: () => signals.forEach((s) => s.removeEventListener('abort', abort)) };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
