/**
 * Replication progress, kept apart from the destination so a restarted
 * pipeline resumes exactly where it stopped.
 *
 * Rules (design.md invariants 3 and 6):
 * - progress is recorded only after the destination made it durable;
 * - positions belong to one slot incarnation; a write for another incarnation
 *   is refused, and progress never moves backwards;
 * - every write of a fenced view (`fenced(token)`) carries the caller's lease
 *   token; a write with a token lower than one already recorded for the
 *   pipeline is refused, atomically with the write itself.
 */
export type TablePhase = 'snapshot' | 'streaming';

export interface PipelineProgress {
  readonly slotName: string;
  readonly incarnation: string;
  /** Commit LSN (position LSN) of the last transaction fully durable in the destination. */
  readonly durableLsn: bigint;
  /** The LSN acknowledged to the server for it (the commit's end LSN, or an idle keepalive's wal_end). */
  readonly ackLsn: bigint;
}

export interface TableProgress {
  readonly table: string;
  readonly phase: TablePhase;
  /** LSN of the exported snapshot the finished ranges were read under (the first one, for a resumed table). */
  readonly snapshotLsn: bigint;
  readonly rangeCount: number;
  /** Heap pages per range; fixed when the ranges are planned so a resumed copy uses the same boundaries. */
  readonly pagesPerRange: number;
  readonly rangesDone: ReadonlySet<number>;
  /** What the publications published of the table when it last became streaming (see TablePlan). */
  readonly signature?: string;
}

export interface TablePlan {
  readonly phase: TablePhase;
  readonly snapshotLsn: bigint;
  readonly rangeCount: number;
  readonly pagesPerRange: number;
  /**
   * SchemaCache.publishedSignatures' value for the table (relation id, column list, row filter,
   * partitions): a start that finds another one resyncs the table (it changed while floe was down).
   */
  readonly signature?: string;
}

export interface StateStore {
  /** Creates the store's schema/keys if needed. */
  init(): Promise<void>;
  getProgress(pipeline: string): Promise<PipelineProgress | undefined>;
  /** Starts a new slot incarnation: forgets positions and table state of the previous one. */
  beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void>;
  /** Records durable progress; refuses another incarnation, ignores a move backwards. */
  recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void>;
  getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>>;
  /** Creates or updates a table's phase, snapshot LSN and range plan (keeps the finished ranges). */
  setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void>;
  markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void>;
  /** Forgets a table (removed from the publication, or resync). */
  removeTable(pipeline: string, incarnation: string, table: string): Promise<void>;
  /**
   * A view of this store whose writes carry a fencing token: each write is applied atomically only if
   * no higher token was ever recorded for that pipeline (and records this one); otherwise it fails with
   * FloeError('state', ..., { retry: 'none', hint: 'this worker lost the lease ...' }).
   * The view shares this store's connections: closing the view does nothing, close this store instead.
   */
  fenced(token: bigint): StateStore;
  close(): Promise<void>;
}

import { FloeError } from '../errors.js';

export function staleIncarnation(pipeline: string, expected: string | undefined, got: string): FloeError {
  return new FloeError(
    'state',
    `refusing progress for pipeline ${pipeline}: slot incarnation ${got} is not the current one (${expected ?? 'none'})`,
    {
      retry: 'none',
      hint: 'another process recreated the slot; restart this pipeline so it resyncs under the new incarnation',
    },
  );
}

export function staleFence(pipeline: string, token: bigint): FloeError {
  return new FloeError('state', `refusing progress for pipeline ${pipeline}: fencing token ${token} is stale`, {
    retry: 'none',
    hint: 'this worker lost the lease of the pipeline to another worker; it stops and leaves the pipeline to the new holder',
  });
}

export function unknownTable(pipeline: string, table: string): FloeError {
  return new FloeError('state', `pipeline ${pipeline} has no snapshot plan for table ${table}`, {
    retry: 'none',
    hint: 'the table was removed from the state store while its snapshot ran; restart the pipeline',
  });
}
