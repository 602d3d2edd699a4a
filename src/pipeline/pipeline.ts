/**
 * The pipeline runtime: one source publication, one slot, one destination.
 *
 * Lifecycle:
 *   connect → preflight → slot (create with exported snapshot, or resume) →
 *   snapshot of tables that need one → stream until aborted → drain.
 *
 * Acknowledgement (design.md invariants 1 and 3): the flush LSN sent to the
 * server is the end LSN of the last transaction whose every change the
 * destination made durable *and* the state store recorded. Writes are
 * pipelined: a batch is handed to the destination as soon as the previous one
 * was ACCEPTED, and a queue of written batches (their last change and the last
 * transaction they complete) waits for the destination to report COMMITTED
 * positions (`watchDurable`; for a synchronous destination, accepted is
 * committed). Only the prefix of that queue the committed position covers is
 * recorded and acknowledged, so the acknowledgement follows commits, never
 * sends. When nothing is in flight (no open transaction, nothing buffered or
 * uncommitted) the keepalive's wal_end may be acknowledged, so an idle
 * publication never pins WAL.
 *
 * Backpressure (invariant 5): changes are batched by bytes and time; once the
 * bytes written but not yet committed reach `maxUncommittedBytes` and the
 * next batch is full, the loop stops reading the socket. A timer keeps sending
 * status updates meanwhile, well inside wal_sender_timeout.
 */
import type pg from 'pg';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { FloeError, coerceError } from '../errors.js';
import type { Change, Cell, Position, TableSchema } from '../model.js';
import { comparePositions, qualifiedName, TupleChange } from '../model.js';
import type { Destination } from '../destination/destination.js';
import type { StateStore } from '../store/state-store.js';
import type { Logger } from '../telemetry/logger.js';
import { connectSource, FLOE_SCHEMA, preflight, serverInfo, SchemaCache, type SourceConfig } from '../postgres/source.js';
import {
  connectReplication,
  createSlotWithSnapshot,
  dropSlot,
  readSlot,
  startReplication,
  temporarySlotName,
  type BinaryMode,
} from '../postgres/replication.js';
import { decodeReplicationFrame, encodeStandbyStatus } from '../postgres/replication-protocol.js';
import { decodePgOutput, insertTupleBytes, splitStreamed, type PgOutputMessage } from '../postgres/pgoutput.js';
import type { BinaryDecoder } from '../postgres/binary-values.js';
import { tableDecoders, type BinaryRefusal } from '../postgres/binary-columns.js';
import { TransactionSpool } from './transaction-spool.js';
import { formatLsn } from '../postgres/lsn.js';
import { copySnapshot, planRanges, type SnapshotTask } from './snapshot.js';
import type { PipelineControl, TableState } from './controls.js';
import { LiveTables, type StreamSide } from './live-tables.js';

export interface PipelineOptions {
  /** Pipeline identity in the state store and destination bookkeeping. */
  readonly name: string;
  readonly source: SourceConfig;
  readonly publication: string;
  readonly slotName: string;
  readonly destination: Destination;
  readonly store: StateStore;
  readonly log: Logger;
  /** Parallel COPY connections for the snapshot. (Default: 4) */
  readonly snapshotParallelism?: number;
  /** Heap pages per snapshot range. (Default: 4096, i.e. 32 MiB of heap) */
  readonly snapshotRangePages?: number;
  /**
   * A batch is written when it holds this many bytes of row text. Larger batches cost more garbage
   * collection than they save in writes (bench/README.md). (Default: the destination's
   * `preferredBatchBytes`, else 1 MiB)
   */
  readonly batchMaxBytes?: number;
  /** ... or when its first change is this old. (Default: 1000 ms) */
  readonly batchMaxMs?: number;
  /**
   * Bytes of row text written to the destination but not yet committed there; beyond it the socket is not
   * read (backpressure). With an asynchronous destination this, not the commit latency, bounds how much
   * is in flight. (Default: 64 MiB)
   */
  readonly maxUncommittedBytes?: number;
  /** Journal → target merge cadence. (Default: 5000 ms) */
  readonly mergeIntervalMs?: number;
  /** Standby status update cadence; must stay well under wal_sender_timeout. (Default: 10000 ms) */
  readonly statusIntervalMs?: number;
  /** When slot creation waits this long for running transactions, they are logged. (Default: 5000 ms) */
  readonly slotWaitReportMs?: number;
  readonly events?: PipelineEvents;
  /** Skip and resync commands from the control plane, read at start and followed while streaming. */
  readonly control?: PipelineControl;
  /** How often the publication's table list is re-read while streaming. (Default: 10000 ms) */
  readonly publicationPollMs?: number;
  /**
   * Protocol 2 with `streaming 'on'`: the server sends a transaction larger than its
   * logical_decoding_work_mem while it runs instead of spilling it to its disk; floe keeps it in
   * `spoolDir` until it commits (transaction-spool.ts). (Default: true)
   */
  readonly streamLargeTransactions?: boolean;
  /** Where streamed transactions wait for their commit. (Default: FLOE_SPOOL_DIR, else the OS temp directory) */
  readonly spoolDir?: string;
  /**
   * 'on': pgoutput sends values in their binary send formats (`binary 'true'`), which floe decodes to the
   * same text as text mode. When a published column has a type floe does not decode from binary (money,
   * reg* types, tsquery, composites, user-defined ranges; binary-values.ts), the stream runs in text mode:
   * at start, or by reconnecting from the acknowledged position when such a column appears while streaming.
   * (Default: 'off'; docs/architecture.md#binary-mode says why)
   */
  readonly binary?: BinaryMode;
  /** Test hooks at risky steps. */
  readonly failpoints?: Failpoints;
}

export interface PipelineEvents {
  phase?(phase: 'connecting' | 'snapshotting' | 'streaming' | 'stopping' | 'stopped'): void;
  snapshotRange?(table: string, rows: number): void;
  /** After a batch is durable: its size, the durable LSN, changes per op and how long from write to commit. */
  batchWritten?(rows: number, bytes: number, durableLsn: bigint, details?: BatchDetails): void;
  /** A status update went out: the acknowledged LSN and the server's last known WAL end. */
  acknowledged?(lsn: bigint, serverWalEnd: bigint): void;
  merged?(journalRows: number): void;
  retrying?(error: FloeError, delayMs: number): void;
  /** A table's replication state changed (rows: snapshot rows copied so far, when known). */
  table?(table: string, state: TableState, detail?: { rows?: number; error?: string }): void;
}

export interface BatchDetails {
  readonly ops: Readonly<Record<Change['op'], number>>;
  readonly seconds: number;
}

