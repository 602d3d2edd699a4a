/**
 * DuckDB destination: one database file holding, per source table,
 *
 * - a journal `_floe_journal."<schema>.<table>"`: every change, in load order
 *   (`_floe_seq`), with its position, op, commit time, the list of columns
 *   whose value was not sent (unchanged TOAST) and the row image as the exact
 *   PostgreSQL text of each value (arrays as JSON arrays of element texts);
 * - a target `"<schema>"."<table>"`: the current state, typed through the type
 *   table, each row keeping the position it came from.
 *
 * A keyed table's snapshot rows go straight into its target, typed, at the
 * snapshot's position (unless `journalSnapshot`): its journal starts with the
 * changes streamed after the snapshot. A keyless table journals them too.
 *
 * Bookkeeping lives in schema `_floe`: the stream watermark per pipeline and
 * slot incarnation (written in the same transaction as the journal rows, so a
 * replayed change is recognised and skipped), the snapshot ranges loaded, and
 * how far each journal has been merged.
 *
 * Merge (invariant 2): rows loaded since the last merge form the window (load
 * order, never a position range). Per key the change with the greatest
 * position wins, but only over a target row with a lower position; a TRUNCATE
 * in the window removes every target row older than it. A column marked
 * unchanged takes the latest earlier image of the key in the window, else the
 * target's current value (invariant 4). Keyless tables (REPLICA IDENTITY FULL
 * without a primary key) have no merge: their target is a typed view of the
 * journal, i.e. append-only history.
 */
import { checkColumnNames, tableNameClash } from '../../schema/destination-names.js';
// Loaded at open(): the native library costs ~30 MB of RSS that a process writing to Snowflake never needs.
import type { DuckDBInstance, DuckDBConnection } from '@duckdb/node-api';
type DuckDbApi = typeof import('@duckdb/node-api');
import { mkdirSync, rmSync } from 'node:fs';
import { open, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Cell, Change, ColumnSchema, Position, TableSchema } from '../../model.js';
import { comparePositions, qualifiedName } from '../../model.js';
import type {
  DeleteMode,
  Destination,
  DestinationCheckpoint,
  DurableWatcher,
  MergeResult,
  PrepareResult,
  SnapshotChunk,
  SnapshotRangeRef,
} from '../destination.js';
import { FloeError } from '../../errors.js';
import { pgArrayToJson } from '../../schema/pg-array.js';
import { CopyRows } from '../../postgres/copy-text.js';
import { quoteIdent, quoteLiteral } from '../../schema/sql-quote.js';
import { silentLogger, type Logger } from '../../telemetry/logger.js';
import { loadDirectoryPrefix, ownDirectory, removeLeftLoadDirectories, spillDirectory, type SpillDirectory } from './spill-directory.js';
import { JournalFile } from './journal-file.js';
import { Turns } from './turns.js';

export interface DuckDbDestinationOptions {
  /** Database file path, or ':memory:'. */
  readonly path: string;
  /** Where conversions, re-keys, merges and smaller merge chunks are reported. (Default: nowhere) */
  readonly log?: Logger;
  readonly deleteMode?: DeleteMode;
  /**
   * DuckDB's memory limit (its buffer manager: tables, hash joins, sorts). DuckDB defaults to 80% of the
   * machine's memory; floe keeps the whole process small, so it caps DuckDB at 48MB and larger merges
   * spill to the database's `.tmp` directory (an in-memory database: a directory of its own,
   * spill-directory.ts). DuckDB allocates about as much again outside the cap; 128MB made the bench's
   * DuckDB runs 50–60 MB larger and no faster, and with two snapshot ranges moving at once 56MB took
   * the snapshot's peak to 283–301 MB against 282–289 MB, at the same speed (bench/README.md). (Default: '48MB')
   */
  readonly memoryLimit?: string;
  /**
   * DuckDB's worker threads. Each thread keeps its own buffers outside the memory limit, and floe's own
   * thread decodes the stream on another core, so the default is 1. (Default: 1)
   */
  readonly threads?: number;
  /**
   * DuckDB's `checkpoint_threshold`: the write-ahead log size at which DuckDB checkpoints, writing
   * what the log holds into the database file. A checkpoint rewrites the tables' last row groups, so
   * DuckDB's 16MB default checkpoints a streaming journal every few thousand rows and spends more time
   * there than on the rows. The cost of a larger value: that much log on disk, replayed when the file
   * is opened after a crash. (Default: '64MB')
   */
  readonly checkpointThreshold?: string;
  /**
   * Whether a keyed table's snapshot rows are also kept in its journal, as `r` rows at the snapshot's
   * position. By default they go straight into the target, written once: the journal then starts with the
   * changes streamed after the snapshot, and the target holds the snapshot's rows until changes replace
   * them. Keyless tables always journal them (their target is a view of the journal). (Default: false)
   */
  readonly journalSnapshot?: boolean;
}

const META = '_floe';
/** floe's columns of a keyed target, after the data columns. `_floe_key` is the key's journal text (keyText). */
const TARGET_META =
  '_floe_key VARCHAR, _floe_lsn UBIGINT NOT NULL, _floe_ordinal BIGINT NOT NULL, _floe_deleted BOOLEAN NOT NULL DEFAULT false, _floe_synced_at TIMESTAMPTZ';

/**
 * The lossless text of a key: the PostgreSQL text of its columns as the journal holds them (the same from
 * the snapshot and the stream); several columns are length-prefixed so no two keys share a text. NULL if
 * a column is NULL (an old key that is not there).
 */
/**
 * The kernel filesystem a path is under (/proc, /sys, /dev), if any: DuckDB would block there without
 * end (an uninterruptible read of a pseudo file), so such paths are refused before opening.
 */
export function pseudoFilesystem(path: string): string | undefined {
  return ['/proc', '/sys', '/dev'].find((root) => path === root || path.startsWith(`${root}/`));
}

function keyText(columns: readonly string[]): string {
  if (columns.length === 1) return columns[0]!;
  return columns.map((c) => `length(${c})::VARCHAR || ':' || ${c}`).join(' || ');
}
const JOURNAL = '_floe_journal';
/**
 * Journal rows merged per transaction at first (about 12 MB of bench rows per copy the merge makes,
 * inside the default memory_limit, 48MB, where the bench's 100,000-row chunks of updates ran out), and
 * the least a chunk is halved to after running out of memory.
 */
const MERGE_CHUNK_ROWS = 80_000;
const MIN_MERGE_CHUNK_ROWS = 1_000;

interface KnownTable {
  schema: TableSchema;
  /** Data columns present in the journal, in journal order (dropped ones stay). */
  journalColumns: string[];
  /** The target's column types, parallel to journalColumns (differ from the type table after a failed retype). */
  targetTypes: string[];
  /**
   * Parallel to journalColumns: the SQL turning a journal text (CAST_VALUE) into the column's type, as the
   * type table gave it when the column was last in the table's relation ('' if never recorded). A column
   * dropped at the source, or not yet added in a replay after a restart, is cast with it.
   */
  targetCasts: string[];
  snapshotComplete: boolean;
}

export class DuckDbDestination implements Destination {
  readonly #options: Required<DuckDbDestinationOptions>;
  #api: DuckDbApi | undefined;
  #instance: DuckDBInstance | undefined;
  #spill: SpillDirectory | undefined;
  #conn: DuckDBConnection | undefined;
  #pipeline = '';
  #incarnation = '';
  #watermark: Position | undefined;
  #nextSeq = 1n;
  readonly #tables = new Map<string, KnownTable>();
  /**
   * When each transaction runs: alone, except moves of snapshot ranges into targets, two of which run at
   * once while no range is being copied (MAX_CONCURRENT_MOVES).
   */
  readonly #turns = new Turns(() => (this.#copying > 0 ? 1 : MAX_CONCURRENT_MOVES));
  /** Snapshot ranges being copied from the source and staged. */
  #copying = 0;
  /** Names staging tables and files of snapshot ranges. */
  #stages = 0;
  /**
   * Where snapshot range files are written for DuckDB to read: made by the first range, removed when no
   * range is being loaded (so only a process killed in the middle of a snapshot leaves it behind).
   */
  #loads: { readonly path: string; remove(): void } | undefined;
  /** How #loads is named (loadDirectoryPrefix): worked out once, not each time a batch makes it again. */
  readonly #loadPrefix: string;
  #rangesLoading = 0;
  readonly #rangeConnections = new Set<DuckDBConnection>();
  /** Journal rows per merge transaction; halved when a chunk runs out of DuckDB's memory_limit. */
  #chunkRows = MERGE_CHUNK_ROWS;
  /** The runtime's (watchDurable): with a watcher, batches commit in the background (see writeChanges). */
  #watcher: DurableWatcher | undefined;
  /** Batches handed to writeChanges and not committed yet, oldest first, each settling once it has. */
  readonly #inFlight: Promise<unknown>[] = [];
  /** The last position handed to writeChanges: later calls skip changes at or below it. */
  #accepted: Position | undefined;
  /** A background commit failed: later writes fail with it until the destination opens again. */
  #failure: unknown;

