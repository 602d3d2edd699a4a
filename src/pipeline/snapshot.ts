/**
 * Initial snapshot (design.md §3): every table is cut into CTID block ranges
 * (the last one open-ended, because relpages is only an estimate), and N
 * connections that share the slot's exported snapshot COPY the ranges in
 * parallel. Rows are tagged with the snapshot LSN. A range is written to the
 * destination atomically and then recorded in the state store, so after a
 * crash only the remaining ranges are copied, under a new exported snapshot,
 * tagged with that snapshot's LSN (correct because latest position wins).
 *
 * Memory is bounded by the range size and the COPY stream's buffer, never by
 * the table size: rows flow from the socket into the destination in chunks.
 */
import type pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import type { TableSchema } from '../model.js';
import { qualifiedName } from '../model.js';
import { CopyOut } from '../postgres/copy-out.js';
import { CopyTextParser, type CopyRows } from '../postgres/copy-text.js';
import { connectSource, publishedRowsSql, type SourceConfig } from '../postgres/source.js';
import type { Destination } from '../destination/destination.js';
import type { StateStore } from '../store/state-store.js';
import type { Logger } from '../telemetry/logger.js';

export interface SnapshotOptions {
  readonly source: SourceConfig;
  readonly snapshotName: string;
  readonly snapshotLsn: bigint;
  readonly parallelism: number;
  /** Heap pages per CTID range; bounds the rows of one destination transaction. */
  readonly rangePages: number;
  readonly destination: Destination;
  readonly store: StateStore;
  readonly pipeline: string;
  readonly incarnation: string;
  readonly log: Logger;
  readonly signal: AbortSignal;
  /** Called after each range, for progress reporting. */
  readonly onRange?: (table: TableSchema, rows: number) => void;
  /** Test hook: runs before a finished range is recorded in the store. */
  readonly beforeRecordRange?: (table: TableSchema, rangeIndex: number) => Promise<void> | void;
}

export interface SnapshotTask {
  readonly table: TableSchema;
  /** Ranges to copy; `rangeCount` ranges in all, the last one open-ended. */
  readonly rangeCount: number;
  readonly pagesPerRange: number;
  readonly pending: readonly number[];
}

/** Plans a table's ranges from its current size. */
export async function planRanges(
  client: pg.Client,
  table: TableSchema,
  rangePages: number,
  parallelism: number,
): Promise<{ rangeCount: number; pagesPerRange: number }> {
  const r = await client.query<{ pages: string }>(
    `SELECT (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::text AS pages
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [table.schema, table.name],
  );
  const pages = Number(r.rows[0]?.pages ?? 0);
  // Enough ranges to keep every worker busy, none larger than rangePages.
  const pagesPerRange = Math.max(1, Math.min(rangePages, Math.ceil(pages / Math.max(1, parallelism * 2))));
  const rangeCount = Math.max(1, Math.ceil(pages / pagesPerRange));
  return { rangeCount, pagesPerRange };
}

export async function copySnapshot(tasks: readonly SnapshotTask[], options: SnapshotOptions): Promise<void> {
  const queue: { task: SnapshotTask; rangeIndex: number }[] = [];
  for (const task of tasks) for (const rangeIndex of task.pending) queue.push({ task, rangeIndex });
  if (queue.length === 0) return;
  const workers = Math.max(1, Math.min(options.parallelism, queue.length));
  let failure: unknown;
  const worker = async (id: number): Promise<void> => {
    if (options.signal.aborted) return;
    const client = await connectSource({ ...options.source, applicationName: `floe-snapshot-${id}` });
    // An abort stops a range in the middle (its transaction in the destination rolls back) rather than
    // after it: a range can take long, and a stopping pipeline or a skipped table must not wait for it.
    const onAbort = () => void client.end().catch(() => undefined);
    options.signal.addEventListener('abort', onAbort, { once: true });
    // The range this worker copied last, while the destination finishes it (DuckDB moves its staged rows
    // into the table, Snowflake waits for their commit). The next range is copied meanwhile, so the source
    // and the destination work at once; a worker never has more than these two ranges in hand.
    let finishing: Promise<void> | undefined;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await client.query(`SET TRANSACTION SNAPSHOT '${options.snapshotName.replaceAll("'", "''")}'`);
      for (;;) {
        if (failure !== undefined || options.signal.aborted) return;
        const item = queue.shift();
        if (!item) return;
        const range = copyRange(client, item.task, item.rangeIndex, options);
        const finished = range.done.then(
          () => undefined,
          (err: unknown) => void (failure ??= err),
        );
        await Promise.race([range.copied, finished]);
        await finishing;
        finishing = finished;
      }
    } catch (err) {
      failure ??= err;
    } finally {
      await finishing;
      options.signal.removeEventListener('abort', onAbort);
      // Ending the session discards its read-only transaction. No ROLLBACK first: a range the destination
      // gave up on before reading it leaves its COPY unread on this connection, and a ROLLBACK would queue
      // behind that COPY forever (end() closes the socket of a busy connection instead).
      await client.end().catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, i) => worker(i)));
  // After an abort the failure is the ended connection: unfinished ranges are simply not recorded.
  if (failure !== undefined && !options.signal.aborted) throw snapshotError(failure);
}

