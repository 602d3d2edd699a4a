/**
 * Publication changes and per-table controls while the pipeline streams (design.md §3 "Tables added
 * later"): other tables never stop streaming.
 *
 * - The publication's table list is re-read every `publicationPollMs`, on a control 'refresh', and when
 *   the stream names a relation it does not know. A new table is snapshotted in the background under
 *   the exported snapshot of its own temporary slot; its stream changes are journaled from the moment
 *   the main slot sends them, so changes below the snapshot LSN are superseded by the snapshot rows and
 *   later ones win (invariant 2). Its merges wait for `completeSnapshot` (invariant 2b).
 * - A table that left the publication is forgotten by the store; its destination tables stay.
 * - A resync is the same path as a new table, preceded by `resetTable`. The stream asks for one when a
 *   table changes between keyed and keyless (its destination target was recreated).
 * - A skipped table's changes are dropped by the stream and it is not snapshotted; when it leaves the
 *   skipped set it is resynced, since its destination state is stale.
 *
 * Snapshots run one after another in one background task, so the state store sees one writer per table:
 * a skip or removal that interrupts a table's snapshot is recorded after that snapshot has stopped.
 *
 * The reset and the temporary slot are ordered so no change is lost: `resetTable` excludes every journal
 * row loaded before it from the table's merges. For a table with a key it runs before the slot exists,
 * so every row it excludes is older than the new snapshot (which replaces them), and its truncate
 * marker takes the stream's position (below the snapshot LSN). A keyless table is never merged, so its
 * reset waits for the snapshot LSN and places the marker there, where its history restarts.
 */
import { formatLsn } from '../postgres/lsn.js';
import type pg from 'pg';
import { coerceError } from '../errors.js';
import type { TableSchema } from '../model.js';
import { qualifiedName } from '../model.js';
import { connectReplication, createSlotWithSnapshot, temporarySlotName } from '../postgres/replication.js';
import type { SchemaCache } from '../postgres/source.js';
import type { PipelineOptions } from './pipeline.js';
import type { TableState } from './controls.js';
import { copySnapshot, planRanges } from './snapshot.js';

/** What the coordinator needs from the replication stream. */
export interface StreamSide {
  /** Starts or stops dropping a relation's changes (skipped tables). */
  setDropped(relationId: number, dropped: boolean): void;
  /** The latest WAL position the stream has seen: every change received so far is at or below it. */
  position(): bigint;
  /** The schema of the latest Relation message for a relation, if one arrived. */
  relation(relationId: number): TableSchema | undefined;
  /** Ends the pipeline with an error (it restarts per its retry policy). */
  fail(err: unknown): void;
}

export interface LiveTablesConfig {
  readonly options: PipelineOptions;
  readonly meta: pg.Client;
  readonly cache: SchemaCache;
  readonly major: number;
  readonly incarnation: string;
  readonly snapshotParallelism: number;
  readonly snapshotRangePages: number;
  readonly slotWaitReportMs: number;
  readonly publicationPollMs: number;
}

interface Entry {
  table: TableSchema;
  /** What the publications published of the table when last read (SchemaCache.publishedSignatures). */
  signature?: string;
  state: Exclude<TableState, 'removed'>;
  /** Aborts this table's running snapshot. */
  job?: AbortController;
  rows: number;
  attempts: number;
}

type Task = { kind: 'snapshot'; name: string } | { kind: 'forget'; name: string };

export class LiveTables {
  readonly #c: LiveTablesConfig;
  readonly #tables = new Map<string, Entry>();
  readonly #queue: Task[] = [];
  readonly #retryTimers = new Set<NodeJS.Timeout>();
  #stream: StreamSide | undefined;
  #dirty = false;
  #wake: (() => void) | undefined;
  #running: Promise<unknown> | undefined;
  #controller = new AbortController();
  /** Resyncs the pipeline itself asked for (a table that changed between keyed and keyless). */
  readonly #resyncs = new Set<string>();