  constructor(options: DuckDbDestinationOptions) {
    this.#options = {
      path: options.path,
      deleteMode: options.deleteMode ?? 'hard',
      memoryLimit: options.memoryLimit ?? '48MB',
      threads: options.threads ?? 1,
      checkpointThreshold: options.checkpointThreshold ?? '64MB',
      journalSnapshot: options.journalSnapshot ?? false,
      log: options.log ?? silentLogger,
    };
    this.#loadPrefix = loadDirectoryPrefix(options.path);
  }

  get deleteMode(): DeleteMode {
    return this.#options.deleteMode;
  }

  async open(pipeline: string, incarnation: string): Promise<DestinationCheckpoint> {
    // Batches of a stopped run may still be committing: the watermark read below must include them, or
    // their changes, replayed, would be journaled twice.
    await this.#turns.idle();
    this.#pipeline = pipeline;
    this.#incarnation = incarnation;
    if (this.#options.path !== ':memory:') mkdirSync(dirname(this.#options.path), { recursive: true });
    // A pipeline that reconnects opens again: keep the database, re-read the watermark.
    if (!this.#instance)
      try {
        if (!this.#api) useOneAllocatorArena();
        this.#api ??= await import('@duckdb/node-api');
        this.#spill = spillDirectory(this.#options.path);
        this.#instance = await this.#api.DuckDBInstance.create(this.#options.path, {
          ...this.#spill.options,
          memory_limit: this.#options.memoryLimit,
          threads: String(this.#options.threads),
          // Merges and journal appends need no insertion order; keeping it costs memory in large inserts.
          preserve_insertion_order: 'false',
          checkpoint_threshold: this.#options.checkpointThreshold,
        });
        const left = removeLeftLoadDirectories(this.#options.path);
        if (left > 0) this.#options.log.info({ directories: left }, 'removed range and batch files a stopped process left');
      } catch (err) {
        this.#spill?.remove();
        this.#spill = undefined;
        if (err instanceof FloeError) throw err; // the spill directory's, with its own hint
        throw new FloeError('destination', `cannot open DuckDB file ${this.#options.path}: ${(err as Error).message}`, {
          cause: err,
          hint: 'check the path, its permissions, and that no other process holds the file open',
          retry: 'manual',
        });
      }
    this.#conn ??= await this.#instance.connect();
    const c = this.#conn;
    await c.run(`CREATE SCHEMA IF NOT EXISTS ${META}; CREATE SCHEMA IF NOT EXISTS ${JOURNAL};
      CREATE TABLE IF NOT EXISTS ${META}.watermark (pipeline VARCHAR, incarnation VARCHAR, lsn UBIGINT, ordinal BIGINT, updated_at TIMESTAMPTZ, PRIMARY KEY (pipeline, incarnation));
      CREATE TABLE IF NOT EXISTS ${META}.snapshot_range (pipeline VARCHAR, incarnation VARCHAR, source_table VARCHAR, range_index INTEGER, snapshot_lsn UBIGINT, rows BIGINT, loaded_at TIMESTAMPTZ, PRIMARY KEY (pipeline, incarnation, source_table, range_index));
      CREATE TABLE IF NOT EXISTS ${META}.source_table (source_table VARCHAR PRIMARY KEY, journal_columns VARCHAR[], target_types VARCHAR[], key_columns VARCHAR[], snapshot_complete BOOLEAN, merged_seq BIGINT);
      ALTER TABLE ${META}.source_table ADD COLUMN IF NOT EXISTS target_casts VARCHAR[];
      CREATE TABLE IF NOT EXISTS ${META}.seq (next_seq BIGINT);`);
    const seq = await this.#rows(`SELECT next_seq FROM ${META}.seq`);
    if (seq.length === 0) await c.run(`INSERT INTO ${META}.seq VALUES (1)`);
    else this.#nextSeq = BigInt(seq[0]![0] as bigint);
    const wm = await this.#rows(
      `SELECT lsn, ordinal FROM ${META}.watermark WHERE pipeline = ${quoteLiteral(pipeline)} AND incarnation = ${quoteLiteral(incarnation)}`,
    );
    this.#watermark = wm.length ? { lsn: BigInt(wm[0]![0] as bigint), ordinal: Number(wm[0]![1]) } : undefined;
    this.#accepted = this.#watermark;
    this.#failure = undefined;
    return { durable: this.#watermark };
  }

  async prepare(table: TableSchema): Promise<PrepareResult> {
    // DuckDB compares identifiers case-insensitively.
    checkColumnNames(table, 'DuckDB', (n) => n.toLowerCase());
    return this.#serial(async () => {
      const c = this.#c();
      const name = qualifiedName(table);
      const existing = await this.#rows(
        `SELECT journal_columns, snapshot_complete, target_types, key_columns, target_casts FROM ${META}.source_table WHERE source_table = ${quoteLiteral(name)}`,
      );
      const dataCols = table.columns.map((col) => col.name);
      if (existing.length === 0) {
        const [other] = await this.#rows(
          `SELECT source_table FROM ${META}.source_table WHERE lower(source_table) = ${quoteLiteral(name.toLowerCase())} AND source_table <> ${quoteLiteral(name)}`,
        );
        if (other) throw tableNameClash(String(other[0]), name, 'DuckDB', name.toLowerCase());
        await c.run('BEGIN');
        try {
          await c.run(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(table.schema)}`);
          const journalDefs = [
            '_floe_seq BIGINT NOT NULL',
            '_floe_lsn UBIGINT NOT NULL',
            '_floe_ordinal BIGINT NOT NULL',
            '_floe_op VARCHAR NOT NULL',
            '_floe_commit_time TIMESTAMPTZ',
            '_floe_unchanged VARCHAR[]',
            ...dataCols.map((n) => `${quoteIdent(n)} VARCHAR`),
          ];
          await c.run(`CREATE TABLE IF NOT EXISTS ${this.#journal(table)} (${journalDefs.join(', ')})`);
          await this.#createTarget(table);
          await c.run(
            `INSERT INTO ${META}.source_table (source_table, journal_columns, target_types, key_columns, snapshot_complete, merged_seq, target_casts)
              VALUES (${quoteLiteral(name)}, ${sqlList(dataCols)}, ${sqlList(table.columns.map((x) => x.type.duckdb))}, ${sqlList(table.columns.filter((x) => x.isKey).map((x) => x.name))}, false, 0, ${sqlList(table.columns.map(castTemplate))})`,
          );
          await c.run('COMMIT');
        } catch (err) {
          await c.run('ROLLBACK');
          throw err;
        }
        this.#tables.set(name, {
          schema: table,
          journalColumns: dataCols,
          targetTypes: table.columns.map((x) => x.type.duckdb),
          targetCasts: table.columns.map(castTemplate),
          snapshotComplete: false,
        });
        return { converted: false };
      }
      const journalColumns = (existing[0]![0] as string[]).slice();
      let snapshotComplete = Boolean(existing[0]![1]);
      const targetTypes = (existing[0]![2] as string[]).slice();
      const keys = table.columns.filter((x) => x.isKey).map((x) => x.name);
      const keysBefore = ((existing[0]![3] as string[] | null) ?? []).slice();
      const castsBefore = (existing[0]![4] as string[] | null) ?? [];
      const converted =
        (await this.#convertTarget(table, journalColumns, targetTypes)) ||
        (await this.#rekey(table, keysBefore, keys)) ||
        (await this.#addKeyText(table, targetTypes));

      // Only a file written by an earlier process can hold a target and a record that disagree.
      const previous = this.#tables.get(name);
      if (converted) snapshotComplete = false;
      else if (table.hasKey && !previous) await this.#adoptTargetTypes(table, journalColumns, targetTypes);
      // Schema evolution: add new columns before the first change that uses them;
      // columns dropped at the source stay (documented policy) and are no longer filled.
      // A changed type converts the target column when DuckDB can cast the old values, else the
      // column becomes VARCHAR; the journal keeps the exact text either way.
      const added = table.columns.filter((col) => !journalColumns.includes(col.name));
      const retyped = table.columns.filter((col) => {
        const i = journalColumns.indexOf(col.name);
        return i >= 0 && targetTypes[i] !== col.type.duckdb;
      });
      // Journal rows written before the type change are merged with the old type first.
      if (retyped.length > 0 && table.hasKey && !converted && previous?.snapshotComplete) await this.#mergeTable(previous);
      for (const col of retyped) {
        const i = journalColumns.indexOf(col.name);
        if (table.hasKey) await this.#retype(table, col, journalColumns, targetTypes);
        else targetTypes[i] = col.type.duckdb;
      }
      const targetCasts = [...journalColumns, ...added.map((col) => col.name)].map((n, i) => {
        const col = table.columns.find((x) => x.name === n);
        return col ? castTemplate(col) : (castsBefore[i] ?? '');
      });
      const castsChanged = targetCasts.join('\0') !== castsBefore.join('\0');
      if (added.length > 0 || retyped.length > 0 || castsChanged) {
        await c.run('BEGIN');
        try {
          for (const col of added) {
            await c.run(`ALTER TABLE ${this.#journal(table)} ADD COLUMN ${quoteIdent(col.name)} VARCHAR`);
            if (table.hasKey) {
              await c.run(`ALTER TABLE ${this.#target(table)} ADD COLUMN ${quoteIdent(col.name)} ${col.type.duckdb}`);
            }
            journalColumns.push(col.name);
            targetTypes.push(col.type.duckdb);
          }
          await c.run(
            `UPDATE ${META}.source_table SET journal_columns = ${sqlList(journalColumns)}, target_types = ${sqlList(targetTypes)}, target_casts = ${sqlList(targetCasts)} WHERE source_table = ${quoteLiteral(name)}`,
          );
          if (!table.hasKey) await this.#createTarget(table, journalColumns);
          await c.run('COMMIT');
        } catch (err) {
          await c.run('ROLLBACK');
          throw err;
        }
      }
      this.#tables.set(name, { schema: table, journalColumns, targetTypes, targetCasts, snapshotComplete });
      return { converted };
    });
  }

  /**
   * A keyed table whose key columns changed (another primary key or replica identity index): its target
   * rows carry keys of the old columns, which no change names any more. The target is emptied and the
   * table resynced (returns true), like a converted target.
   */
  async #rekey(table: TableSchema, before: readonly string[], now: readonly string[]): Promise<boolean> {
    if (!table.hasKey || before.length === 0 || before.join('\0') === now.join('\0')) return false;
    const c = this.#c();
    await c.run('BEGIN');
    try {
      await c.run(`DELETE FROM ${this.#target(table)}`);
      await c.run(
        `UPDATE ${META}.source_table SET snapshot_complete = false, merged_seq = ${this.#nextSeq - 1n} WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
      );
      await c.run('COMMIT');
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw wrapDuckDb(err, `re-keying the target of ${qualifiedName(table)}`);
    }
    this.#options.log.info({ table: qualifiedName(table), keys: now }, 'the key columns changed: target emptied, resyncing the table');
    return true;
  }

  /**
   * A keyed target from before `_floe_key` gets the column, filled from the journal row each target row
   * came from (same position, same typed key). A row that cannot be matched so (a key value the target
   * type could not hold) makes the table start over: emptied and resynced, like a converted target.
   * Returns whether it must be resynced.
   */
  async #addKeyText(table: TableSchema, targetTypes: string[]): Promise<boolean> {
    if (!table.hasKey) return false;
    const c = this.#c();
    const target = this.#target(table);
    const [has] = await this.#rows(
      `SELECT count(*) FROM information_schema.columns WHERE table_schema = ${quoteLiteral(table.schema)} AND table_name = ${quoteLiteral(table.name)} AND column_name = '_floe_key'`,
    );
    if (Number(has?.[0] ?? 0) > 0) return false;
    const keys = table.columns.filter((col) => col.isKey);
    const match = keys.map((k) => `t.${quoteIdent(k.name)} = ${k.type.duckdbCast(`j.${quoteIdent(k.name)}`)}`).join(' AND ');
    await c.run('BEGIN');
    try {
      await c.run(`ALTER TABLE ${target} ADD COLUMN _floe_key VARCHAR`);
      await c.run(`UPDATE ${target} AS t SET _floe_key = ${keyText(keys.map((k) => `j.${quoteIdent(k.name)}`))}
        FROM ${this.#journal(table)} AS j WHERE j._floe_lsn = t._floe_lsn AND j._floe_ordinal = t._floe_ordinal AND ${match}`);
      const [unmatched] = await this.#rows(`SELECT count(*) FROM ${target} WHERE _floe_key IS NULL`);
      const resync = Number(unmatched?.[0] ?? 0) > 0;
      if (resync) {
        await c.run(`DELETE FROM ${target}`);
        await c.run(
          `UPDATE ${META}.source_table SET snapshot_complete = false, merged_seq = ${this.#nextSeq - 1n}, target_types = ${sqlList(targetTypes)} WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
        );
      }
      await c.run('COMMIT');
      if (resync)
        this.#options.log.info(
          { table: qualifiedName(table) },
          'a key the target type could not hold: target emptied, resyncing the table',
        );
      return resync;
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw wrapDuckDb(err, `adding _floe_key to the target of ${qualifiedName(table)}`);
    }
  }

  /**
   * A table that gained a key (a primary key added to a REPLICA IDENTITY FULL table) or lost it needs the
   * other kind of target: a keyed table's state cannot be derived from keyless history (its deletes carry
   * no key), nor history from keyed state. The old target goes, the new one starts empty, and journal
   * rows loaded so far are never merged into it: the caller resyncs the table (design.md invariant 2b:
   * no merge until that snapshot completes). Returns whether it converted.
   */
  async #convertTarget(table: TableSchema, journalColumns: string[], targetTypes: string[]): Promise<boolean> {
    const c = this.#c();
    const [kind] = await this.#rows(
      `SELECT table_type FROM information_schema.tables WHERE table_schema = ${quoteLiteral(table.schema)} AND table_name = ${quoteLiteral(table.name)}`,
    );
    const isView = kind?.[0] === 'VIEW';
    if (!kind || isView === !table.hasKey) return false;
    await c.run('BEGIN');
    try {
      await c.run(`DROP ${isView ? 'VIEW' : 'TABLE'} ${this.#target(table)}`);
      if (table.hasKey) {
        // Every journal column (dropped ones too: merges fill them), in the types the target had.
        const defs = journalColumns.map(
          (n, i) => `${quoteIdent(n)} ${table.columns.find((x) => x.name === n)?.type.duckdb ?? targetTypes[i]}`,
        );
        await c.run(`CREATE TABLE ${this.#target(table)} (${defs.join(', ')}, ${TARGET_META})`);
        journalColumns.forEach((n, i) => (targetTypes[i] = table.columns.find((x) => x.name === n)?.type.duckdb ?? targetTypes[i]!));
      } else {
        await this.#createTarget(table, journalColumns);
      }
      await c.run(
        `UPDATE ${META}.source_table SET snapshot_complete = false, merged_seq = ${this.#nextSeq - 1n}, target_types = ${sqlList(targetTypes)} WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
      );
      await c.run('COMMIT');
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw wrapDuckDb(err, `converting the target of ${qualifiedName(table)}`);
    }
    this.#options.log.info(
      { table: qualifiedName(table), keyed: table.hasKey },
      'table changed between keyed and keyless: target recreated',
    );
    return true;
  }

  async writeSnapshotRange(range: SnapshotRangeRef, rows: AsyncIterable<SnapshotChunk>): Promise<number> {
    const known = this.#known(range.table);
    const name = qualifiedName(range.table);
    const rangeLit = `pipeline = ${quoteLiteral(this.#pipeline)} AND incarnation = ${quoteLiteral(this.#incarnation)} AND source_table = ${quoteLiteral(name)} AND range_index = ${range.rangeIndex}`;
    // The range is staged (rows with escapes in a temporary table, in short steps; whole rows in a file),
    // then moved to the target or journal in one transaction with its marker. Staging goes through a
    // connection of the range's own (its temporary table lives there) and never waits on #serial: the
    // stream's journal writes (and so the other tables) are not stalled for as long as a range takes to
    // read from the source, and the next ranges are copied while earlier ones move. The move takes its
    // turn on #serial like every other write, so no two write transactions overlap. Memory stays bounded
    // by one step's rows per range.
    // The range counts as loading before its first await: a range finishing meanwhile would otherwise
    // remove the directory this one is about to use.
    this.#loads ??= ownDirectory(this.#loadPrefix, 'a directory for snapshot ranges');
    this.#rangesLoading++;
    const n = ++this.#stages;
    const file = join(this.#loads.path, `range-${n}.tsv`);
    let c: DuckDBConnection | undefined;
    try {
      c = await this.#connect();
      const stage: Stage = { conn: c, cells: quoteIdent(`_floe_stage_${n}`), file, fileRows: 0 };
      // Only this range writes its marker, so a read outside #serial cannot miss one about to be written.
      const loaded = await rowsOf(c, `SELECT 1 FROM ${META}.snapshot_range WHERE ${rangeLit}`).catch((err: unknown) => {
        throw wrapDuckDb(err, `checking snapshot range ${range.rangeIndex} of ${name}`);
      });
      if (loaded.length > 0) {
        for await (const chunk of rows) void chunk; // drain the producer
        return 0;
      }
      const positions = this.#columnPositions(known, range.table);
      this.#copying++;
      const count = await this.#stageRange(range, known, positions, stage, rows).finally(() => {
        this.#copying--;
        this.#turns.wake();
      });
      const move = () => this.#moveRange(range, known, positions, stage, count);
      // Moves into targets may overlap (see #moveRange); moves into journals take sequence numbers.
      await (this.#snapshotIntoTarget(range.table) ? this.#turns.beside(move) : this.#serial(move));
      return count;
    } finally {
      rmSync(file, { force: true });
      if (--this.#rangesLoading === 0) {
        this.#loads?.remove();
        this.#loads = undefined;
      }
      if (c) this.#disconnect(c); // its temporary tables go with it
    }
  }

  /**
   * Stages a range's rows; returns how many. A COPY text row whose only escapes are NULLs (`\N`) holds
   * every value as it is: such rows are written to the range's file as COPY sent them, for DuckDB's CSV
   * reader (`rangeFileSql`) to split natively when the range moves, instead of one appender call per
   * value, which cost more than all the rest of the load. Rows with other escapes, empty rows (the CSV
   * reader skips empty lines), rows over 1 MiB, decoded cells, and tables with array columns (the journal
   * holds their JSON form) are staged cell by cell.
   */
  async #stageRange(
    range: SnapshotRangeRef,
    known: KnownTable,
    positions: readonly number[],
    stage: Stage,
    rows: AsyncIterable<SnapshotChunk>,
  ): Promise<number> {
    const position = { lsn: range.snapshotLsn, ordinal: -1 };
    const wholeLines = positions.every((p) => p < 0 || !range.table.columns[p]!.type.isArray);
    let count = 0;
    let cells: (readonly Cell[])[] = [];
    let bytes = 0;
    const flush = () => {
      const cellBatch = cells;
      [cells, bytes] = [[], 0];
      return (async () => {
        const appender = await stage.conn.createAppender(stage.cells.slice(1, -1), 'main', 'temp');
        for (const row of cellBatch) this.#appendRow(appender, this.#nextSeq++, known, positions, range.table, 'r', position, 0n, row);
        appender.closeSync();
      })();
    };
    let file: FileHandle | undefined;
    try {
      await stage.conn.run(`CREATE TEMP TABLE ${stage.cells} AS SELECT * FROM ${this.#journal(range.table)} LIMIT 0`);
      file = await open(stage.file, 'wx', 0o600);
      const pending = new PendingWrites(file);
      for await (const chunk of rows) {
        if (wholeLines && chunk instanceof CopyRows && chunk.columns === range.table.columns.length && chunk.validUtf8) {
          // Consecutive whole rows are written as one piece of the chunk's buffer, newlines included.
          let from = -1;
          for (let i = 0; i < chunk.length; i++) {
            const [start, end] = [chunk.start(i), chunk.end(i)];
            if (end > start && end - start <= MAX_FILE_ROW_BYTES && chunk.onlyNullEscapes(i)) {
              if (from < 0) from = start;
              stage.fileRows++;
              continue;
            }
            if (from >= 0) await pending.add(chunk.buf.subarray(from, start));
            from = -1;
            cells.push(chunk.cells(i));
            bytes += end - start;
          }
          if (from >= 0) await pending.add(chunk.buf.subarray(from, chunk.start(chunk.length)));
        } else {
          for (const row of chunk) {
            cells.push(row);
            for (const c of row) if (typeof c === 'string') bytes += c.length;
          }
        }
        count += chunk.length;
        if (cells.length >= STAGE_ROWS || bytes >= STAGE_BYTES) await flush();
      }
      await pending.flush();
      if (cells.length > 0) await flush();
    } catch (err) {
      if (typeof (err as NodeJS.ErrnoException).code === 'string' && (err as NodeJS.ErrnoException).syscall) {
        throw new FloeError('destination', `cannot write snapshot range file ${stage.file}: ${(err as Error).message}`, {
          cause: err,
          retry: 'timed',
          hint: 'FLOE_SPOOL_DIR (else the OS temp directory) needs room for two snapshot ranges per parallel copy',
        });
      }
      throw wrapDuckDb(err, `loading snapshot range ${range.rangeIndex} of ${qualifiedName(range.table)}`);
    } finally {
      await file?.close();
    }
    this.#options.log.debug(
      { table: qualifiedName(range.table), range: range.rangeIndex, rows: count, wholeRows: stage.fileRows },
      'snapshot range staged',
    );
    return count;
  }

  /** Moves a staged range into the target or the journal, in one transaction with its marker. */
  async #moveRange(range: SnapshotRangeRef, known: KnownTable, positions: readonly number[], stage: Stage, count: number): Promise<void> {
    const c = stage.conn;
    const name = qualifiedName(range.table);
    await c.run('BEGIN');
    try {
      const intoTarget = this.#snapshotIntoTarget(range.table);
      if (intoTarget) await this.#insertRangeIntoTarget(range, known, positions, stage);
      else await this.#insertRangeIntoJournal(range, known, positions, stage);
      await c.run(
        `INSERT INTO ${META}.snapshot_range VALUES (${quoteLiteral(this.#pipeline)}, ${quoteLiteral(this.#incarnation)}, ${quoteLiteral(name)}, ${range.rangeIndex}, ${range.snapshotLsn}, ${count}, now())`,
      );
      // A target's rows keep no sequence number. Two moves into targets may run at once: each writes
      // rows of keys no other range of the snapshot holds (deleting only older rows of those keys) and a
      // marker of its own, so they touch no row in common, which the sequence counter would be.
      if (!intoTarget) await c.run(`UPDATE ${META}.seq SET next_seq = ${this.#nextSeq}`);
      await c.run('COMMIT');
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw wrapRangeError(err, `loading snapshot range ${range.rangeIndex} of ${name}`, range.table.columns.length);
    }
  }

  /** Moves a staged range into the journal, each row with a sequence number of its own. */
  async #insertRangeIntoJournal(range: SnapshotRangeRef, known: KnownTable, positions: readonly number[], stage: Stage): Promise<void> {
    const c = stage.conn;
    const journal = this.#journal(range.table);
    await c.run(`INSERT INTO ${journal} BY NAME SELECT * FROM ${stage.cells}`);
    if (stage.fileRows === 0) return;
    const cols = known.journalColumns.slice(0, positions.length).map(quoteIdent).join(', ');
    const first = this.#nextSeq;
    this.#nextSeq += BigInt(stage.fileRows);
    const loaded = await c.run(`INSERT INTO ${journal} (_floe_seq, _floe_lsn, _floe_ordinal, _floe_op, ${cols})
      SELECT ${first - 1n} + row_number() OVER (), ${range.snapshotLsn}, -1, 'r', ${cols} FROM (${rangeFileSql(range.table, known, positions, stage.file)})`);
    checkFileRows(loaded.rowsChanged, stage.fileRows);
  }

  /**
   * Whether a snapshot range goes straight into the target rather than the journal: a keyed table's, unless
   * the destination keeps snapshot rows in the journal (`journalSnapshot`). Writing the rows once, typed,
   * is what makes a DuckDB snapshot cost a fraction of the two writes and the merge it took (bench/README.md).
   * A keyless table's target is a view of its journal, so its rows must be there.
   */
  #snapshotIntoTarget(table: TableSchema): boolean {
    return table.hasKey && !this.#options.journalSnapshot;
  }

  /**
   * Inserts a staged range into a keyed target, typed, each row at the snapshot's position. While a table's
   * snapshot is incomplete no merge touches its target (invariant 2b), so the target holds only snapshot
   * rows: of this snapshot, whose keys are unique and whose ranges are each loaded once (their marker), or,
   * after a resumed snapshot, of an earlier one. Only then can a key be there already (its row moved
   * between ranges), and the row of the later snapshot wins, as the merge would have it.
   */
  async #insertRangeIntoTarget(range: SnapshotRangeRef, known: KnownTable, positions: readonly number[], stage: Stage): Promise<void> {
    const c = stage.conn;
    const t = range.table;
    const target = this.#target(t);
    // The columns the range was staged with: one added at the source meanwhile stays NULL in these rows.
    const cols = known.journalColumns.slice(0, positions.length);
    const fromFile = stage.fileRows > 0 ? `UNION ALL ${rangeFileSql(t, known, positions, stage.file)}` : '';
    const rows = `SELECT ${cols.map(quoteIdent).join(', ')} FROM ${stage.cells} ${fromFile}`;
    const keyCols = t.columns.filter((col) => col.isKey).map((col) => quoteIdent(col.name));
    const typed = `SELECT ${cols.map((col) => this.#castToTarget(known, col, quoteIdent(col))).join(', ')}, ${keyText(keyCols)} AS _floe_key,
      ${range.snapshotLsn}::UBIGINT AS _floe_lsn, -1::BIGINT AS _floe_ordinal, now() AS _floe_synced_at FROM (${rows})`;
    const into = `INSERT INTO ${target} (${[...cols.map(quoteIdent), '_floe_key', '_floe_lsn', '_floe_ordinal', '_floe_synced_at'].join(', ')})`;
    const [[other, staged]] = (await rowsOf(
      c,
      `SELECT (SELECT count(*) FROM ${target} WHERE _floe_lsn <> ${range.snapshotLsn} OR _floe_ordinal <> -1), (SELECT count(*) FROM ${stage.cells})`,
    )) as [[bigint, bigint]];
    if (other === 0n) {
      const loaded = await c.run(`${into} ${typed}`);
      checkFileRows(loaded.rowsChanged - Number(staged), stage.fileRows);
      return;
    }
    await c.run(`CREATE OR REPLACE TEMP TABLE _floe_snapshot_rows AS ${typed}`);
    const [[loaded]] = (await rowsOf(c, `SELECT count(*) FROM _floe_snapshot_rows`)) as [[bigint]];
    checkFileRows(Number(loaded - staged), stage.fileRows);
    const newer = `${positionSql('a')} > ${positionSql(target)}`;
    await c.run(
      `DELETE FROM ${target} WHERE EXISTS (SELECT 1 FROM _floe_snapshot_rows a WHERE a._floe_key = ${target}._floe_key AND ${newer})`,
    );
    await c.run(
      `${into} SELECT * FROM _floe_snapshot_rows a WHERE NOT EXISTS (SELECT 1 FROM ${target} tg WHERE tg._floe_key = a._floe_key)`,
    );
    await c.run('DROP TABLE temp.main._floe_snapshot_rows');
  }

  async completeSnapshot(table: TableSchema): Promise<void> {
    await this.#serial(async () => {
      await this.#c().run(
        `UPDATE ${META}.source_table SET snapshot_complete = true WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
      );
      this.#known(table).snapshotComplete = true;
    });
  }

  async resetTable(table: TableSchema, snapshotLsn: bigint): Promise<void> {
    await this.#serial(async () => {
      const c = this.#c();
      const name = qualifiedName(table);
      const known = this.#known(table);
      await c.run('BEGIN');
      try {
        const [rows] = await this.#rows(`SELECT count(*) FROM ${this.#journal(table)}`);
        if (Number(rows?.[0] ?? 0) > 0) {
          // History stays; a truncate marker just below the new snapshot's rows says where it restarts.
          const appender = await c.createAppender(this.#journalName(table), JOURNAL);
          this.#appendRow(
            appender,
            this.#nextSeq++,
            known,
            this.#columnPositions(known, table),
            table,
            't',
            { lsn: snapshotLsn, ordinal: -2 },
            0n,
            table.columns.map(() => null),
          );
          appender.closeSync();
        }
        if (table.hasKey) await c.run(`DELETE FROM ${this.#target(table)}`);
        // Rows loaded before the reset are never merged: the new snapshot replaces them. The key it is
        // merged on is recorded here, so a re-key interrupted before this point is detected again.
        const keys = table.hasKey ? table.columns.filter((x) => x.isKey).map((x) => x.name) : [];
        await c.run(
          `UPDATE ${META}.source_table SET snapshot_complete = false, merged_seq = ${this.#nextSeq - 1n}, key_columns = ${sqlList(keys)} WHERE source_table = ${quoteLiteral(name)}`,
        );
        await c.run(`DELETE FROM ${META}.snapshot_range WHERE source_table = ${quoteLiteral(name)}`);
        await c.run(`UPDATE ${META}.seq SET next_seq = ${this.#nextSeq}`);
        await c.run('COMMIT');
      } catch (err) {
        await c.run('ROLLBACK').catch(() => undefined);
        await this.#reloadSeq();
        throw wrapDuckDb(err, `resetting ${name}`);
      }
      known.snapshotComplete = false;
    });
  }

  watchDurable(watcher: DurableWatcher): void {
    this.#watcher = watcher;
  }

  /**
   * Appends changes to the journals in one transaction. The rows are written to files first (`JournalFile`),
   * which DuckDB reads in the transaction. With a watcher (the runtime), the call returns once the batch's
   * files are written and queued (`MAX_BATCHES_IN_FLIGHT`), and the watcher hears, in order, when each batch
   * commits: the stream is decoded and the next files written while DuckDB loads and checkpoints. Without
   * one, the call returns once the batch committed.
   */
  async writeChanges(changes: readonly Change[]): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure;
    // Replayed changes (at or below what this incarnation was handed) are in the journal or on their way.
    const from = this.#accepted;
    const fresh = from ? changes.filter((ch) => comparePositions(ch.position, from) > 0) : changes;
    if (fresh.length === 0) {
      if (this.#inFlight.length === 0 && this.#watermark) this.#watcher?.durable(this.#watermark);
      return;
    }
    const last = fresh[fresh.length - 1]!.position;
    const batch = await this.#writeBatchFiles(fresh);
    // Memory and disk stay bounded: the stream waits while MAX_BATCHES_IN_FLIGHT batches are.
    while (this.#inFlight.length >= MAX_BATCHES_IN_FLIGHT) await this.#inFlight[0];
    if (this.#failure !== undefined) {
      batch.remove();
      throw this.#failure;
    }
    const watcher = this.#watcher;
    this.#accepted = last;
    const committed = this.#serial(() => this.#commitBatch(batch, last, watcher !== undefined)).finally(() => batch.remove());
    const settled = committed.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight.push(settled);
    void settled.then(() => this.#inFlight.splice(this.#inFlight.indexOf(settled), 1));
    if (watcher) {
      committed.then(
        () => watcher.durable(last),
        (err: unknown) => watcher.failed(err),
      );
      return;
    }
    await committed.catch((err: unknown) => {
      this.#accepted = this.#watermark;
      throw err;
    });
  }

  /** Writes a batch's journal files; changes a file cannot hold are kept for the appender. */
  async #writeBatchFiles(changes: readonly Change[]): Promise<JournalBatch> {
    const groups = new Map<string, JournalGroup>();
    const positions = new Map<TableSchema, number[]>();
    for (let offset = 0; offset < changes.length; offset++) {
      const ch = changes[offset]!;
      const name = qualifiedName(ch.table);
      let group = groups.get(name);
      if (!group) {
        const known = this.#known(ch.table);
        group = { table: ch.table, columns: [...known.journalColumns], lines: new JournalFile(MAX_FILE_ROW_BYTES), file: '', appended: [] };
        groups.set(name, group);
      }
      let p = positions.get(ch.table);
      if (!p) positions.set(ch.table, (p = this.#columnPositions(this.#known(ch.table), ch.table)));
      if (!group.lines.add(offset, ch, p)) group.appended.push({ offset, change: ch, positions: p });
    }
    this.#loads ??= ownDirectory(this.#loadPrefix, 'a directory for snapshot ranges and journal batches');
    this.#rangesLoading++;
    const batch: JournalBatch = {
      groups: [...groups.values()],
      rows: changes.length,
      removed: false,
      remove: () => this.#removeBatchFiles(batch),
    };
    // The directory stays while the batch has files in it (`#removeBatchFiles`).
    try {
      for (const group of batch.groups) {
        if (group.lines.rows === 0) continue;
        group.file = join(this.#loads.path, `batch-${++this.#stages}.tsv`);
        await writeFile(group.file, group.lines.view(), { flag: 'wx', mode: 0o600 });
        group.lines.release();
      }
    } catch (err) {
      batch.remove();
      throw new FloeError('destination', `cannot write a journal batch file: ${(err as Error).message}`, {
        cause: err,
        retry: 'timed',
        hint: 'FLOE_SPOOL_DIR (else the OS temp directory) needs room for two batches of changes and two snapshot ranges per parallel copy',
      });
    }
    return batch;
  }

  #removeBatchFiles(batch: JournalBatch): void {
    if (batch.removed) return;
    batch.removed = true;
    for (const group of batch.groups) if (group.file) rmSync(group.file, { force: true });
    if (--this.#rangesLoading === 0) {
      this.#loads?.remove();
      this.#loads = undefined;
    }
  }

  /**
   * Loads a batch's files (and appends what they could not hold) with its watermark, in one transaction.
   * A failed batch in the background fails every batch queued after it, which would otherwise commit
   * past the gap it leaves (the runtime restarts from what it acknowledged).
   */
  async #commitBatch(batch: JournalBatch, last: Position, background: boolean): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure;
    const c = this.#c();
    // Statements go in as few calls as possible: each call waits for the main thread to hand DuckDB the
    // next one, and the main thread is busy decoding the stream.
    let begin = 'BEGIN; ';
    // Taken before the first await: a snapshot range staging beside this takes seqs too.
    const first = this.#nextSeq;
    this.#nextSeq += BigInt(batch.rows);
    try {
      for (const group of batch.groups) {
        const journal = this.#journal(group.table);
        if (group.file) {
          const loaded = await c.run(begin + journalFileSql(journal, group.columns, group.file, first));
          begin = '';
          checkFileRows(loaded.rowsChanged, group.lines.rows);
        }
        if (group.appended.length === 0) continue;
        if (begin) await c.run(begin);
        begin = '';
        const appender = await c.createAppender(this.#journalName(group.table), JOURNAL);
        for (const { offset, change: ch, positions } of group.appended) {
          const known = this.#known(ch.table);
          this.#appendRow(appender, first + BigInt(offset), known, positions, ch.table, ch.op, ch.position, ch.commitTimeMicros, ch.cells);
        }
        appender.closeSync();
      }
      await c.run(
        `${begin}INSERT OR REPLACE INTO ${META}.watermark VALUES (${quoteLiteral(this.#pipeline)}, ${quoteLiteral(this.#incarnation)}, ${last.lsn}, ${last.ordinal}, now());
        UPDATE ${META}.seq SET next_seq = ${this.#nextSeq}; COMMIT`,
      );
      this.#watermark = last;
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      await this.#reloadSeq();
      const failure = wrapDuckDb(err, 'appending changes to the journal');
      if (background) {
        this.#failure = failure;
        this.#accepted = this.#watermark;
      }
      throw failure;
    }
  }

  async durableThrough(): Promise<Position | undefined> {
    return this.#watermark;
  }

  async merge(signal?: AbortSignal): Promise<MergeResult> {
    let tables = 0;
    let journalRows = 0;
    for (const known of this.#tables.values()) {
      if (signal?.aborted) break;
      if (!known.schema.hasKey || !known.snapshotComplete) continue;
      const n = await this.#serial(() => this.#mergeTable(known));
      if (n > 0) {
        tables++;
        journalRows += n;
      }
    }
    return { tables, journalRows };
  }

  async close(): Promise<void> {
    await this.#turns.idle();
    for (const c of [...this.#rangeConnections]) this.#disconnect(c);
    await this.#checkpoint();
    this.#conn?.closeSync();
    this.#instance?.closeSync();
    this.#conn = undefined;
    this.#instance = undefined;
    this.#spill?.remove();
    this.#spill = undefined;
    this.#loads?.remove();
    this.#loads = undefined;
  }

  /**
   * Writes what the write-ahead log holds into the database file before it closes. DuckDB would do so in
   * closeSync, on the main thread, stopping the event loop (health checks, metrics, other pipelines'
   * leases) for as long as it takes: seconds after a large snapshot, whose ranges' partial row groups it
   * merges and compresses again. Here it runs on a worker thread. Committed data is safe either way (the
   * log keeps it), so a failure is logged and the close goes on.
   */
  async #checkpoint(): Promise<void> {
    if (!this.#conn || this.#options.path === ':memory:') return;
    await this.#conn.run('CHECKPOINT').catch((err: unknown) => {
      this.#options.log.warn(
        { err: wrapDuckDb(err, 'checkpointing before close').message },
        'DuckDB checkpoint before close failed; its write-ahead log keeps the data',
      );
    });
  }

  /** Runs SQL and returns rows as JS values; for tests, the demo and `--verify`. */
  async query(sql: string): Promise<unknown[][]> {
    return this.#serial(() => this.#rows(sql));
  }

  // ---- internals -------------------------------------------------------------------------

  /**
   * A primary-key change arrives as a delete of the old key followed (next ordinal) by an insert of the
   * new key, and PostgreSQL does not resend TOASTed values that did not change: the insert marks them
   * unchanged. Their value is the old key's value just before the delete: the latest known image of the
   * old key in this window, else whatever the old key's row was moved from (chains inside one window),
   * else the old key's target row (recorded in `_floe_from_*` and read by the merge). Rare, so resolved
   * move by move in position order.
   */
  async #resolveMoves(keys: string[], cols: string[], fromCol: (k: string) => string): Promise<void> {
    const moves = await this.#rows(`SELECT i._floe_seq, d._floe_pos, i._floe_unchanged, ${keys.map((k) => `d.${quoteIdent(k)}`).join(', ')}
      FROM _floe_window i JOIN _floe_window d ON d._floe_lsn = i._floe_lsn AND d._floe_ordinal = i._floe_ordinal - 1 AND d._floe_op = 'd'
      WHERE i._floe_op = 'i' AND len(coalesce(i._floe_unchanged, [])) > 0 ORDER BY d._floe_pos`);
    const c = this.#c();
    for (const [seq, dPos, unchanged, ...oldKey] of moves as [bigint, bigint, string[], ...(string | null)[]][]) {
      const oldKeyMatch = keys
        .map((k, i) => `w.${quoteIdent(k)} IS NOT DISTINCT FROM ${oldKey[i] === null ? 'NULL' : quoteLiteral(oldKey[i]!)}`)
        .join(' AND ');
      // Images of the old key's current life only: one from before its last delete is another row's.
      const lastDelete = `(SELECT max(x._floe_pos) FROM _floe_window x WHERE ${oldKeyMatch.replaceAll('w.', 'x.')} AND x._floe_op = 'd' AND x._floe_pos < ${dPos})`;
      const before = `${oldKeyMatch} AND w._floe_pos < ${dPos} AND w._floe_pos > coalesce(${lastDelete}, -1) AND w._floe_op IN ('r','i','u')`;
      let needsTarget = false;
      for (const col of unchanged.filter((u) => cols.includes(u))) {
        const [img] = await this.#rows(
          `SELECT w.${quoteIdent(col)} FROM _floe_window w WHERE ${before} AND NOT list_contains(coalesce(w._floe_unchanged, []), ${quoteLiteral(col)}) ORDER BY w._floe_pos DESC LIMIT 1`,
        );
        if (img) {
          await c.run(`UPDATE _floe_window SET ${quoteIdent(col)} = ${img[0] === null ? 'NULL' : quoteLiteral(img[0] as string)},
            _floe_unchanged = list_filter(_floe_unchanged, u -> u <> ${quoteLiteral(col)}) WHERE _floe_seq = ${seq}`);
        } else {
          needsTarget = true;
        }
      }
      if (!needsTarget) continue;
      // The old key was itself moved here earlier in this window: follow the chain; else its target row.
      const [chain] = await this.#rows(
        `SELECT ${keys.map((k) => `w.${fromCol(k)}`).join(', ')} FROM _floe_window w WHERE ${before} AND w.${fromCol(keys[0]!)} IS NOT NULL ORDER BY w._floe_pos DESC LIMIT 1`,
      );
      const source = chain ?? oldKey;
      await c.run(
        `UPDATE _floe_window SET ${keys.map((k, i) => `${fromCol(k)} = ${source[i] === null ? 'NULL' : quoteLiteral(String(source[i]))}`).join(', ')} WHERE _floe_seq = ${seq}`,
      );
    }
  }

  /** Converts a target column to a column's new type; VARCHAR when the old values do not convert. */
  /**
   * Converts a retyped column of a keyed target, or makes it VARCHAR when DuckDB cannot cast the old
   * values, and records the type it got in the same transaction (`targetTypes` is updated in place): the
   * merges cast to the recorded type, and a target column of another type fails every merge.
   */
  async #retype(table: TableSchema, col: ColumnSchema, journalColumns: readonly string[], targetTypes: string[]): Promise<void> {
    const c = this.#c();
    const i = journalColumns.indexOf(col.name);
    let failure: unknown;
    for (const type of [col.type.duckdb, 'VARCHAR']) {
      const types = targetTypes.with(i, type);
      await c.run('BEGIN');
      try {
        await c.run(`ALTER TABLE ${this.#target(table)} ALTER COLUMN ${quoteIdent(col.name)} SET DATA TYPE ${type}`);
        await c.run(
          `UPDATE ${META}.source_table SET target_types = ${sqlList(types)} WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
        );
        await c.run('COMMIT');
        targetTypes[i] = type;
        return;
      } catch (err) {
        // A failed statement aborts a DuckDB transaction: roll back, then try the next type.
        await c.run('ROLLBACK').catch(() => undefined);
        failure = err;
      }
    }
    throw wrapDuckDb(failure, `converting column ${col.name} of ${qualifiedName(table)}`);
  }

  /**
   * Where a keyed target's column has another type than the one recorded for it, the target's type wins:
   * it is what the merges read and write. Earlier versions altered the column and recorded its type in two
   * transactions, so a kill between them left the two apart, and every later merge failed to bind. The
   * comparison is by DuckDB's own name of each type ('TIMESTAMPTZ' is 'TIMESTAMP WITH TIME ZONE').
   */
  async #adoptTargetTypes(table: TableSchema, journalColumns: readonly string[], targetTypes: string[]): Promise<void> {
    const actual = new Map(
      (
        await this.#rows(
          `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ${quoteLiteral(table.schema)} AND table_name = ${quoteLiteral(table.name)}`,
        )
      ).map(([n, t]) => [String(n), String(t)] as const),
    );
    const [canonical] = await this.#rows(`SELECT ${targetTypes.map((t) => `typeof(CAST(NULL AS ${t}))`).join(', ')}`);
    const apart = journalColumns.filter((n, i) => actual.has(n) && actual.get(n) !== canonical?.[i]);
    if (apart.length === 0) return;
    for (const n of apart) targetTypes[journalColumns.indexOf(n)] = actual.get(n)!;
    await this.#c().run(
      `UPDATE ${META}.source_table SET target_types = ${sqlList(targetTypes)} WHERE source_table = ${quoteLiteral(qualifiedName(table))}`,
    );
    this.#options.log.warn(
      { table: qualifiedName(table), columns: apart },
      "target column types differed from the recorded ones (a type change cut short): recorded the target's",
    );
  }

  /**
   * Merges everything loaded since the last merge, in chunks of at most `#chunkRows` journal rows, each
   * its own transaction: a window of a busy few seconds (hundreds of thousands of rows) merged at once
   * ran out of memory_limit and failed again at every retry. A chunk never splits a transaction (a key
   * change's delete and insert, or a truncate, stay together), and latest-position-wins makes merging
   * the chunks in order equal to merging the whole window. A chunk that still runs out of memory (wide
   * rows) is retried at half the size, down to one transaction.
   */
  async #mergeTable(known: KnownTable): Promise<number> {
    const name = qualifiedName(known.schema);
    const [row] = await this.#rows(`SELECT merged_seq FROM ${META}.source_table WHERE source_table = ${quoteLiteral(name)}`);
    let from = BigInt((row?.[0] as bigint | undefined) ?? 0n);
    const to = this.#nextSeq - 1n;
    let merged = 0;
    const first = from;
    while (from < to) {
      const end = await this.#chunkEnd(known, from, to);
      try {
        merged += await this.#mergeWindow(known, from, end);
        from = end;
      } catch (err) {
        if (!OUT_OF_MEMORY.test((err as Error).message) || this.#chunkRows <= MIN_MERGE_CHUNK_ROWS) throw err;
        this.#chunkRows = Math.max(MIN_MERGE_CHUNK_ROWS, Math.floor(this.#chunkRows / 2));
        this.#options.log.warn(
          { table: name, chunkRows: this.#chunkRows, memoryLimit: this.#options.memoryLimit },
          'DuckDB merge ran out of memory_limit; merging in smaller chunks',
        );
      }
    }
    if (merged > 0) this.#options.log.debug({ table: name, journalRows: merged, fromSeq: String(first), toSeq: String(to) }, 'merged');
    return merged;
  }

  /** The last seq of the next chunk after `from`: `#chunkRows` rows, extended to the end of the last one's transaction. */
  async #chunkEnd(known: KnownTable, from: bigint, to: bigint): Promise<bigint> {
    // Seqs are handed out one per row, so a range no longer than a chunk holds no more rows (the usual
    // window): no query needed.
    if (to - from <= BigInt(this.#chunkRows)) return to;
    const journal = this.#journal(known.schema);
    const [last] = await this.#rows(
      `SELECT _floe_seq, _floe_lsn FROM ${journal} WHERE _floe_seq > ${from} AND _floe_seq <= ${to} ORDER BY _floe_seq LIMIT 1 OFFSET ${this.#chunkRows - 1}`,
    );
    if (!last) return to;
    const [end] = await this.#rows(
      `SELECT max(_floe_seq) FROM ${journal} WHERE _floe_seq > ${from} AND _floe_seq <= ${to} AND _floe_lsn = ${last[1] as bigint}`,
    );
    return end?.[0] as bigint;
  }

  async #mergeWindow(known: KnownTable, from: bigint, to: bigint): Promise<number> {
    const c = this.#c();
    const t = known.schema;
    const name = qualifiedName(t);
    const journal = this.#journal(t);
    const target = this.#target(t);
    const keys = t.columns.filter((col) => col.isKey).map((col) => col.name);
    // Keys match on their lossless text (`_floe_key`), never on the typed columns: a value the target
    // type cannot hold ('NaN' in a DECIMAL key) must neither fail the merge nor match another row. Key
    // columns are NOT NULL, so plain equality is exact and keeps every join a hash join.
    const latestKey = keyText(keys.map((k) => `l.${quoteIdent(k)}`));
    const soft = this.#options.deleteMode === 'soft';
    const fromCol = (k: string) => quoteIdent('_floe_from_' + k);
    // Target columns are those known now; a column dropped at the source keeps its last values.
    const cols = known.journalColumns;
    await c.run('BEGIN');
    try {
      const merged = (await this.#mergeIntoEmpty(known, from, to)) ?? (await this.#mergeNewKeys(known, from, to));
      if (merged !== undefined) {
        await c.run(`UPDATE ${META}.source_table SET merged_seq = ${to} WHERE source_table = ${quoteLiteral(name)}`);
        await c.run(`UPDATE ${META}.seq SET next_seq = ${this.#nextSeq}`);
        await c.run('COMMIT');
        return merged;
      }
      const fromCols = keys.map((k) => `NULL::VARCHAR AS ${fromCol(k)}`).join(', ');
      await c.run(`CREATE OR REPLACE TEMP TABLE _floe_window AS
        SELECT *, ${positionSql('j')} AS _floe_pos, ${fromCols} FROM ${journal} j WHERE _floe_seq > ${from} AND _floe_seq <= ${to}`);
      const [counted] = await this.#rows(
        `SELECT count(*), max(_floe_pos) FILTER (WHERE _floe_op = 't'),
                count(*) FILTER (WHERE _floe_unchanged IS NOT NULL), count(*) FILTER (WHERE _floe_op = 'd'),
                ${distinctKeys(keys)} FROM _floe_window`,
      );
      const windowRows = Number(counted?.[0] ?? 0);
      const truncPos = counted?.[1] as bigint | null | undefined;
      // Without unchanged-TOAST columns (and, with soft deletes, without deletes, whose kept image is the
      // latest known one) the latest row of each key carries every value: no per-column search needed.
      const wholeRows = Number(counted?.[2] ?? 0) === 0 && (!soft || Number(counted?.[3] ?? 0) === 0);
      // Each key once in the window (a window of inserts): every row is its key's latest, no window function
      // needed; it was the merge's costliest statement. Rows removed below (a truncate) cannot repeat a key.
      const keysOnce = Number(counted?.[4] ?? -1) === windowRows;
      if (truncPos !== null && truncPos !== undefined) {
        const older = `${positionSql()} < ${truncPos}`;
        await c.run(
          soft
            ? `UPDATE ${target} SET _floe_deleted = true, _floe_synced_at = now() WHERE ${older} AND NOT _floe_deleted`
            : `DELETE FROM ${target} WHERE ${older}`,
        );
        await c.run(`DELETE FROM _floe_window WHERE _floe_pos < ${truncPos} OR _floe_op = 't'`);
      }
      if (!wholeRows) {
        // Rows no newer than their key's target row are already in it. Left in, they would lend the
        // key's latest change their images (or a key move's source) from before the target row: a
        // change replayed from before a later snapshot, whose key moved here from a row the snapshot no
        // longer holds, made an unchanged TOAST value NULL.
        const windowKey = keyText(keys.map((k) => `w.${quoteIdent(k)}`));
        await c.run(`DELETE FROM _floe_window w WHERE EXISTS
          (SELECT 1 FROM ${target} tg WHERE tg._floe_key = ${windowKey} AND w._floe_pos <= ${positionSql('tg')})`);
      }
      // Key moves only need resolving when some row lacks an unchanged-TOAST value.
      if (Number(counted?.[2] ?? 0) > 0) await this.#resolveMoves(keys, cols, fromCol);
      if (!wholeRows) {
        // A row counts for the key's latest values only if no delete lies between it and the key's latest
        // change (other than that change itself): a value from before a delete belongs to a row that is
        // gone, e.g. when another row's key moves onto a key deleted in the same window.
        const part = `PARTITION BY ${keys.map(quoteIdent).join(', ')} ORDER BY _floe_pos`;
        await c.run(`CREATE OR REPLACE TEMP TABLE _floe_window AS SELECT *,
          count(*) FILTER (WHERE _floe_op = 'd') OVER (${part} ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
            = CASE WHEN last_value(_floe_op) OVER (${part} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) = 'd' THEN 1 ELSE 0 END
            AS _floe_alive
          FROM _floe_window`);
      }
      // Per key: the latest change, and per column the latest known image (invariant 4).
      const keyList = keys.map(quoteIdent).join(', ');
      const perColumn = cols
        .filter((col) => !keys.includes(col))
        .map((col) => {
          const q = quoteIdent(col);
          const known = `_floe_op IN ('r','i','u') AND _floe_alive AND NOT list_contains(coalesce(_floe_unchanged, []), ${quoteLiteral(col)})`;
          return `arg_max_null(${q}, _floe_pos) FILTER (WHERE ${known}) AS ${q}, count(*) FILTER (WHERE ${known}) > 0 AS ${quoteIdent('_floe_has_' + col)}`;
        });
      // The latest change per key, as `latest` below reads it: a window of keys seen once (most windows of
      // a streaming load) is read as it is, not copied once more.
      let latest = '_floe_latest';
      if (wholeRows) {
        const plain = cols
          .filter((col) => !keys.includes(col))
          .map((col) => `${quoteIdent(col)}, _floe_op <> 'd' AS ${quoteIdent('_floe_has_' + col)}`);
        const select = `SELECT ${keyList}, _floe_pos, _floe_op, _floe_lsn, _floe_ordinal, ${keys.map((k) => fromCol(k)).join(', ')}
                 ${plain.length ? ', ' + plain.join(', ') : ''}
          FROM _floe_window`;
        if (keysOnce) latest = `(${select})`;
        else
          await c.run(
            `CREATE OR REPLACE TEMP TABLE _floe_latest AS ${select} QUALIFY row_number() OVER (PARTITION BY ${keyList} ORDER BY _floe_pos DESC) = 1`,
          );
      } else {
        await c.run(`CREATE OR REPLACE TEMP TABLE _floe_latest AS
          SELECT ${keyList}, max(_floe_pos) AS _floe_pos, arg_max(_floe_op, _floe_pos) AS _floe_op,
                 arg_max(_floe_lsn, _floe_pos) AS _floe_lsn, arg_max(_floe_ordinal, _floe_pos) AS _floe_ordinal,
                 ${keys.map((k) => `arg_max(${fromCol(k)}, _floe_pos) FILTER (WHERE ${fromCol(keys[0]!)} IS NOT NULL) AS ${fromCol(k)}`).join(', ')}
                 ${perColumn.length ? ', ' + perColumn.join(', ') : ''}
          FROM _floe_window GROUP BY ${keyList}`);
      }
      // Only changes newer than the target row apply (replays and late snapshot rows are harmless).
      const castCol = (col: string) => this.#castToTarget(known, col, `l.${quoteIdent(col)}`);
      // Only #resolveMoves records where a key moved from, and only for rows with unchanged values: without
      // such rows the second join of the target would find nothing, at the cost of hashing it.
      const moves = Number(counted?.[2] ?? 0) > 0;
      const selectCols = cols.map((col) => {
        // Whole rows carry every value of a row that stays (a delete's row is not inserted): the target's
        // values are not read, so its rows are joined on their key and position alone, a smaller hash table.
        if (keys.includes(col) || wholeRows) return `${castCol(col)} AS ${quoteIdent(col)}`;
        // Not in the window: the target's value, or, for a row moved here by a key change, the value
        // the old key's target row holds (read before this merge deletes it).
        const moved = moves ? `WHEN l.${fromCol(keys[0]!)} IS NOT NULL THEN mv.${quoteIdent(col)} ` : '';
        return `CASE WHEN l.${quoteIdent('_floe_has_' + col)} THEN ${castCol(col)} ${moved}ELSE tg.${quoteIdent(col)} END AS ${quoteIdent(col)}`;
      });
      // Plain equality keeps this a hash join (a NULL old key never matches, which is what we want);
      // a disjunctive or null-safe condition here turns it into a nested loop over the whole target.
      const movedFrom = keyText(keys.map((k) => `l.${fromCol(k)}`));
      await c.run(`CREATE OR REPLACE TEMP TABLE _floe_apply AS
        SELECT ${selectCols.join(', ')}, ${latestKey} AS _floe_key, l._floe_op, l._floe_lsn, l._floe_ordinal,
          tg._floe_key IS NOT NULL AS _floe_replaces
        FROM ${latest} l LEFT JOIN ${target} tg ON tg._floe_key = ${latestKey}
        ${moves ? `LEFT JOIN ${target} mv ON mv._floe_key = ${movedFrom}` : ''}
        WHERE tg._floe_lsn IS NULL OR l._floe_pos > ${positionSql('tg')}`);
      // Keys new to the target (all of them, for a window of inserts) have no row to delete first.
      const [replacing] = await this.#rows(`SELECT count(*) FILTER (WHERE _floe_replaces) FROM _floe_apply`);
      if (Number(replacing?.[0] ?? 1) > 0) {
        await c.run(`DELETE FROM ${target} WHERE EXISTS (SELECT 1 FROM _floe_apply a WHERE a._floe_key = ${target}._floe_key)`);
      }
      const colList = [...cols.map(quoteIdent), '_floe_key'].join(', ');
      if (soft) {
        await c.run(`INSERT INTO ${target} (${colList}, _floe_lsn, _floe_ordinal, _floe_deleted, _floe_synced_at)
          SELECT ${colList}, _floe_lsn, _floe_ordinal, _floe_op = 'd', now() FROM _floe_apply`);
      } else {
        await c.run(`INSERT INTO ${target} (${colList}, _floe_lsn, _floe_ordinal, _floe_synced_at)
          SELECT ${colList}, _floe_lsn, _floe_ordinal, now() FROM _floe_apply WHERE _floe_op <> 'd'`);
      }
      await c.run(`UPDATE ${META}.source_table SET merged_seq = ${to} WHERE source_table = ${quoteLiteral(name)}`);
      // Sequence numbers may be handed out to staged snapshot rows not yet in a journal: the stored
      // counter must cover merged_seq, or a restart would reuse numbers this merge has passed.
      await c.run(`UPDATE ${META}.seq SET next_seq = ${this.#nextSeq}`);
      await c.run('COMMIT');
      return windowRows;
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw wrapDuckDb(err, `merging ${name}`);
    }
  }

  /**
   * The first merge after a snapshot: an empty target and a window of snapshot rows only (no stream
   * change, no unchanged-TOAST marker) needs none of the general merge's per-key work, joins or temp
   * tables: the rows go into the target in one INSERT … SELECT. The general path took as long as the
   * copy itself (16 s for 2M rows). The latest row per key still wins, should a key appear twice.
   */
  async #mergeIntoEmpty(known: KnownTable, from: bigint, to: bigint): Promise<number | undefined> {
    const t = known.schema;
    const journal = this.#journal(t);
    const target = this.#target(t);
    const window = `_floe_seq > ${from} AND _floe_seq <= ${to}`;
    const [probe] = await this.#rows(`SELECT
        (SELECT count(*) FROM ${target}),
        (SELECT count(*) FROM ${journal} WHERE ${window} AND (_floe_op <> 'r' OR _floe_unchanged IS NOT NULL)),
        (SELECT count(*) FROM ${journal} WHERE ${window}),
        (SELECT min(_floe_lsn) = max(_floe_lsn) FROM ${journal} WHERE ${window})`);
    if (Number(probe?.[0] ?? 1) !== 0 || Number(probe?.[1] ?? 1) !== 0) return undefined;
    const keyCols = t.columns.filter((col) => col.isKey).map((col) => quoteIdent(col.name));
    // Rows of one snapshot (one position) hold each key once: PostgreSQL's key is unique in it, each range
    // is loaded once (its marker), and a table snapshotted again is reset first, which moves the merge
    // past its older rows. Only rows of several snapshots (a resumed snapshot, whose ranges were read under
    // different ones, where a row may have moved between ranges) need the latest row per key; that
    // window doubled the time of the insert.
    const latestPerKey =
      probe?.[3] === true
        ? ''
        : `QUALIFY row_number() OVER (PARTITION BY ${keyCols.join(', ')} ORDER BY _floe_lsn DESC, _floe_ordinal DESC, _floe_seq DESC) = 1`;
    await this.#insertJournalRows(known, '', `${window} ${latestPerKey}`);
    return Number(probe?.[2] ?? 0);
  }

  /**
   * A window of changes to keys the target does not hold yet, each key once, with whole rows and no
   * truncate (a stream of inserts, the usual window): every change is its key's latest and nothing in
   * the target is replaced, so the rows go from the journal into the target in one INSERT … SELECT. The
   * general path copied the window twice into temporary tables and joined the whole target for values
   * no such window reads: three times as long (100,000 bench rows: 370 ms against 120). Deletes of keys
   * the target never held change nothing. Truncates and unchanged TOAST values are left to the general
   * path as well (a truncate has no key, so its window never counts each key once anyway).
   */
  async #mergeNewKeys(known: KnownTable, from: bigint, to: bigint): Promise<number | undefined> {
    const t = known.schema;
    const journal = this.#journal(t);
    const target = this.#target(t);
    const window = `j._floe_seq > ${from} AND j._floe_seq <= ${to}`;
    const keys = t.columns.filter((col) => col.isKey).map((col) => col.name);
    // With soft deletes a delete leaves a row behind, so only the general path handles one.
    const [stats] = await this.#rows(`SELECT count(*), count(*) FILTER (WHERE _floe_op = 't' OR _floe_unchanged IS NOT NULL
        ${this.#options.deleteMode === 'soft' ? "OR _floe_op = 'd'" : ''}), ${distinctKeys(keys)} FROM ${journal} j WHERE ${window}`);
    const rows = Number(stats?.[0] ?? 0);
    if (Number(stats?.[1] ?? 1) !== 0 || Number(stats?.[2] ?? -1) !== rows) return undefined;
    const key = (alias: string) => keyText(keys.map((k) => `${alias}.${quoteIdent(k)}`));
    const [held] = await this.#rows(`SELECT count(*) FROM ${journal} j JOIN ${target} tg ON tg._floe_key = ${key('j')} WHERE ${window}`);
    if (Number(held?.[0] ?? 1) !== 0) return undefined;
    await this.#insertJournalRows(known, 'j', `${window} AND _floe_op <> 'd'`);
    return rows;
  }

  /** Inserts the journal rows matching `where` (journal alias `alias`, or none) into the target, typed. */
  async #insertJournalRows(known: KnownTable, alias: string, where: string): Promise<void> {
    const t = known.schema;
    const a = alias ? `${alias}.` : '';
    const cols = known.journalColumns;
    const select = cols.map((col) => this.#castToTarget(known, col, `${a}${quoteIdent(col)}`));
    const key = keyText(t.columns.filter((col) => col.isKey).map((col) => `${a}${quoteIdent(col.name)}`));
    await this.#c()
      .run(`INSERT INTO ${this.#target(t)} (${cols.map(quoteIdent).join(', ')}, _floe_key, _floe_lsn, _floe_ordinal, _floe_synced_at)
      SELECT ${select.join(', ')}, ${key}, _floe_lsn, _floe_ordinal, now() FROM ${this.#journal(t)} ${alias} WHERE ${where}`);
  }

  /**
   * The SQL that turns the journal text `expr` of column `col` into the target column's type: the type
   * table's cast for the column as the relation has it now, or, for a column not in it (dropped at the
   * source, or not yet added in a replay after a restart), the cast recorded when it last was. A
   * column whose type change could not be applied stays VARCHAR: converted, then stored as text.
   */
  #castToTarget(known: KnownTable, col: string, expr: string): string {
    const i = known.journalColumns.indexOf(col);
    const stored = known.targetTypes[i];
    const current = known.schema.columns.find((x) => x.name === col);
    if (current) {
      const cast = current.type.duckdbCast(expr);
      return stored && stored !== current.type.duckdb ? `CAST(${cast} AS ${stored})` : cast;
    }
    const recorded = known.targetCasts[i];
    if (!stored || stored === 'VARCHAR') return recorded ? `CAST(${recorded.replaceAll(CAST_VALUE, expr)} AS VARCHAR)` : expr;
    // A column dropped before casts were recorded: a plain conversion, NULL where it does not apply.
    return `CAST(${recorded ? recorded.replaceAll(CAST_VALUE, expr) : `TRY_CAST(${expr} AS ${stored})`} AS ${stored})`;
  }

  async #createTarget(table: TableSchema, journalColumns?: string[]): Promise<void> {
    const c = this.#c();
    if (table.hasKey) {
      const defs = table.columns.map((col) => `${quoteIdent(col.name)} ${col.type.duckdb}`);
      await c.run(`CREATE TABLE IF NOT EXISTS ${this.#target(table)} (${defs.join(', ')},
        ${TARGET_META})`);
      return;
    }
    // Append-only history: a typed view over the journal. Columns dropped at the source stay as text.
    const byName = new Map(table.columns.map((col) => [col.name, col] as const));
    const names = journalColumns ?? table.columns.map((col) => col.name);
    const select = names.map((n) => {
      const col = byName.get(n);
      return `${col ? col.type.duckdbCast(quoteIdent(n)) : quoteIdent(n)} AS ${quoteIdent(n)}`;
    });
    await c.run(`CREATE OR REPLACE VIEW ${this.#target(table)} AS SELECT ${select.join(', ')},
      _floe_op, _floe_lsn, _floe_ordinal, _floe_commit_time, _floe_seq FROM ${this.#journal(table)}`);
  }

  /** For each journal data column, the index of the schema column filling it (-1: dropped at the source). */
  #columnPositions(known: KnownTable, table: TableSchema): number[] {
    const index = new Map(table.columns.map((col, i) => [col.name, i] as const));
    return known.journalColumns.map((n) => index.get(n) ?? -1);
  }

  #appendRow(
    appender: Awaited<ReturnType<DuckDBConnection['createAppender']>>,
    seq: bigint,
    known: KnownTable,
    positions: readonly number[],
    table: TableSchema,
    op: Change['op'],
    position: Position,
    commitTimeMicros: bigint,
    cells: readonly Cell[],
  ): void {
    appender.appendBigInt(seq);
    appender.appendUBigInt(position.lsn);
    appender.appendBigInt(BigInt(position.ordinal));
    appender.appendVarchar(op);
    if (commitTimeMicros === 0n) appender.appendNull();
    else appender.appendTimestampTZ(new this.#api!.DuckDBTimestampTZValue(commitTimeMicros));
    let unchanged: string[] | undefined;
    const values: (string | null)[] = [];
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i]!;
      const col: ColumnSchema | undefined = p >= 0 ? table.columns[p] : undefined;
      const cell = p >= 0 ? cells[p] : null;
      if (cell === undefined) {
        (unchanged ??= []).push(known.journalColumns[i]!);
        values.push(null);
      } else if (cell === null || col === undefined) {
        values.push(null);
      } else {
        values.push(col.type.isArray ? pgArrayToJson(cell) : cell);
      }
    }
    if (unchanged) appender.appendList(unchanged);
    else appender.appendNull();
    for (const v of values) {
      if (v === null) appender.appendNull();
      else appender.appendVarchar(v);
    }
    appender.endRow();
  }

  #known(table: TableSchema): KnownTable {
    const k = this.#tables.get(qualifiedName(table));
    if (!k) throw new FloeError('internal', `table ${qualifiedName(table)} was not prepared in the destination`);
    // k.schema is the one prepare() saw last; a change may carry an older one (journal columns map by name).
    return k;
  }

  #journalName(t: TableSchema): string {
    return qualifiedName(t);
  }

  #journal(t: TableSchema): string {
    return `${JOURNAL}.${quoteIdent(this.#journalName(t))}`;
  }

  #target(t: TableSchema): string {
    return `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
  }

  async #reloadSeq(): Promise<void> {
    const seq = await this.#rows(`SELECT next_seq FROM ${META}.seq`);
    const stored = BigInt((seq[0]?.[0] as bigint | undefined) ?? 1n);
    // Never back: numbers handed out to staged snapshot rows (or passed by a merge) stay taken; a gap is harmless.
    if (stored > this.#nextSeq) this.#nextSeq = stored;
  }

  #c(): DuckDBConnection {
    if (!this.#conn) throw new FloeError('internal', 'DuckDB destination is not open');
    return this.#conn;
  }

  async #rows(sql: string): Promise<unknown[][]> {
    return rowsOf(this.#c(), sql);
  }

  /** A connection of a snapshot range's own; closed by #disconnect, or by close() if the range outlives it. */
  async #connect(): Promise<DuckDBConnection> {
    if (!this.#instance) throw new FloeError('internal', 'DuckDB destination is not open');
    const c = await this.#instance.connect();
    this.#rangeConnections.add(c);
    return c;
  }

  #disconnect(c: DuckDBConnection): void {
    if (this.#rangeConnections.delete(c)) c.closeSync();
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.#turns.alone(fn);
  }
}

/**
 * Snapshot ranges moved into targets at once, while no range is being copied. On 2 cores, while ranges
 * are copied, one move takes DuckDB's one thread and PostgreSQL and the decoding share the other; once
 * the copy is over, the ranges it left staged moved two at a time, and the bench's snapshot took 0.7–1.5 s
 * less (medians 6.01 against 7.27 s). Each further move at once takes its own room in memory_limit
 * (bench/README.md).
 */
const MAX_CONCURRENT_MOVES = 2;

/**
 * Batches of changes a DuckDB destination with a watcher holds at once: one committing, the next one
 * waiting with its files written, while the runtime decodes the one after. More did not go faster on 2
 * cores and took the peak RSS over 300 MB (bench/README.md).
 */
const MAX_BATCHES_IN_FLIGHT = 2;

/** The journal rows of one table in a batch of changes. */
interface JournalGroup {
  /** A schema of the table (for its names). */
  readonly table: TableSchema;
  /** The journal's data columns when the batch was written: the file's fields after the metadata. */
  readonly columns: readonly string[];
  readonly lines: JournalFile;
  /** The file with `lines`, once written ('' if none). */
  file: string;
  /** Changes the file cannot hold, appended in the transaction: offset in the batch, change, column positions. */
  readonly appended: { readonly offset: number; readonly change: Change; readonly positions: readonly number[] }[];
}

/** A batch of changes written to files, waiting for its transaction. */
interface JournalBatch {
  readonly groups: JournalGroup[];
  readonly rows: number;
  removed: boolean;
  /** Deletes its files (once). */
  remove(): void;
}

/** Loads a journal batch file (`JournalFile`) into `journal`, its rows' seqs counted from `firstSeq`. */
function journalFileSql(journal: string, columns: readonly string[], file: string, firstSeq: bigint): string {
  const data = columns.map((_, i) => `'f${i + 6}': 'VARCHAR'`).join(', ');
  return `INSERT INTO ${journal} (_floe_seq, _floe_lsn, _floe_ordinal, _floe_op, _floe_commit_time, ${columns.map(quoteIdent).join(', ')})
    SELECT ${firstSeq} + f1, f2, f3, f4, f5::TIMESTAMPTZ, ${columns.map((_, i) => `f${i + 6}`).join(', ')}
    FROM read_csv(${quoteLiteral(file)}, columns = {'f1': 'BIGINT', 'f2': 'UBIGINT', 'f3': 'BIGINT', 'f4': 'VARCHAR', 'f5': 'VARCHAR'${data ? `, ${data}` : ''}},
      delim = '\t', quote = '', escape = '', nullstr = '\\N', header = false, auto_detect = false, strict_mode = true, comment = '',
      buffer_size = ${RANGE_FILE_BUFFER_BYTES})`;
}

/** A snapshot range is staged in steps of at most this many rows or bytes of text. */
const STAGE_ROWS = 2048;
const STAGE_BYTES = 1 << 20;

/**
 * DuckDB allocates through its own jemalloc, built with an arena per CPU, each holding freed pages for
 * reuse. One arena kept the bench's floe process 70–100 MB smaller on 2 cores, at no measured speed
 * difference (bench/README.md). jemalloc reads its options once, when the library first allocates, from
 * `DUCKDB_JE_MALLOC_CONF`: set before the first load, never over the operator's own value.
 */
function useOneAllocatorArena(): void {
  process.env.DUCKDB_JE_MALLOC_CONF ??= 'narenas:1';
}

/**
 * The number of distinct keys among a query's rows. Key columns are NOT NULL in every change but a
 * truncate, whose row has no key: a window holding one never counts each key once.
 */
function distinctKeys(keys: readonly string[]): string {
  return `count(DISTINCT ${keys.length === 1 ? quoteIdent(keys[0]!) : `ROW(${keys.map(quoteIdent).join(', ')})`})`;
}

/** A row's position `(lsn, ordinal)` as one comparable number; `alias` names the row's table (none: unqualified). */
function positionSql(alias?: string): string {
  const p = alias ? `${alias}.` : '';
  return `((${p}_floe_lsn::HUGEINT << 32) + (${p}_floe_ordinal + 1))`;
}

/** A snapshot range being staged: rows with escapes in a temporary table, whole COPY rows in a file. */
interface Stage {
  /** The range's own connection: the temporary table is visible only there. */
  readonly conn: DuckDBConnection;
  readonly cells: string;
  readonly file: string;
  fileRows: number;
}

/**
 * Pieces of COPY chunks bound for a range file, written together once they reach WRITE_BYTES: a piece is
 * often a few kilobytes (rows with escapes split a chunk), and each write is a round trip through libuv's
 * thread pool, which cost more of the main thread than the rest of staging.
 */
class PendingWrites {
  readonly #file: FileHandle;
  #parts: Buffer[] = [];
  #bytes = 0;

  constructor(file: FileHandle) {
    this.#file = file;
  }

  async add(part: Buffer): Promise<void> {
    this.#parts.push(part);
    this.#bytes += part.length;
    if (this.#bytes >= WRITE_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#bytes === 0) return;
    const [parts, bytes] = [this.#parts, this.#bytes];
    [this.#parts, this.#bytes] = [[], 0];
    const { bytesWritten } = await this.#file.writev(parts);
    // A regular file takes a whole write unless the disk is failing; fail closed rather than lose rows.
    if (bytesWritten !== bytes) {
      throw Object.assign(new Error(`wrote ${bytesWritten} of ${bytes} bytes`), { code: 'EIO', syscall: 'writev' });
    }
  }
}
const WRITE_BYTES = 1 << 20;

/** Rows longer than this are staged cell by cell: DuckDB's CSV reader refuses lines over 2 MiB by default. */
const MAX_FILE_ROW_BYTES = 1 << 20;

/**
 * The CSV reader's buffer for range files. Its default, 32 MB, is taken from DuckDB's memory_limit in full
 * (and twice for a file larger than that): at a 64MB limit a range whose text passed 32 MB ran
 * out of memory on every retry, and at 40MB any range did. It must hold the longest file row (1 MiB; at
 * 1 MiB such a row failed). 4 MiB loaded a 250,000-row range faster than the default did; 2 MiB, as
 * fast, leaves two moves at once (MAX_CONCURRENT_MOVES) more of the limit (bench/README.md).
 */
const RANGE_FILE_BUFFER_BYTES = 2 << 20;

/**
 * A range file's rows (`#stageRange`) as the journal's data columns, read by DuckDB's CSV reader: split at
 * tabs, `\N` as NULL, nothing quoted or escaped (COPY's text format has no quoting, and the file holds
 * only rows without escapes), each row exactly the table's number of fields.
 */