export interface Failpoints {
  /** After a batch is durable in the destination, before the store records it. */
  afterDestinationWrite?(batch: { changes: number; endsMidTransaction: boolean }): Promise<void> | void;
  /** Before a snapshot range is recorded as done in the store. */
  beforeRecordRange?(table: TableSchema, rangeIndex: number): Promise<void> | void;
  /** After the slot was created, before its position is recorded. */
  afterSlotCreated?(): Promise<void> | void;
}

const DEFAULTS = {
  snapshotParallelism: 4,
  snapshotRangePages: 4096,
  batchMaxBytes: 1 << 20,
  batchMaxMs: 1000,
  maxUncommittedBytes: 64 << 20,
  mergeIntervalMs: 5000,
  statusIntervalMs: 10_000,
  slotWaitReportMs: 5000,
  publicationPollMs: 10_000,
  streamLargeTransactions: true,
  binary: 'off' as BinaryMode,
};

/**
 * What a run learnt that the next run of the same process must know. `binary`: 'text' once a column
 * floe cannot decode from binary was seen (the rest of the process streams text, so the same Relation
 * message replayed after a reconnect cannot refuse it again); 'reconnect' while the run that saw it ends.
 */
interface RunState {
  passedPreflight: boolean;
  progressed: boolean;
  binary: 'allowed' | 'reconnect' | 'text';
}

/** Binary mode of a stream: each relation's column decoders (by relation id) and the server's major. */
interface BinaryColumnsState {
  readonly decoders: Map<number, BinaryDecoder[]>;
  readonly major: number;
}

/** Runs until `signal` aborts (then drains and resolves) or a non-retryable error (then rejects). */
export async function runPipeline(options: PipelineOptions, signal: AbortSignal): Promise<void> {
  let attempt = 0;
  // A first start that fails (unreachable host, wrong password, ...) is reported at once: retrying
  // would hide a configuration mistake. Once the pipeline has passed preflight, transient failures
  // are retried with backoff.
  const state: RunState = { passedPreflight: false, progressed: false, binary: 'allowed' };
  for (;;) {
    try {
      await runOnce(options, signal, state);
      options.events?.phase?.('stopped');
      return;
    } catch (err) {
      const e = coerceError(err);
      if (signal.aborted) {
        options.events?.phase?.('stopped');
        if (e.retry === 'timed') return;
        throw e;
      }
      if (state.binary === 'reconnect') {
        // Not a failure: the stream met a column it cannot decode from binary (logged once, by the
        // streamer) and starts again in text mode from the acknowledged position, at once.
        state.binary = 'text';
        continue;
      }
      if (e.retry !== 'timed' || !state.passedPreflight) throw e;
      // A run that acknowledged something was healthy: its failure (e.g. a Snowflake channel that lost
      // uncommitted rows and needs a replay from the slot) restarts quickly, not after a growing backoff.
      if (state.progressed) attempt = 0;
      state.progressed = false;
      attempt++;
      const delay = Math.min(30_000, 250 * 2 ** Math.min(attempt, 7)) * (0.5 + Math.random() / 2);
      options.log.warn({ err: e.message, kind: e.kind, attempt, delayMs: Math.round(delay) }, 'pipeline failed, reconnecting');
      options.events?.retrying?.(e, delay);
      await sleep(delay, undefined, { signal }).catch(() => undefined); // an abort ends the wait early
      if (signal.aborted) return;
    }
  }
}

/**
 * Drops a slot this start created, once its walsender has let it go, and says so in the error; if the
 * slot cannot be dropped, the error says what was left behind and how to remove it.
 */
async function dropNewSlot(meta: pg.Client, slotName: string, cause: FloeError): Promise<FloeError> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await dropSlot(meta, slotName);
      return new FloeError(cause.kind, `${cause.message} (the replication slot "${slotName}" this start created was dropped)`, {
        cause,
        hint: cause.hint,
        retry: cause.retry,
      });
    } catch (err) {
      // 55006: still active for a moment after its connection closed.
      if ((err as { code?: string }).code === '55006' && Date.now() < deadline) {
        await sleep(100);
        continue;
      }
      return new FloeError(cause.kind, `${cause.message} (the replication slot "${slotName}" this start created was left behind)`, {
        cause,
        hint: `drop it unless you retry soon: SELECT pg_drop_replication_slot('${slotName}'); ${cause.hint ?? ''}`.trim(),
        retry: cause.retry,
      });
    }
  }
}

