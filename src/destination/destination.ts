/**
 * The seam between the pipeline and a warehouse.
 *
 * Contract (design.md §2):
 * - `writeChanges` appends a batch of changes to the journal and resolves when
 *   the destination has ACCEPTED it, which is not necessarily COMMITTED:
 *   - a synchronous destination (EncodingSink) has no `watchDurable`: accepted
 *     is committed, so a resolved `writeChanges` makes its batch durable;
 *   - an asynchronous one (Snowflake; DuckDB, which commits one batch while the
 *     next is decoded) has `watchDurable` and reports there, in order, the
 *     position through which every change it was handed is committed.
 *   The runtime may call `writeChanges` again before earlier batches commit
 *   (calls never overlap: the next starts after the previous resolved), and it
 *   acknowledges the slot only from what is durable (design.md invariant 1).
 *   Writes are idempotent by position: a change the destination already holds
 *   (for the same slot incarnation) is skipped, so replays after a crash or a
 *   stream restart never duplicate history.
 * - `writeSnapshotRange` loads one CTID range of a table atomically together
 *   with a marker, so a range is in the journal entirely or not at all, and a
 *   range written once is never written again.
 * - `merge` derives target tables from the journal: latest position wins.
 */
import type { Cell, Change, Position, TableSchema } from '../model.js';
import type { CopyRows } from '../postgres/copy-text.js';

/**
 * Rows of a snapshot range, as they arrive: cells, or COPY text rows (iterable as cells) that an NDJSON
 * encoder can copy without decoding (`NdjsonEncoder.writeSnapshotRow`).
 */
export type SnapshotChunk = readonly (readonly Cell[])[] | CopyRows;

export interface SnapshotRangeRef {
  readonly table: TableSchema;
  readonly rangeIndex: number;
  /** LSN of the exported snapshot the range was read under; rows take position (lsn, -1). */
  readonly snapshotLsn: bigint;
}

export interface DestinationCheckpoint {
  /** Highest position whose change is durable in the journal, for this incarnation. */
  readonly durable: Position | undefined;
}

export interface PrepareResult {
  /** The table changed between keyed and keyless: its target was recreated and needs a new snapshot. */
  readonly converted: boolean;
}

export interface Destination {
  /**
   * Connects, creates bookkeeping objects; returns what is durable for the slot incarnation. `signal` is
   * the run's stop request: a setup that retries (an unreachable service) gives up when it aborts.
   */
  open(pipeline: string, incarnation: string, signal?: AbortSignal): Promise<DestinationCheckpoint>;
  /**
   * Creates or evolves the journal and target of a table (new columns added, dropped ones kept). A table
   * that gained or lost its key gets the other kind of target (keyed state or keyless history), empty and
   * excluded from merges until a new snapshot completes: `converted` says the caller must resync it.
   */
  prepare(table: TableSchema): Promise<PrepareResult | void>;
  /** Writes one snapshot range atomically; returns the number of rows written (0 if it was already there). */
  writeSnapshotRange(range: SnapshotRangeRef, rows: AsyncIterable<SnapshotChunk>): Promise<number>;
  /** Marks a table's snapshot complete: from now on its merges may run (invariant 2b). */
  completeSnapshot(table: TableSchema): Promise<void>;
  /**
   * Prepares a table for a fresh snapshot at `snapshotLsn` (new slot incarnation, or a keyless table
   * whose interrupted snapshot must start over): the target is emptied, rows loaded before are never
   * merged, and the journal's history gets a truncate marker at (snapshotLsn, -2).
   */
  resetTable(table: TableSchema, snapshotLsn: bigint): Promise<void>;
  /** Appends changes (in position order) to the journals; resolves once they are accepted (see above). */
  writeChanges(changes: readonly Change[]): Promise<void>;
  /** The highest position durable in the destination. */
  durableThrough(): Promise<Position | undefined>;
  /**
   * Asynchronous destinations only. `durable(p)`: every change handed to `writeChanges` so far with a position
   * at or below `p` is committed (p never decreases). `failed(err)`: an accepted write can no longer commit
   * (a row error, or a channel that lost uncommitted rows): the runtime stops and, for a retryable error,
   * restarts from its acknowledged position. Replaces any earlier watcher.
   */
  watchDurable?(watcher: DurableWatcher): void;
  /** Applies journal rows loaded since the last merge to the target tables. */
  merge(signal?: AbortSignal): Promise<MergeResult>;
  close(): Promise<void>;
  /** Batch size (bytes of row text) this destination works best with when the operator sets none. */
  readonly preferredBatchBytes?: number;
  /**
   * How often the runtime calls `merge` when the operator sets no merge interval. A destination that
   * decides per table when a merge is due (Snowflake: `merge_interval`, `merge_rows`) asks for frequent
   * calls, so its own cadence is what holds.
   */
  readonly preferredMergeIntervalMs?: number;
  /** How the destination's service looks from here (the Snowflake circuit breaker); absent: always fine. */
  health?(): DestinationHealth;
}

export interface DurableWatcher {
  durable(position: Position): void;
  failed(err: unknown): void;
}

export interface DestinationHealth {
  /** `open`: calls fail fast and writes wait (backpressure) until a probe succeeds. */
  readonly breaker: 'closed' | 'half-open' | 'open';
}

export interface MergeResult {
  readonly tables: number;
  readonly journalRows: number;
}

export type DeleteMode = 'hard' | 'soft';