function rangeFileSql(table: TableSchema, known: KnownTable, positions: readonly number[], file: string): string {
  const n = table.columns.length;
  const fields = positions.map((p, i) => `${p < 0 ? 'NULL' : `f${p + 1}`} AS ${quoteIdent(known.journalColumns[i]!)}`);
  const columns = Array.from({ length: n }, (_, i) => `'f${i + 1}': 'VARCHAR'`).join(', ');
  return `SELECT ${fields.join(', ')} FROM read_csv(${quoteLiteral(file)}, columns = {${columns}}, delim = '\t', quote = '', escape = '',
    nullstr = '\\N', header = false, auto_detect = false, strict_mode = true, comment = '', buffer_size = ${RANGE_FILE_BUFFER_BYTES})`;
}

async function rowsOf(c: DuckDBConnection, sql: string): Promise<unknown[][]> {
  const reader = await c.runAndReadAll(sql);
  return reader.getRowsJS() as unknown[][];
}

/** Fails closed if DuckDB read another number of rows from a range file than were written to it. */
function checkFileRows(read: number, written: number): void {
  if (read !== written) {
    throw new FloeError('internal', `DuckDB read ${read} rows of a snapshot range file that holds ${written}`, { retry: 'manual' });
  }
}

/**
 * A range's error, as wrapDuckDb has it, except that the CSV reader's report of a row with the wrong
 * number of fields is said as the cell parser says it, without the row (it holds the user's data).
 */