async function runOnce(options: PipelineOptions, signal: AbortSignal, state: RunState): Promise<void> {
  const { preferredBatchBytes, preferredMergeIntervalMs } = options.destination;
  const o = {
    ...DEFAULTS,
    ...(preferredBatchBytes ? { batchMaxBytes: preferredBatchBytes } : {}),
    ...(preferredMergeIntervalMs ? { mergeIntervalMs: preferredMergeIntervalMs } : {}),
    ...stripUndefined(options),
  };
  const { log, store, destination } = options;
  // Checked before anything exists on the source: an unusable spool directory leaves no slot behind.
  const spool = o.streamLargeTransactions
    ? TransactionSpool.open(o.spoolDir ?? (process.env.FLOE_SPOOL_DIR || tmpdir()), options.name)
    : undefined;
  options.events?.phase?.('connecting');
  let meta: pg.Client | undefined;
  let repl: pg.Client | undefined;
  try {
    meta = await connectSource({ ...options.source, applicationName: 'floe-meta' });
    await preflight(meta, options.publication);
    state.passedPreflight = true;
    const info = await serverInfo(meta);
    const cache = new SchemaCache(meta);
    await store.init();

    // ---- slot and incarnation ---------------------------------------------------------
    const progress = await store.getProgress(options.name);
    let slot = await readSlot(meta, options.slotName);
    if (slot && slot.plugin !== 'pgoutput') {
      throw new FloeError('source-setup', `slot "${options.slotName}" exists but uses plugin ${slot.plugin}, not pgoutput`, {
        hint: 'choose another --slot name, or drop that slot if it is unused',
      });
    }
    if (slot && slot.walStatus === 'lost') {
      log.error(
        { slot: options.slotName },
        'replication slot was invalidated (wal_status = lost); recreating it and resyncing every table',
      );
      await dropSlot(meta, options.slotName);
      slot = undefined;
    }
    if (slot && progress && progress.slotName === options.slotName && progress.ackLsn === 0n) {
      // A previous start created this slot and stopped before it could record the slot's first position:
      // nothing was copied or acknowledged under it, so it starts over.
      log.warn({ slot: options.slotName }, 'replication slot from an interrupted first start; recreating it');
      if (slot.active) throw new FloeError('source-setup', `slot "${options.slotName}" is in use by another process`, { retry: 'timed' });
      await dropSlot(meta, options.slotName);
      slot = undefined;
    }
    if (slot && (!progress || progress.slotName !== options.slotName)) {
      throw new FloeError('source-setup', `slot "${options.slotName}" exists but floe has no progress recorded for it`, {
        hint: 'another tool or a lost state store owns it: drop the slot (SELECT pg_drop_replication_slot(...)) or choose another --slot name',
      });
    }
    if (slot?.active) {
      throw new FloeError('source-setup', `slot "${options.slotName}" is in use by another process`, {
        retry: 'timed',
        hint: 'stop the other floe process (or wait for it to release the slot)',
      });
    }

    repl = await connectReplication({ ...options.source, applicationName: `floe-${options.name}` });
    const published = await cache.publishedTables(options.publication);
    // Read before the tables are used: a change after it is seen by LiveTables' first poll.
    const signatures = await cache.publishedSignatures(options.publication);
    const signatureOf = (t: TableSchema): { signature?: string } => {
      const signature = signatures.get(qualifiedName(t));
      return signature === undefined ? {} : { signature };
    };
    // Skipped tables (the control's set at start) are neither prepared nor snapshotted, and the stream
    // drops their changes; the store forgets them, so a table unskipped while floe is down is snapshotted
    // afresh at the next start.
    const skippedAtStart = new Set(options.control?.skipped ?? []);
    const skippedTables = published.filter((t) => skippedAtStart.has(qualifiedName(t)));
    const tables = published.filter((t) => !skippedAtStart.has(qualifiedName(t)));
    const emitTable = (t: TableSchema, s: TableState, detail?: { rows?: number; error?: string }) =>
      options.events?.table?.(qualifiedName(t), s, detail);
    for (const t of skippedTables) emitTable(t, 'skipped');
    let incarnation: string;
    let startLsn: bigint;
    let snapshotTasks: SnapshotTask[] = [];
    let snapshotName: string | undefined;
    let snapshotLsn = 0n;

    if (!slot) {
      // New incarnation: create the slot with an exported snapshot and copy every table under it.
      incarnation = randomUUID();
      // The incarnation is recorded (at LSN 0) before the slot exists, so a crash between creating the
      // slot and recording its position is recognised at the next start (see above).
      await store.beginIncarnation(options.name, options.slotName, incarnation, 0n);
      const created = await createSlotWithSnapshot(repl, options.source, {
        slotName: options.slotName,
        temporary: false,
        major: info.major,
        log,
        reportAfterMs: o.slotWaitReportMs,
      });
      log.info({ slot: created.slotName, consistentPoint: formatLsn(created.consistentPoint), incarnation }, 'replication slot created');
      await options.failpoints?.afterSlotCreated?.();
      snapshotName = created.snapshotName;
      snapshotLsn = created.consistentPoint;
      startLsn = created.consistentPoint;
      try {
        await destination.open(options.name, incarnation, signal);
        for (const t of tables) {
          await destination.prepare(t);
          // Rows of an earlier incarnation (or of a run whose state was not kept) may be stale.
          await destination.resetTable(t, snapshotLsn);
        }
        // From here on the slot's position is known: a crash resumes under this incarnation.
        await store.recordDurable(options.name, incarnation, created.consistentPoint, created.consistentPoint);
      } catch (err) {
        // A destination that cannot start (bad path, locked file, column clash) must not leave an idle
        // slot pinning WAL: nothing was copied under this slot yet, so it goes.
        const r = repl;
        repl = undefined;
        await r.end().catch(() => undefined);
        throw await dropNewSlot(meta, options.slotName, coerceError(err));
      }
      for (const t of tables) {
        const plan = await planRanges(meta, t, o.snapshotRangePages, o.snapshotParallelism);
        await store.setTable(options.name, incarnation, qualifiedName(t), { phase: 'snapshot', snapshotLsn, ...plan, ...signatureOf(t) });
        snapshotTasks.push({ table: t, ...plan, pending: range(plan.rangeCount) });
      }
    } else {
      incarnation = progress!.incarnation;
      startLsn = progress!.ackLsn;
      await destination.open(options.name, incarnation, signal);
      const known = await store.getTables(options.name, incarnation);
      const needSnapshot: TableSchema[] = [];
      for (const t of tables) {
        const prepared = await destination.prepare(t);
        const k = known.get(qualifiedName(t));
        if (prepared?.converted && k) {
          // Keyed <-> keyless while floe was down: the recreated target needs a new snapshot.
          log.info({ table: qualifiedName(t), keyed: t.hasKey }, 'table changed between keyed and keyless; resyncing it');
          await store.removeTable(options.name, incarnation, qualifiedName(t));
          await destination.resetTable(t, startLsn);
          needSnapshot.push(t);
        } else if (k?.signature !== undefined && k.signature !== signatureOf(t).signature) {
          // Dropped and created again, column list or row filter changed, partitions attached or detached
          // while floe was stopped: its destination state is stale, so it starts over like a new table.
          // Also in the middle of its snapshot: the ranges copied so far hold the old table's rows.
          log.info({ table: qualifiedName(t) }, 'what the publication publishes of the table changed while floe was stopped: resyncing it');
          await store.removeTable(options.name, incarnation, qualifiedName(t));
          needSnapshot.push(t);
        } else if (!k || k.phase === 'snapshot') needSnapshot.push(t);
      }
      for (const name of known.keys()) {
        if (skippedAtStart.has(name)) {
          await store.removeTable(options.name, incarnation, name);
        } else if (!tables.some((t) => qualifiedName(t) === name)) {
          log.info({ table: name }, 'table left the publication; it is no longer replicated');
          await store.removeTable(options.name, incarnation, name);
          options.events?.table?.(name, 'removed');
        }
      }
      if (needSnapshot.length > 0) {
        snapshotTasks = needSnapshot.map((t) => ({ table: t, rangeCount: 0, pagesPerRange: 0, pending: [] }));
      }
    }

    // ---- snapshot -----------------------------------------------------------------------
    if (snapshotTasks.length > 0) {
      options.events?.phase?.('snapshotting');
      let tmpRepl: pg.Client | undefined;
      try {
        if (!snapshotName) {
          // Resumed or late tables: copy under a fresh exported snapshot of a temporary slot.
          tmpRepl = await connectReplication({ ...options.source, applicationName: `floe-${options.name}-snapshot` });
          const tmp = await createSlotWithSnapshot(tmpRepl, options.source, {
            slotName: temporarySlotName(options.slotName),
            temporary: true,
            major: info.major,
            log,
            reportAfterMs: o.slotWaitReportMs,
          });
          snapshotName = tmp.snapshotName;
          snapshotLsn = tmp.consistentPoint;
          const known = await store.getTables(options.name, incarnation);
          const planned: SnapshotTask[] = [];
          for (const task of snapshotTasks) {
            const k = known.get(qualifiedName(task.table));
            if (k && k.rangeCount > 0 && !task.table.hasKey && k.rangesDone.size > 0) {
              // A keyless table's history cannot mix ranges of two snapshots (a change cannot be told
              // apart by range): its snapshot starts over under the new one.
              log.info({ table: qualifiedName(task.table) }, 'restarting the interrupted snapshot of a table without a key');
              await store.removeTable(options.name, incarnation, qualifiedName(task.table));
              await destination.resetTable(task.table, snapshotLsn);
              const plan = await planRanges(meta, task.table, o.snapshotRangePages, o.snapshotParallelism);
              await store.setTable(options.name, incarnation, qualifiedName(task.table), {
                phase: 'snapshot',
                snapshotLsn,
                ...plan,
                ...signatureOf(task.table),
              });
              planned.push({ table: task.table, ...plan, pending: range(plan.rangeCount) });
            } else if (k && k.rangeCount > 0) {
              // Same range boundaries as before the crash; the last range stays open-ended.
              const pending = range(k.rangeCount).filter((i) => !k.rangesDone.has(i));
              planned.push({ table: task.table, rangeCount: k.rangeCount, pagesPerRange: k.pagesPerRange, pending });
            } else {
              if (!k) {
                // Added while floe was down, or re-added, or no longer skipped: rows of an earlier time in
                // the publication are stale. Nothing streams yet, so every journal row the reset excludes
                // is older than this snapshot.
                await destination.resetTable(task.table, snapshotLsn);
              }
              const plan = await planRanges(meta, task.table, o.snapshotRangePages, o.snapshotParallelism);
              await store.setTable(options.name, incarnation, qualifiedName(task.table), {
                phase: 'snapshot',
                snapshotLsn,
                ...plan,
                ...signatureOf(task.table),
              });
              planned.push({ table: task.table, ...plan, pending: range(plan.rangeCount) });
            }
          }
          snapshotTasks = planned;
        }
        log.info({ tables: snapshotTasks.length, snapshotLsn: formatLsn(snapshotLsn) }, 'snapshot started');
        const rowsCopied = new Map<string, number>();
        for (const task of snapshotTasks) emitTable(task.table, 'snapshotting', { rows: 0 });
        await copySnapshot(snapshotTasks, {
          source: options.source,
          snapshotName,
          snapshotLsn,
          parallelism: o.snapshotParallelism,
          rangePages: o.snapshotRangePages,
          destination,
          store,
          pipeline: options.name,
          incarnation,
          log,
          signal,
          onRange: (t, rows) => {
            const name = qualifiedName(t);
            rowsCopied.set(name, (rowsCopied.get(name) ?? 0) + rows);
            options.events?.snapshotRange?.(name, rows);
            emitTable(t, 'snapshotting', { rows: rowsCopied.get(name) });
          },
          beforeRecordRange: options.failpoints?.beforeRecordRange,
        });
        if (signal.aborted) return;
        for (const task of snapshotTasks) {
          await destination.completeSnapshot(task.table);
          await store.setTable(options.name, incarnation, qualifiedName(task.table), {
            phase: 'streaming',
            snapshotLsn,
            rangeCount: task.rangeCount,
            pagesPerRange: task.pagesPerRange,
            ...signatureOf(task.table),
          });
          emitTable(task.table, 'streaming', { rows: rowsCopied.get(qualifiedName(task.table)) ?? 0 });
        }
        log.info({ tables: snapshotTasks.length }, 'snapshot complete');
      } finally {
        await tmpRepl?.end().catch(() => undefined);
      }
    }
    const merged = await destination.merge(signal);
    if (merged.journalRows > 0) options.events?.merged?.(merged.journalRows);

    // ---- stream -------------------------------------------------------------------------
    if (signal.aborted) return;
    options.events?.phase?.('streaming');
    const snapshotted = new Set(snapshotTasks.map((t) => qualifiedName(t.table)));
    for (const t of tables) if (!snapshotted.has(qualifiedName(t))) emitTable(t, 'streaming');
    const live = new LiveTables({ options, meta, cache, major: info.major, incarnation, ...o }, [
      ...tables.map((table) => ({ table, state: 'streaming' as const, ...signatureOf(table) })),
      ...skippedTables.map((table) => ({ table, state: 'skipped' as const, ...signatureOf(table) })),
    ]);
    const decoders = o.binary === 'on' && state.binary === 'allowed' ? startingDecoders(published, cache, info.major, log) : undefined;
    if (o.binary === 'on' && !decoders) state.binary = 'text';
    const binary = decoders && { decoders, major: info.major };
    const stream = startReplication(repl, {
      slotName: options.slotName,
      publication: options.publication,
      startLsn,
      streaming: spool !== undefined,
      binary: binary !== undefined,
    });
    const streamer = new Streamer(options, o, stream, cache, published, incarnation, startLsn, live, spool, binary);
    for (const t of skippedTables) streamer.setDropped(t.relationId, true);
    live.start(streamer, signal);
    try {
      await streamer.run(signal);
    } catch (err) {
      if (streamer.binaryRefused) {
        // Reconnect in text mode once the walsender let the slot go (else the next start finds it active).
        state.binary = 'reconnect';
        const r = repl;
        repl = undefined;
        await r.end().catch(() => undefined);
        await waitForSlotRelease(meta, options.slotName);
      }
      throw err;
    } finally {
      // Live snapshots stop with the stream; an interrupted one resumes at the next start.
      await live.stop();
      if (streamer.ackLsn > startLsn) state.progressed = true;
    }
    if (streamer.ackLsn > streamer.sentLsn) {
      // Transactions made durable after CopyDone: the slot is released once the stream ended, so
      // confirm them with pg_replication_slot_advance rather than leaving WAL pinned until the next start.
      await waitForSlotRelease(meta, options.slotName);
      await meta
        .query(`SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, [options.slotName, formatLsn(streamer.ackLsn)])
        .catch((err) => log.warn({ err: (err as Error).message }, 'could not advance the slot at shutdown; it advances on the next start'));
    }
  } finally {
    await repl?.end().catch(() => undefined);
    await meta?.end().catch(() => undefined);
    // Streamed transactions not committed yet are sent again from their start at the next start.
    spool?.close();
  }
}

/**
 * Binary mode at start: the decoders of every published table (skipped ones too: a table unskipped
 * later streams without a new Relation message), or undefined when one column refuses binary, which is
 * logged (one line) and makes the stream run in text mode.
 */
function startingDecoders(
  published: readonly TableSchema[],
  cache: SchemaCache,
  major: number,
  log: Logger,
): Map<number, BinaryDecoder[]> | undefined {
  const decoders = new Map<number, BinaryDecoder[]>();
  for (const table of published) {
    const t = tableDecoders(table, { serverMajor: major, lookup: (oid) => cache.typeInfo(oid) });
    if (!t.ok) {
      logRefusal(log, t.refusal, 'streaming in text mode');
      return undefined;
    }
    decoders.set(table.relationId, t.decoders);
  }
  return decoders;
}

function logRefusal(log: Logger, refusal: BinaryRefusal, outcome: string): void {
  log.warn(
    { ...refusal },
    `binary mode: column ${refusal.column} of ${refusal.table} has type ${refusal.type}, which floe does not decode from binary; ${outcome}`,
  );
}

interface Batch {
  changes: Change[];
  bytes: number;
  startedAt: number;
  /** The last transaction whose Commit is in this batch: every change of it is in this or an earlier batch. */
  lastCommit: { lsn: bigint; endLsn: bigint } | undefined;
  /** The batch was cut inside a transaction (its remaining changes follow in later batches). */
  endsMidTransaction: boolean;
}

const newBatch = (): Batch => ({ changes: [], bytes: 0, startedAt: 0, lastCommit: undefined, endsMidTransaction: false });
/** pgoutput's Insert message tag ('I'). */
const INSERT_TAG = 0x49;

/** A batch handed to the destination and not yet durable: what acknowledging it needs, not its rows. */
interface Written {
  /** Its last change; undefined for a batch that only completes a transaction. */
  readonly last: Position | undefined;
  readonly lastCommit: { lsn: bigint; endLsn: bigint } | undefined;
  readonly bytes: number;
  readonly changes: number;
  readonly endsMidTransaction: boolean;
  readonly ops: Readonly<Record<Change['op'], number>> | undefined;
  readonly startedAt: number;
}

class Streamer implements StreamSide {
  readonly #options: PipelineOptions;
  readonly #live: LiveTables;
  /** Relations whose changes are dropped (skipped tables). */
  readonly #dropped = new Set<number>();
  readonly #o: typeof DEFAULTS;
  readonly #stream: Duplex;
  readonly #cache: SchemaCache;
  readonly #incarnation: string;
  readonly #relations = new Map<number, TableSchema>();
  #batch = newBatch();
  /** The `writeChanges` call running (one at a time, so the destination receives batches in order). */
  #writing: Promise<void> | undefined;
  /** Written batches not yet durable, oldest first. */
  readonly #unacked: Written[] = [];
  #uncommittedBytes = 0;
  /** What the destination reported committed (asynchronous) or accepted (synchronous). */
  #durablePosition: Position | undefined;
  /** Durable batches whose transaction the store has not recorded yet, and the last such transaction. */
  readonly #toRecord: Written[] = [];
  #recordTarget: { lsn: bigint; endLsn: bigint } | undefined;
  #recorder: Promise<void> | undefined;
  /** Woken whenever something became durable or the streamer failed (backpressure, drain). */
  #progress = new Set<() => void>();
  readonly #asynchronous: boolean;
  #failure: unknown;
  /** The run's stop signal (run() sets it): waits inside message handling end with it. */
  #signal: AbortSignal = new AbortController().signal;
  /** The transaction being read; `xid` is the 32-bit id pgoutput sends. */
  #txn: { lsn: bigint; commitTimeMicros: bigint; ordinal: number; xid: number } | undefined;
  /** Streamed transactions waiting for their commit; the one whose block is being received. */
  readonly #spool: TransactionSpool | undefined;
  /** Binary mode: each relation's column decoders, replaced at each of its Relation messages. */
  readonly #binary: BinaryColumnsState | undefined;
  #binaryRefused = false;
  #streamXid: number | undefined;
  /** What the server may forget: only durable and recorded positions. */
  #ackLsn: bigint;
  #durableLsn = 0n;
  #lastWalEnd = 0n;
  #sentLsn = 0n;
  #idleRecordedAt = 0;

  constructor(
    options: PipelineOptions,
    o: typeof DEFAULTS,
    stream: Duplex,
    cache: SchemaCache,
    tables: TableSchema[],
    incarnation: string,
    startLsn: bigint,
    live: LiveTables,
    spool: TransactionSpool | undefined,
    binary: BinaryColumnsState | undefined,
  ) {
    this.#options = options;
    this.#spool = spool;
    this.#binary = binary;
    this.#live = live;
    this.#o = o;
    this.#stream = stream;
    this.#cache = cache;
    this.#incarnation = incarnation;
    this.#ackLsn = startLsn;
    for (const t of tables) this.#relations.set(t.relationId, t);
    const { destination } = options;
    this.#asynchronous = typeof destination.watchDurable === 'function';
    destination.watchDurable?.({ durable: (p) => this.#onDurable(p), failed: (err) => this.#fail(err) });
  }

  /** The LSN the server may forget: the end of the last durable, recorded transaction. */
  get ackLsn(): bigint {
    return this.#ackLsn;
  }

  /** The last LSN sent in a status update. */
  get sentLsn(): bigint {
    return this.#sentLsn;
  }

  /** The run ended because a Relation message named a column binary mode cannot decode. */
  get binaryRefused(): boolean {
    return this.#binaryRefused;
  }

  setDropped(relationId: number, dropped: boolean): void {
    if (dropped) this.#dropped.add(relationId);
    else this.#dropped.delete(relationId);
  }

  position(): bigint {
    const txn = this.#txn?.lsn ?? 0n;
    return txn > this.#lastWalEnd ? txn : this.#lastWalEnd;
  }

  relation(relationId: number): TableSchema | undefined {
    return this.#relations.get(relationId);
  }

  fail(err: unknown): void {
    this.#fail(err);
  }

  async run(signal: AbortSignal): Promise<void> {
    const { log } = this.#options;
    const stream = this.#stream;
    this.#signal = signal;
    const statusTimer = setInterval(() => this.#sendStatus(false), this.#o.statusIntervalMs);
    const batchTimer = setInterval(
      () => {
        // Over the uncommitted bound the batch keeps filling until #add applies backpressure.
        if (this.#uncommittedBytes >= this.#o.maxUncommittedBytes) return;
        if (this.#batch.changes.length > 0 && Date.now() - this.#batch.startedAt >= this.#o.batchMaxMs) this.#startFlush();
        else if (this.#batch.lastCommit && !this.#writing) this.#startFlush();
      },
      Math.max(50, Math.min(250, this.#o.batchMaxMs)),
    );
    // One merge at a time: a merge slower than the interval delays the next instead of queueing them.
    let merging: Promise<unknown> | undefined;
    const mergeTimer = setInterval(() => {
      merging ??= this.#options.destination
        .merge(signal)
        .then((m) => m.journalRows > 0 && this.#options.events?.merged?.(m.journalRows))
        .catch((err) => this.#fail(err))
        .finally(() => {
          merging = undefined;
        });
    }, this.#o.mergeIntervalMs);
    // Graceful stop: write what arrived and acknowledge it, then CopyDone makes the server end the
    // stream (no status update may follow CopyDone). Frames still in flight are written too; the
    // caller acknowledges them by advancing the released slot (see runOnce).
    const onAbort = () => {
      log.info('stopping: draining the replication stream');
      this.#options.events?.phase?.('stopping');
      void (async () => {
        await this.#flushAll();
        this.#sendStatus(false);
        stream.end();
      })().catch((err) => this.#fail(err));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    const onStreamError = (err: Error) => this.#fail(err);
    stream.on('error', onStreamError);
    try {
      // Set when the stop ended a wait inside a frame (a commit that stays invisible): that frame's
      // transaction is incomplete, so nothing of it or after it is acknowledged; the frames still in
      // flight before the server ends the stream are let go.
      let abandoned = false;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (this.#failure !== undefined) break;
        if (abandoned) continue;
        try {
          await this.#onFrame(chunk);
        } catch (err) {
          if (!signal.aborted || err !== signal.reason) throw err;
          abandoned = true;
        }
      }
      if (this.#failure === undefined) {
        // Drain: write what is buffered (a partial transaction is written but not acknowledged).
        await this.#flushAll();
        await this.#options.store.recordDurable(this.#options.name, this.#incarnation, this.#durableLsn, this.#ackLsn);
        clearInterval(mergeTimer);
        await merging;
        const m = await this.#options.destination.merge();
        if (m.journalRows > 0) this.#options.events?.merged?.(m.journalRows);
      }
    } catch (err) {
      this.#fail(err);
    } finally {
      // The stream has been read to its end (or the run failed). runOnce then ends its connection, and
      // if the server's ReadyForQuery after CopyDone has not arrived by then, pg fails the COPY query
      // with "Connection terminated": no failure of this run, and no error to log.
      stream.off('error', onStreamError);
      stream.on('error', () => undefined);
      clearInterval(statusTimer);
      clearInterval(batchTimer);
      clearInterval(mergeTimer);
      signal.removeEventListener('abort', onAbort);
      await this.#writing?.catch(() => undefined);
      await this.#recorder?.catch(() => undefined);
      this.#wake();
      await merging?.catch(() => undefined);
    }
    if (this.#failure !== undefined) {
      stream.destroy();
      throw coerceError(this.#failure);
    }
    log.info({ ackLsn: formatLsn(this.#ackLsn) }, 'replication stream drained');
  }

  async #onFrame(chunk: Buffer): Promise<void> {
    const frame = decodeReplicationFrame(chunk);
    if (frame.tag === 'keepalive') {
      this.#lastWalEnd = frame.walEnd;
      if (frame.replyRequested) this.#sendStatus(false);
      return;
    }
    if (frame.walEnd > this.#lastWalEnd) this.#lastWalEnd = frame.walEnd;
    if (this.#streamXid !== undefined) {
      // Inside a stream block: data messages wait in the spool for the transaction's outcome.
      const { xid, message } = splitStreamed(frame.data);
      if (xid !== undefined) return this.#spool!.append(this.#streamXid, xid, message);
    }
    await this.#onData(frame.data);
  }

  /**
   * One pgoutput message. A text-mode Insert of a known table (nearly every message of a load) skips
   * the decoder: its values stay bytes until a destination needs them (TupleChange).
   */
  #onData(data: Buffer): Promise<void> | void {
    if (data[0] === INSERT_TAG && !this.#binary && this.#txn) {
      const insert = insertTupleBytes(data);
      const table = insert && this.#relations.get(insert.relationId);
      if (insert && table && !this.#dropped.has(insert.relationId)) {
        const txn = this.#txn;
        const change = new TupleChange(table, 'i', { lsn: txn.lsn, ordinal: txn.ordinal++ }, txn.commitTimeMicros, insert.tuple);
        return this.#push(change, insert.tuple.byteLength + 4 * insert.tuple.columns, true);
      }
    }
    return this.#onMessage(decodePgOutput(data, this.#binary?.decoders));
  }

  async #onMessage(msg: PgOutputMessage): Promise<void> {
    switch (msg.tag) {
      case 'begin':
        this.#txn = { lsn: msg.finalLsn, commitTimeMicros: msg.commitTimeMicros, ordinal: 0, xid: msg.xid };
        return;
      case 'commit': {
        this.#batch.lastCommit = { lsn: msg.commitLsn, endLsn: msg.endLsn };
        this.#txn = undefined;
        return;
      }
      case 'relation': {
        // The catalog read below must see the transaction that sent this message (its DDL).
        const xid = this.#txn?.xid;
        if (xid !== undefined) {
          await this.#cache.awaitVisible(xid, this.#signal, () =>
            this.#options.log.debug(
              { xid, relationId: msg.relationId },
              'waiting for the transaction to become visible before reading the catalog',
            ),
          );
        }
        this.#cache.invalidate(msg.relationId);
        const table = await this.#cache.tableFromRelation(msg);
        // Before anything of the table is used: the next tuple may already be in its new columns' formats.
        if (this.#binary) this.#binaryColumns(table);
        const before = this.#relations.get(msg.relationId);
        const name = qualifiedName(table);
        this.#options.log.debug(
          {
            table: name,
            relationId: msg.relationId,
            replicaIdentity: msg.replicaIdentity,
            keys: table.columns.filter((c) => c.isKey).map((c) => c.name),
          },
          'relation message',
        );
        // floe's own tables (a FOR ALL TABLES publication holds them) are never replicated (invariant 8).
        // A relation met for the first time that the publications do not list now is not prepared either:
        // pgoutput sends a partition's Relation message after its root's when publishing via the root
        // (its changes come as the root's), also for a partition detached since. Should it join the
        // publication, LiveTables snapshots it and lets its changes through.
        if (
          !before &&
          (table.schema === FLOE_SCHEMA ||
            this.#live.drops(name) ||
            !(await this.#cache.publishedItself(msg.relationId, this.#options.publication)))
        ) {
          this.#dropped.add(msg.relationId);
        }
        if (this.#dropped.has(msg.relationId)) {
          // Skipped: not prepared either (a table is often skipped because it cannot be replicated). Its
          // snapshot job prepares it with this schema when it is unskipped.
          this.#relations.set(msg.relationId, table);
          return;
        }
        // A table the pipeline does not replicate yet (new, or re-added): its changes are journaled from
        // now on, and its live snapshot fills in what came before.
        this.#live.noticeRelation(name, msg.relationId);
        if (!before) {
          this.#options.log.info({ table: name }, 'relation of a table not seen before');
        } else if (columnsSignature(before) !== columnsSignature(table) || keySignature(before) !== keySignature(table)) {
          this.#options.log.info({ table: name, columns: table.columns.length, keyed: table.hasKey }, 'table columns or key changed');
          // Changes read under the old columns and types reach the destination before it evolves the table.
          await this.#flushAll();
        }
        // New columns exist in the destination before the first change that uses them.
        const prepared = await this.#options.destination.prepare(table);
        this.#relations.set(msg.relationId, table);
        // Keyed <-> keyless: the destination recreated the target; a new snapshot fills it.
        if (prepared?.converted) this.#live.resync(name);
        return;
      }
      case 'insert':
        if (this.#dropped.has(msg.relationId)) return;
        return this.#add(this.#table(msg.relationId), 'i', msg.newTuple);
      case 'update': {
        if (this.#dropped.has(msg.relationId)) return;
        const table = this.#table(msg.relationId);
        const cells = msg.newTuple.slice();
        if (msg.oldTuple) {
          // Invariant 4: an unchanged TOAST value is taken from the old tuple when the old tuple has it: a
          // full old row ('O'), or a key-only old tuple ('K') for key columns (a TOASTed key that did not
          // change is sent unchanged; outside the key a 'K' tuple holds NULLs, not values).
          fillUnchanged(table, msg.oldKind, msg.oldTuple, cells);
          if (table.hasKey && keyChanged(table, msg.oldTuple, cells)) {
            // Same batch for both: the merge reads unchanged TOAST values of the new key from the old one.
            await this.#add(table, 'd', msg.oldTuple, false);
            return this.#add(table, 'i', cells);
          }
          if (!table.hasKey) {
            // Append-only history of a keyless table: the old image leaves ('d'), the new one arrives ('u'),
            // so the current state is the multiset of r/i/u images minus the d images.
            await this.#add(table, 'd', msg.oldTuple, false);
          }
        }
        return this.#add(table, 'u', cells);
      }
      case 'delete':
        if (this.#dropped.has(msg.relationId)) return;
        return this.#add(this.#table(msg.relationId), 'd', msg.oldTuple);
      case 'truncate':
        for (const id of msg.relationIds) {
          if (this.#dropped.has(id)) continue;
          const table = this.#table(id);
          await this.#add(
            table,
            't',
            table.columns.map(() => null),
          );
        }
        return;
      case 'streamStart':
        if (!this.#spool || this.#txn || this.#streamXid !== undefined)
          throw new FloeError('replication', 'pgoutput: unexpected Stream Start');
        this.#spool.start(msg.xid, msg.firstSegment);
        this.#streamXid = msg.xid;
        return;
      case 'streamStop':
        this.#streamXid = undefined;
        return;
      case 'streamAbort':
        this.#spool?.abort(msg.xid, msg.subXid);
        return;
      case 'streamCommit':
        return this.#replayStreamed(msg);
      case 'type':
      case 'origin':
      case 'message':
        return;
    }
  }

  /**
   * A streamed transaction committed: its spooled messages take the normal path now, under its commit
   * LSN, as if it had arrived whole between Begin and Commit (the positions are the same either way).
   */
  async #replayStreamed(commit: Extract<PgOutputMessage, { tag: 'streamCommit' }>): Promise<void> {
    if (!this.#spool || this.#txn || this.#streamXid !== undefined)
      throw new FloeError('replication', 'pgoutput: unexpected Stream Commit');
    this.#txn = { lsn: commit.commitLsn, commitTimeMicros: commit.commitTimeMicros, ordinal: 0, xid: commit.xid };
    for await (const messages of this.#spool.commit(commit.xid)) {
      for (const message of messages) {
        const pending = this.#onData(message);
        if (pending) await pending;
      }
    }
    this.#batch.lastCommit = { lsn: commit.commitLsn, endLsn: commit.endLsn };
    this.#txn = undefined;
  }

  /**
   * Binary mode: the relation's decoders for the tuples that follow. A column that cannot be decoded ends
   * the run (nothing of this message's transaction is acknowledged) and the pipeline reconnects in text
   * mode from the acknowledged position; the destination skips what it already holds.
   */
  #binaryColumns(table: TableSchema): void {
    const binary = this.#binary!;
    const t = tableDecoders(table, { serverMajor: binary.major, lookup: (oid) => this.#cache.typeInfo(oid) });
    if (t.ok) {
      binary.decoders.set(table.relationId, t.decoders);
      return;
    }
    this.#binaryRefused = true;
    logRefusal(this.#options.log, t.refusal, 'reconnecting in text mode from the acknowledged position');
    throw new FloeError('replication', `binary mode cannot decode column ${t.refusal.column} of ${t.refusal.table} (${t.refusal.type})`);
  }

  #table(relationId: number): TableSchema {
    const t = this.#relations.get(relationId);
    if (!t) throw new FloeError('replication', `change for relation ${relationId} before its Relation message`);
    return t;
  }

  async #add(table: TableSchema, op: Change['op'], cells: readonly Cell[], mayFlush = true): Promise<void> {
    const txn = this.#txn;
    if (!txn) throw new FloeError('replication', 'change outside a transaction');
    const change: Change = { table, op, position: { lsn: txn.lsn, ordinal: txn.ordinal++ }, commitTimeMicros: txn.commitTimeMicros, cells };
    await this.#push(change, rowBytes(cells), mayFlush);
  }

  /** Adds a change to the batch; a promise only when the batch is full and goes to the destination. */
  #push(change: Change, bytes: number, mayFlush: boolean): Promise<void> | void {
    const b = this.#batch;
    if (b.changes.length === 0) b.startedAt = Date.now();
    b.changes.push(change);
    b.bytes += bytes;
    if (mayFlush && b.bytes >= this.#o.batchMaxBytes) return this.#flushFull();
  }

  async #flushFull(): Promise<void> {
    // Waiting here stops reading the socket (backpressure): for the write being accepted, then for
    // commits while too much is uncommitted.
    await this.#writing;
    while (this.#failure === undefined && this.#uncommittedBytes >= this.#o.maxUncommittedBytes) await this.#nextProgress();
    if (this.#failure !== undefined) throw coerceError(this.#failure);
    this.#startFlush();
  }

  /** Writes everything received so far and waits until it is durable and recorded. */
  async #flushAll(): Promise<void> {
    while (this.#failure === undefined && !this.#drained()) {
      await this.#writing;
      this.#startFlush();
      await this.#writing;
      if (this.#unacked.length > 0 && this.#failure === undefined) await this.#nextProgress();
      await this.#recorder;
    }
  }

  #drained(): boolean {
    const b = this.#batch;
    return !this.#writing && b.changes.length === 0 && !b.lastCommit && this.#unacked.length === 0 && !this.#recorder;
  }

  #startFlush(): void {
    if (this.#writing || this.#failure !== undefined) return;
    const b = this.#batch;
    if (b.changes.length === 0 && !b.lastCommit) return;
    b.endsMidTransaction = this.#txn !== undefined;
    this.#batch = newBatch();
    let ops: Record<Change['op'], number> | undefined;
    if (this.#options.events?.batchWritten) {
      ops = { r: 0, i: 0, u: 0, d: 0, t: 0 };
      for (const ch of b.changes) ops[ch.op]++;
    }
    const written: Written = {
      last: b.changes.at(-1)?.position,
      lastCommit: b.lastCommit,
      bytes: b.bytes,
      changes: b.changes.length,
      endsMidTransaction: b.endsMidTransaction,
      ops,
      startedAt: performance.now(),
    };
    // Queued before the write: a commit can be reported before the write call returns.
    this.#unacked.push(written);
    this.#uncommittedBytes += b.bytes;
    this.#writing = this.#options.destination
      .writeChanges(b.changes)
      .then(() => {
        // Synchronous destination: accepted is committed.
        if (!this.#asynchronous && written.last) this.#onDurable(written.last);
        else this.#settle();
      })
      .catch((err) => this.#fail(err))
      .finally(() => {
        this.#writing = undefined;
      });
  }

  /** The destination committed every change handed to it up to `position`. */
  #onDurable(position: Position): void {
    if (!this.#durablePosition || comparePositions(position, this.#durablePosition) > 0) this.#durablePosition = position;
    this.#settle();
  }

  /** Moves the written batches the durable position covers to the store's queue (oldest first, a prefix). */
  #settle(): void {
    const durable = this.#durablePosition;
    let moved = false;
    for (;;) {
      const head = this.#unacked[0];
      if (!head) break;
      if (head.last && (!durable || comparePositions(head.last, durable) > 0)) break;
      this.#unacked.shift();
      this.#uncommittedBytes -= head.bytes;
      this.#toRecord.push(head);
      if (head.lastCommit) this.#recordTarget = head.lastCommit;
      moved = true;
    }
    if (!moved) return;
    this.#kickRecorder();
    this.#wake();
  }

  #kickRecorder(): void {
    if (this.#recorder || this.#failure !== undefined || this.#toRecord.length === 0) return;
    this.#recorder = this.#record()
      .catch((err) => this.#fail(err))
      .finally(() => {
        this.#recorder = undefined;
        this.#wake();
        this.#kickRecorder();
      });
  }

  /**
   * Invariant 3: the store hears of a transaction only once the destination committed all of it; then the
   * slot is acknowledged. One store write at a time, coalescing what became durable meanwhile.
   */
  async #record(): Promise<void> {
    const { store, failpoints, events } = this.#options;
    while (this.#toRecord.length > 0 && this.#failure === undefined) {
      const batches = this.#toRecord.splice(0);
      const target = this.#recordTarget;
      this.#recordTarget = undefined;
      for (const w of batches) await failpoints?.afterDestinationWrite?.({ changes: w.changes, endsMidTransaction: w.endsMidTransaction });
      if (target && batches.every((w) => w.changes === 0) && Date.now() - this.#idleRecordedAt < 60_000) {
        // Only empty transactions (PostgreSQL 14 sends them; changes of floe's own or skipped tables are
        // dropped): acknowledged like the idle path, recorded at most once a minute. Recording each would
        // itself be a transaction, sent back empty: a write every batch tick, forever.
        if (target.endLsn > this.#ackLsn) this.#ackLsn = target.endLsn;
      } else if (target) {
        if (batches.every((w) => w.changes === 0)) this.#idleRecordedAt = Date.now();
        await store.recordDurable(this.#options.name, this.#incarnation, target.lsn, target.endLsn);
        this.#durableLsn = target.lsn;
        if (target.endLsn > this.#ackLsn) this.#ackLsn = target.endLsn;
      }
      if (events?.batchWritten) {
        const now = performance.now();
        for (const w of batches) {
          if (w.changes === 0) continue;
          events.batchWritten(w.changes, w.bytes, this.#durableLsn, { ops: w.ops!, seconds: (now - w.startedAt) / 1000 });
        }
      }
      this.#sendStatus(false);
    }
  }

  #nextProgress(): Promise<void> {
    return new Promise((resolve) => this.#progress.add(resolve));
  }

  #wake(): void {
    const waiting = this.#progress;
    this.#progress = new Set();
    for (const resolve of waiting) resolve();
  }

  /** Nothing received is waiting to become durable (a streamed transaction not committed yet is). */
  #idle(): boolean {
    return !this.#txn && this.#streamXid === undefined && !this.#spool?.pending && this.#drained();
  }

  #sendStatus(replyRequested: boolean): void {
    if (this.#failure !== undefined || this.#stream.writableEnded || this.#stream.destroyed) return;
    if (this.#idle() && this.#lastWalEnd > this.#ackLsn) {
      this.#ackLsn = this.#lastWalEnd;
      // Keep the store's restart point roughly in step. At most once a minute: the write itself makes
      // WAL, which would otherwise be acknowledged and recorded again at every status update. (The
      // server restarts from its own confirmed_flush_lsn whenever that is ahead of what we ask for.)
      if (Date.now() - this.#idleRecordedAt >= 60_000) {
        this.#idleRecordedAt = Date.now();
        const ack = this.#ackLsn;
        void this.#options.store
          .recordDurable(this.#options.name, this.#incarnation, this.#durableLsn, ack)
          .catch((err) => this.#fail(err));
      }
    }
    const lsn = this.#ackLsn;
    this.#stream.write(encodeStandbyStatus(lsn, lsn, lsn, BigInt(Date.now()) * 1000n, replyRequested));
    this.#sentLsn = lsn;
    this.#options.events?.acknowledged?.(lsn, this.#lastWalEnd > lsn ? this.#lastWalEnd : lsn);
  }

  #fail(err: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    // A binary refusal is no error: it was logged, and the pipeline reconnects in text mode.
    if (!this.#binaryRefused) this.#options.log.error({ err: coerceError(err).message, stack: (err as Error)?.stack }, 'pipeline error');
    // Unblock the read loop and whoever waits for commits.
    this.#stream.destroy();
    this.#wake();
  }
}

async function waitForSlotRelease(meta: pg.Client, slotName: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const r = await meta.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slotName]);
    if (!r.rows[0]?.active) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const columnsSignature = (t: TableSchema): string => t.columns.map((c) => `${c.name}:${c.type.duckdb}`).join('\0');
/** Which columns are the key (none: keyless): a change of it converts or re-keys the target. */
const keySignature = (t: TableSchema): string => (t.hasKey ? t.columns.filter((c) => c.isKey).map((c) => c.name) : []).join('\0');

function fillUnchanged(table: TableSchema, oldKind: 'K' | 'O' | undefined, oldCells: readonly Cell[], cells: Cell[]): void {
  for (let i = 0; i < cells.length; i++) {
    if (cells[i] !== undefined || oldCells[i] === undefined) continue;
    if (oldKind === 'O' || table.columns[i]?.isKey) cells[i] = oldCells[i];
  }
}

function keyChanged(table: TableSchema, oldCells: readonly Cell[], newCells: readonly Cell[]): boolean {
  for (let i = 0; i < table.columns.length; i++) {
    if (table.columns[i]!.isKey && oldCells[i] !== undefined && oldCells[i] !== newCells[i]) return true;
  }
  return false;
}

function rowBytes(cells: readonly Cell[]): number {
  let n = 16;
  for (const c of cells) if (typeof c === 'string') n += c.length + 8;
  return n;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