/**
 * Copies a range into the destination and records it once the destination holds it (`done`). `copied`
 * resolves when the last row has left the source connection, which is then free for the next range.
 */
function copyRange(
  client: pg.Client,
  task: SnapshotTask,
  rangeIndex: number,
  options: SnapshotOptions,
): { copied: Promise<void>; done: Promise<void> } {
  const { table } = task;
  const lo = rangeIndex * task.pagesPerRange;
  const last = rangeIndex === task.rangeCount - 1;
  const where = last ? `ctid >= '(${lo},0)'::tid` : `ctid >= '(${lo},0)'::tid AND ctid < '(${lo + task.pagesPerRange},0)'::tid`;
  // Exactly what the publication publishes: its columns and its row filter (invariant 8).
  const sql = `COPY (${publishedRowsSql(table, where)}) TO STDOUT`;
  const stream = client.query(new CopyOut(sql));
  // An abort ends the connection, which can happen before the destination starts reading the rows: the
  // stream then fails with no reader, and without a listener of our own its error would be uncaught. Once
  // reading, the iterator sees it too.
  let failed: unknown;
  stream.on('error', (err) => (failed ??= err));
  const parser = new CopyTextParser(table.columns.length);
  let copiedNow = () => {};
  const copied = new Promise<void>((resolve) => (copiedNow = resolve));
  async function* rows(): AsyncIterable<CopyRows> {
    if (failed !== undefined) throw failed;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const parsed = parser.push(chunk);
      if (parsed.length > 0) yield parsed;
    }
    parser.end();
    copiedNow();
  }
  const done = (async () => {
    const written = await options.destination.writeSnapshotRange({ table, rangeIndex, snapshotLsn: options.snapshotLsn }, rows());
    await options.beforeRecordRange?.(table, rangeIndex);
    await options.store.markRangeDone(options.pipeline, options.incarnation, qualifiedName(table), rangeIndex);
    options.log.debug({ table: qualifiedName(table), range: rangeIndex, rows: written }, 'snapshot range copied');
    options.onRange?.(table, written);
  })();
  return { copied, done };
}

/**
 * The exported snapshot lives only as long as the replication connection that created it: if that
 * connection dropped, importing the snapshot fails with "invalid snapshot identifier". Like a dropped
 * copy connection, that is transient: the pipeline reconnects and copies the remaining ranges under a
 * new snapshot.
 */
function snapshotError(err: unknown): FloeError {
  if (err instanceof FloeError) return err;
  const e = err as { code?: string; message?: string };
  if ((e.code === '22023' || e.code === '42704') && /snapshot/i.test(e.message ?? '')) {
    return new FloeError('replication', `snapshot failed: ${e.message}`, {
      cause: err,
      retry: 'timed',
      hint: 'the connection holding the exported snapshot ended; the snapshot resumes under a new one',
    });
  }
  return coerceError(err, 'snapshot failed');
}