function wrapRangeError(err: unknown, what: string, columns: number): FloeError {
  const fields = /Expected Number of Columns: (\d+) Found: (\d+)/.exec((err as Error).message ?? '');
  if (!fields) return wrapDuckDb(err, what);
  return new FloeError('destination', `DuckDB failed ${what}: COPY row has ${fields[2]} fields, expected ${columns}`, {
    retry: 'manual',
    hint: 'the journal keeps every change; report this with the table definition, then resync the table',
  });
}

/** Stands for the journal text in a recorded cast (`KnownTable.targetCasts`); the type table's SQL never contains it. */
const CAST_VALUE = '\u0001';
const castTemplate = (col: ColumnSchema): string => col.type.duckdbCast(CAST_VALUE);
const sqlList = (items: readonly string[]): string => `[${items.map(quoteLiteral).join(', ')}]::VARCHAR[]`;

/** How DuckDB says a statement ran out of its memory_limit. */
const OUT_OF_MEMORY = /Out of Memory Error|could not allocate block|failed to pin block/;

function wrapDuckDb(err: unknown, what: string): FloeError {
  if (err instanceof FloeError) return err;
  const message = (err as Error).message;
  // A statement DuckDB refuses to bind or convert fails the same way on every retry.
  const deterministic = /^(Binder|Parser|Catalog|Conversion|Constraint) Error/.test(message);
  const hint = deterministic
    ? 'the journal keeps every change; report this with the table definition, then resync the table'
    : OUT_OF_MEMORY.test(message)
      ? "raise the destination's memory_limit (duckdb:<path>?memory_limit=128MB); nothing is lost meanwhile"
      : undefined;
  return new FloeError('destination', `DuckDB failed ${what}: ${message.split('\n')[0]}`, {
    cause: err,
    retry: deterministic ? 'manual' : 'timed',
    hint,
  });
}