  constructor(config: LiveTablesConfig, initial: readonly { table: TableSchema; state: 'streaming' | 'skipped'; signature?: string }[]) {
    this.#c = config;
    for (const { table, state, signature } of initial) {
      this.#tables.set(qualifiedName(table), { table, state, rows: 0, attempts: 0, ...(signature === undefined ? {} : { signature }) });
    }
  }

  /** Whether the stream must drop changes of a table it meets for the first time. */
  drops(name: string): boolean {
    const e = this.#tables.get(name);
    return e ? e.state === 'skipped' : (this.#c.options.control?.skipped.has(name) ?? false);
  }

  /**
   * A Relation message named a table: re-read the publication if it is new, or if the name now belongs
   * to another relation (dropped and created again: the old table's rows must go).
   */
  noticeRelation(name: string, relationId: number): void {
    if (this.#tables.get(name)?.table.relationId !== relationId) this.refresh();
  }

  /** Snapshots a table again while the others stream (its destination target was recreated). */
  resync(name: string): void {
    this.#resyncs.add(name);
    this.refresh();
  }

  refresh(): void {
    this.#dirty = true;
    this.#wake?.();
  }

  /** Starts following the publication and the controls; `stop` (or the signal) ends it. */
  start(stream: StreamSide, signal: AbortSignal): void {
    this.#stream = stream;
    const controller = this.#controller;
    const onAbort = () => controller.abort();
    const control = this.#c.options.control;
    const onControl = () => this.refresh();
    control?.addEventListener('changed', onControl);
    control?.addEventListener('refresh', onControl);
    const poll = setInterval(() => this.refresh(), this.#c.publicationPollMs);
    controller.signal.addEventListener(
      'abort',
      () => {
        clearInterval(poll);
        for (const t of this.#retryTimers) clearTimeout(t);
        control?.removeEventListener('changed', onControl);
        control?.removeEventListener('refresh', onControl);
        signal.removeEventListener('abort', onAbort);
        this.#wake?.();
      },
      { once: true },
    );
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) controller.abort();
    // Controls changed and tables added since the start-up read of the publication are handled at once.
    this.#dirty = true;
    this.#running = Promise.all([this.#reconcileLoop(), this.#taskLoop()]);
  }

  /** Stops snapshots in progress (they resume at the next start) and waits for them. */
  async stop(): Promise<void> {
    this.#controller.abort();
    await this.#running;
  }

  #emit(name: string, state: TableState, detail?: { rows?: number; error?: string }): void {
    this.#c.options.events?.table?.(name, state, detail);
  }

  async #sleepUntilWoken(): Promise<void> {
    if (this.#dirty || this.#controller.signal.aborted) return;
    await new Promise<void>((resolve) => (this.#wake = resolve));
    this.#wake = undefined;
  }

  async #reconcileLoop(): Promise<void> {
    const signal = this.#controller.signal;
    while (!signal.aborted) {
      await this.#sleepUntilWoken();
      if (signal.aborted) return;
      this.#dirty = false;
      try {
        await this.#reconcile();
      } catch (err) {
        if (signal.aborted) return;
        // The catalog connection is the stream's too (Relation messages): it cannot go on without it.
        this.#stream!.fail(err);
        return;
      }
      this.#taskWake?.();
    }
  }

  async #reconcile(): Promise<void> {
    const { options, cache } = this.#c;
    const skipped = options.control?.skipped ?? new Set<string>();
    const resync = new Set([...(options.control?.takeResyncRequests() ?? []), ...this.#resyncs]);
    this.#resyncs.clear();
    // The poll's common case, nothing changed, costs one catalog query; the table schemas are read only
    // when the publications or the controls changed.
    const signatures = await cache.publishedSignatures(options.publication);
    if (resync.size === 0) {
      const unchanged =
        signatures.size === this.#tables.size &&
        [...signatures].every(([name, signature]) => {
          const e = this.#tables.get(name);
          return e !== undefined && e.signature === signature && (e.state === 'skipped') === skipped.has(name);
        });
      if (unchanged) return;
    }
    const published = await cache.publishedTables(options.publication);
    const current = new Map(published.map((t) => [qualifiedName(t), t] as const));
    for (const name of resync) {
      if (!current.has(name)) options.log.warn({ table: name }, 'resync requested for a table that is not in the publication; ignored');
    }
    for (const [name, e] of this.#tables) {
      if (current.has(name)) continue;
      options.log.info({ table: name }, 'table left the publication; it is no longer replicated (its destination tables stay)');
      e.job?.abort();
      this.#tables.delete(name);
      this.#stream!.setDropped(e.table.relationId, false);
      this.#enqueue({ kind: 'forget', name });
      this.#emit(name, 'removed');
    }
    for (const [name, table] of current) {
      const e = this.#tables.get(name);
      const signature = signatures.get(name);
      if (skipped.has(name)) {
        if (e?.state === 'skipped' && e.table.relationId === table.relationId) {
          e.signature = signature;
          continue;
        }
        options.log.info({ table: name }, 'table skipped: its changes are dropped until it is resynced');
        e?.job?.abort();
        this.#tables.set(name, { table, signature, state: 'skipped', rows: 0, attempts: 0 });
        this.#stream!.setDropped(table.relationId, true);
        this.#enqueue({ kind: 'forget', name });
        this.#emit(name, 'skipped');
        continue;
      }
      const why = !e
        ? 'table joined the publication'
        : e.state === 'skipped'
          ? 'table is no longer skipped'
          : resync.has(name)
            ? 'resync requested'
            : e.table.relationId !== table.relationId
              ? 'table was dropped and created again under the same name'
              : e.signature !== undefined && e.signature !== signature
                ? 'what the publication publishes of the table changed (column list, row filter or partitions)'
                : undefined;
      if (why !== undefined || !e) {
        options.log.info({ table: name }, `${why}: snapshotting it while the other tables stream`);
        e?.job?.abort();
        if (e && e.table.relationId !== table.relationId) this.#stream!.setDropped(e.table.relationId, false);
        // Changes stay dropped (for a skipped table) until its snapshot job has prepared the destination.
        this.#tables.set(name, { table, signature, state: 'snapshotting', rows: 0, attempts: 0 });
        this.#enqueue({ kind: 'snapshot', name });
        this.#emit(name, 'snapshotting', { rows: 0 });
        continue;
      }
      e.table = table;
      e.signature = signature;
    }
  }

  #enqueue(task: Task): void {
    const i = this.#queue.findIndex((t) => t.name === task.name);
    if (i >= 0) this.#queue.splice(i, 1);
    this.#queue.push(task);
    this.#taskWake?.();
  }

  #taskWake: (() => void) | undefined;

  async #taskLoop(): Promise<void> {
    const signal = this.#controller.signal;
    while (!signal.aborted) {
      const task = this.#queue.shift();
      if (!task) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            signal.removeEventListener('abort', wake);
            resolve();
          };
          this.#taskWake = wake;
          signal.addEventListener('abort', wake, { once: true });
        });
        this.#taskWake = undefined;
        continue;
      }
      try {
        if (task.kind === 'forget') {
          const { options, incarnation } = this.#c;
          await options.store.removeTable(options.name, incarnation, task.name);
        } else {
          await this.#snapshot(task.name);
        }
      } catch (err) {
        if (signal.aborted) return;
        this.#stream!.fail(err);
        return;
      }
    }
  }

  /** Prepares, resets and copies one table under a temporary slot's snapshot; then it streams. */
  async #snapshot(name: string): Promise<void> {
    const e = this.#tables.get(name);
    if (!e || e.state !== 'snapshotting') return;
    const { options, meta, incarnation } = this.#c;
    const { destination, store, log } = options;
    const stream = this.#stream!;
    const job = new AbortController();
    e.job = job;
    const signal = AbortSignal.any([this.#controller.signal, job.signal]);
    const table = e.table;
    let tmpRepl: pg.Client | undefined;
    const endSlotConnection = () => void tmpRepl?.end().catch(() => undefined);
    signal.addEventListener('abort', endSlotConnection, { once: true });
    try {
      await destination.prepare(table);
      // The stream may know a newer column list than the catalog read (a Relation message since).
      const streamed = stream.relation(table.relationId);
      if (streamed) await destination.prepare(streamed);
      // A skip or removal since the job started decides: it must not be undone here.
      if (signal.aborted) return;
      // From here on every change of the table is journaled: all of those above the snapshot LSN are.
      stream.setDropped(table.relationId, false);
      await store.removeTable(options.name, incarnation, name);
      if (table.hasKey) await destination.resetTable(table, stream.position());
      if (signal.aborted) return;
      tmpRepl = await connectReplication({ ...options.source, applicationName: `floe-${options.name}-snapshot` });
      if (signal.aborted) return;
      const tmp = await createSlotWithSnapshot(tmpRepl, options.source, {
        slotName: temporarySlotName(options.slotName),
        temporary: true,
        major: this.#c.major,
        log,
        reportAfterMs: this.#c.slotWaitReportMs,
      });
      const snapshotLsn = tmp.consistentPoint;
      if (!table.hasKey) await destination.resetTable(table, snapshotLsn);
      const plan = await planRanges(meta, table, this.#c.snapshotRangePages, this.#c.snapshotParallelism);
      // With the signature read along with `table`: a restart that finds another one (the table dropped
      // and created again while floe was stopped, say) resyncs it rather than resuming over ranges that
      // hold the old table's rows.
      await store.setTable(options.name, incarnation, name, {
        phase: 'snapshot',
        snapshotLsn,
        ...plan,
        ...(e.signature === undefined ? {} : { signature: e.signature }),
      });
      log.info({ table: name, snapshotLsn: formatLsn(snapshotLsn), ranges: plan.rangeCount }, 'live snapshot started');
      await copySnapshot([{ table, ...plan, pending: Array.from({ length: plan.rangeCount }, (_, i) => i) }], {
        source: options.source,
        snapshotName: tmp.snapshotName,
        snapshotLsn,
        parallelism: this.#c.snapshotParallelism,
        rangePages: this.#c.snapshotRangePages,
        destination,
        store,
        pipeline: options.name,
        incarnation,
        log,
        signal,
        onRange: (t, rows) => {
          e.rows += rows;
          options.events?.snapshotRange?.(name, rows);
          this.#emit(name, 'snapshotting', { rows: e.rows });
        },
        beforeRecordRange: options.failpoints?.beforeRecordRange,
      });
      if (signal.aborted) return;
      await destination.completeSnapshot(table);
      const signature = e.signature;
      await store.setTable(options.name, incarnation, name, {
        phase: 'streaming',
        snapshotLsn,
        ...plan,
        ...(signature ? { signature } : {}),
      });
      // Superseded meanwhile (a resync, skip or removal): the job that replaced this one reports.
      if (signal.aborted) return;
      e.state = 'streaming';
      log.info({ table: name, rows: e.rows }, 'live snapshot complete; the table streams');
      this.#emit(name, 'streaming', { rows: e.rows });
    } catch (err) {
      if (signal.aborted) return;
      const fe = coerceError(err);
      if (fe.retry !== 'timed') throw fe;
      // A transient failure (a dropped connection): this table retries, the others keep streaming.
      e.attempts++;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(e.attempts, 6));
      log.warn({ table: name, err: fe.message, attempt: e.attempts, delayMs: delay }, 'live snapshot failed; retrying');
      this.#emit(name, 'snapshotting', { rows: e.rows, error: fe.message });
      const timer = setTimeout(() => {
        this.#retryTimers.delete(timer);
        if (this.#tables.get(name) === e && e.state === 'snapshotting') this.#enqueue({ kind: 'snapshot', name });
      }, delay);
      this.#retryTimers.add(timer);
    } finally {
      signal.removeEventListener('abort', endSlotConnection);
      // Ending the connection drops the temporary slot and its exported snapshot.
      await tmpRepl?.end().catch(() => undefined);
      if (e.job === job) e.job = undefined;
    }
  }
}
