/**
 * Snowflake destination: journals loaded by Snowpipe Streaming, targets by MERGE through the SQL API.
 *
 * Objects (names in sql.ts): per source table `schema.table`
 * - a journal `DB.LANDING."SCHEMA_TABLE"`: every change as the exact PostgreSQL text of each value
 *   (VARCHAR, like the DuckDB journal) plus `_FLOE_LSN`, `_FLOE_ORDINAL`, `_FLOE_OP`,
 *   `_FLOE_COMMIT_TIME`, `_FLOE_UNCHANGED` (columns not sent: unchanged TOAST), `_FLOE_SEQ` (load
 *   order, assigned by floe, increasing per table) and `_FLOE_RANGE` (snapshot range of an 'r' row);
 *   it is loaded through the table's default pipe `SCHEMA_TABLE-STREAMING`, or, when that name is not
 *   upper-case-safe, through a named pipe floe creates (`pipeNameFor` in sql.ts says why);
 * - a target `DB.SCHEMA."SCHEMA_TABLE"`: current state, typed, each row keeping its position;
 * - bookkeeping in the landing schema: `_FLOE_TABLES` (journal columns, merged seq, snapshot
 *   complete), `_FLOE_RANGES` (snapshot ranges loaded), `_FLOE_MERGES` (merge log, for retention).
 *
 * Exactly once. Changes go to named channels, `channels_per_table` per table; all changes of a key go
 * to the same channel (hash of the key text), so per key the channel order is the position order.
 * Offset tokens are the change position as fixed-width text (`LSN(20)-ORDINAL(10)`), so a channel's
 * committed token says which changes it holds: after a crash the runtime replays from its durable
 * LSN and every change at or below its channel's committed token is skipped. Channel names carry the
 * pipeline and the slot incarnation, so a new incarnation never compares against old tokens.
 *
 * Channel sets. The channel of a change depends on `channels_per_table`, so after a restart with another
 * count a replayed change may hash to a channel that never received it (whose token can be above it: the
 * change would be skipped and lost) or away from the one that committed it (sent again: twice in the
 * journal). So every count an incarnation streams with is recorded in `_FLOE_CHANNELS`, each count has
 * its own channels (the first keeps the names `C<i>`, later ones are `N<count>C<i>`), and a replayed
 * change counts as written when the channel it hashes to in ANY recorded set committed it. That is
 * exact: a channel whose committed token is at or above a change's position was fed, in one session,
 * every change from that session's start (at or below today's acknowledged position) up to that token,
 * in order; the change was among them, so it either went to that very channel (and is committed) or was
 * found written already. Earlier sets are opened only to read their tokens.
 * Pipelined: `writeChanges` resolves once every channel ACCEPTED its part of the batch (a transient
 * failure — breaker open, 5xx, network — is waited out and retried meanwhile, the runtime stops reading
 * the socket and keeps answering keepalives); the commit is awaited in the background, and
 * `watchDurable` reports, in batch order, the last position of the batches whose every channel's
 * committed token covers them. The runtime acknowledges only that (design invariant 1), and bounds
 * what is uncommitted. Terminal failures (auth, row errors, a rejected statement) reject the next
 * write and are reported to the watcher.
 *
 * Snapshot ranges use their own channel per range (`..._S<index>`), tokens the row number in the
 * range. A range is recorded in `_FLOE_RANGES` only after all its rows are committed. A range
 * interrupted mid-way is rewritten: its channel is reopened (server-side pending rows are
 * discarded), rows it committed are deleted by range tag, the channel is dropped (its token reset)
 * and the range is written again — so the journal never holds a range twice.
 *
 * Merge windows are `_FLOE_SEQ` ranges: (merged seq, highest seq below every write still in
 * flight]. See sql.ts for the MERGE and its guards.
 */
import { checkColumnNames, tableNameClash } from '../../schema/destination-names.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Change, Position, TableSchema } from '../../model.js';
import { qualifiedName } from '../../model.js';
import type {
  DeleteMode,
  Destination,
  DestinationCheckpoint,
  DestinationHealth,
  DurableWatcher,
  MergeResult,
  PrepareResult,
  SnapshotChunk,
  SnapshotRangeRef,
} from '../destination.js';
import { FloeError, coerceError } from '../../errors.js';
import type { Logger } from '../../telemetry/logger.js';
import { NdjsonEncoder } from '../encoding/ndjson.js';
import { NdjsonLines } from '../encoding/ndjson-lines.js';
import { formatLsn } from '../../postgres/lsn.js';
import { snowflakeCast } from './casts.js';
import { KeyPairAuth } from './auth.js';
import type { SnowflakeConfig } from './config.js';
import { SnowflakeBreaker, type SnowflakeBreakerOptions } from './http.js';
import { SnowflakeMetrics } from './metrics.js';
import { SqlApiClient } from './sql-api.js';
import { ChannelRewoundError, StreamingClient } from './streaming.js';
import {
  addColumn,
  appendHistoryStatements,
  bookkeeping,
  createJournal,
  createPipe,
  createTarget,
  literal,
  mergeStatements,
  moveSeedStatement,
  backfillKeyTextStatement,
  pipeNameFor,
  qualified,
  quoteSf,
  retentionStatements,
  retypeColumn,
  setupStatements,
  snowflakeName,
  tableNameFor,
  windowStatsStatements,
  type Names,
  type SfColumn,
} from './sql.js';

// ---- seams: the subset of the wire clients (sql-api.ts, streaming.ts) this destination uses ----

export interface SqlResultLike {
  readonly rows: readonly (readonly (string | null)[])[];
}

export interface SqlClientLike {
  query(sql: string, options?: { signal?: AbortSignal; requestId?: string }): Promise<SqlResultLike>;
  multi(sqls: string[], options?: { signal?: AbortSignal; requestId?: string }): Promise<SqlResultLike[]>;
}

export interface ChannelLike {
  readonly name: string;
  readonly committedOffsetToken: string | null;
  /** The status at (re)open: rows Snowflake rejected on this channel before, if any. */
  readonly openStatus?: {
    readonly rowsErrorCount: number;
    readonly lastErrorOffsetToken?: string | null;
    readonly lastErrorMessage?: string | null;
  };
  append(lines: NdjsonLines, tokens: string[], signal?: AbortSignal): Promise<void>;
  /** Sends what failed appends left queued. */
  flush(signal?: AbortSignal): Promise<void>;
  waitCommitted(token: string, signal?: AbortSignal): Promise<void>;
  drop(signal?: AbortSignal): Promise<void>;
}

export interface StreamingClientLike {
  openChannel(pipe: { database: string; schema: string; pipe: string }, channelName: string, signal?: AbortSignal): Promise<ChannelLike>;
}

export interface SnowflakeDestinationOptions {
  readonly database: string;
  readonly schema: string;
  readonly landingSchema: string;
  readonly sql: SqlClientLike;
  readonly streaming: StreamingClientLike;
  readonly log: Logger;
  readonly deleteMode?: DeleteMode;
  /** Named channels per table for the change stream. (Default: 2) */
  readonly channelsPerTable?: number;
  /** A table is merged at most this often (a drain's merge is not held back). (Default: 30 s) */
  readonly mergeIntervalMs?: number;
  /** ... or sooner once this many journal rows wait. */
  readonly mergeRows?: number;
  /** Merged journal rows are deleted this long after their merge. (Default: kept) */
  readonly journalRetentionMs?: number;
  /** Merge counters and latency are registered here. */
  readonly registry?: Registry;
  /** Called when something is about to be retried, for tests and logs. */
  readonly onRetry?: (what: string, error: FloeError, delayMs: number) => void;
  /** Closed with the destination (the wire clients). */
  readonly resources?: readonly { close(): Promise<void> }[];
  /** The account's circuit breaker, for `health()` (floe status). */
  readonly breaker?: { readonly state: DestinationHealth['breaker'] };
}

export interface SnowflakeClients {
  readonly auth: KeyPairAuth;
  readonly sql: SqlApiClient;
  readonly streaming: StreamingClient;
  readonly breaker: SnowflakeBreaker;
}

/** The wire clients of one account, sharing one circuit breaker. */
export function createSnowflakeClients(
  config: SnowflakeConfig,
  options: { log: Logger; registry?: Registry; breaker?: SnowflakeBreakerOptions },
): SnowflakeClients {
  const { log, registry } = options;
  const auth = new KeyPairAuth({ account: config.account, user: config.user, privateKey: config.privateKey });
  const metrics = registry ? new SnowflakeMetrics(registry) : undefined;
  const breaker = new SnowflakeBreaker({
    log,
    metrics,
    ...(config.breakerHalfOpenMs !== undefined ? { halfOpenAfterMs: config.breakerHalfOpenMs } : {}),
    ...options.breaker,
  });
  const sql = new SqlApiClient({
    baseUrl: config.accountUrl,
    auth,
    warehouse: config.warehouse,
    role: config.role,
    // No session database or schema: every statement names its objects fully, and a session database
    // that does not exist yet would make CREATE DATABASE fail.
    // Timestamps without an offset (TIMESTAMP_NTZ casts, SYSDATE) are UTC, like the source session.
    parameters: { TIMEZONE: 'UTC', QUERY_TAG: 'floe' },
    breaker,
    log,
    metrics,
  });
  const streaming = new StreamingClient({
    accountUrl: config.accountUrl,
    auth,
    baseUrlOverride: config.baseUrl !== undefined,
    role: config.role,
    // Commits are awaited in the background while later batches are appended; the poll interval adds to
    // the commit → acknowledgement latency only (one bulk request per pipe per round).
    statusPollIntervalMs: 250,
    // Nothing uncommitted is kept for replay: after a reopen that lost accepted rows the runtime restarts
    // the stream from its acknowledged position (docs/architecture.md, "Recovery without replay buffers").
    replayUncommitted: false,
    breaker,
    log,
    metrics,
  });
  return { auth, sql, streaming, breaker };
}

/** The destination over the real wire clients, from a parsed URL (config.ts). */
export function createSnowflakeDestination(
  config: SnowflakeConfig,
  options: { log: Logger; deleteMode?: DeleteMode; registry?: Registry; breaker?: SnowflakeBreakerOptions },
): SnowflakeDestination {
  const { log, registry } = options;
  const { sql, streaming, breaker } = createSnowflakeClients(config, options);
  return new SnowflakeDestination({
    database: config.database,
    schema: config.schema,
    landingSchema: config.landingSchema,
    sql,
    streaming,
    log,
    deleteMode: config.deleteMode ?? options.deleteMode,
    channelsPerTable: config.channelsPerTable,
    mergeIntervalMs: config.mergeIntervalMs,
    mergeRows: config.mergeRows,
    journalRetentionMs: config.journalRetentionMs,
    registry,
    resources: [streaming, sql],
    breaker,
  });
}

/**
 * Invariant 7 across restarts: rows Snowflake rejected on a channel are behind its committed offset token,
 * so a restarted pipeline would skip their changes as already written. Channels belong to one slot
 * incarnation and every row error stops the pipeline, so a stream channel that reports rejected rows at
 * open means changes are missing from the journal: stop, loudly, every time.
 */
function rejectEarlierRowErrors(channel: ChannelLike, table: string): void {
  const s = channel.openStatus;
  if (!s || s.rowsErrorCount <= 0) return;
  throw new FloeError(
    'destination',
    `Snowflake rejected ${s.rowsErrorCount} row(s) of ${table} on channel ${channel.name} earlier (last at offset token ${s.lastErrorOffsetToken ?? 'unknown'}: ${s.lastErrorMessage ?? 'no message'}); those changes are missing from the journal`,
    {
      retry: 'none',
      hint: 'fix the cause (a column type or size in Snowflake, or the data), then recreate the pipeline with a new slot so every table is snapshotted again',
    },
  );
}

/** What the merge and the DDL know about one journal column. */
interface JournalColumn {
  /** PostgreSQL name (bookkeeping key). */
  readonly pg: string;
  /** Snowflake name. */
  readonly sf: string;
}

interface ChannelState {
  channel: ChannelLike;
  readonly name: string;
}

interface TableState {
  schema: TableSchema;
  readonly sourceTable: string;
  readonly tableName: string;
  readonly journal: string;
  readonly target: string;
  readonly pipe: string;
  /**
   * The default pipe a journal was loaded through before it got its named pipe (a table from before
   * named pipes): its channels' committed tokens also say what a replay must not send again.
   */
  legacyPipe: string | undefined;
  journalColumns: JournalColumn[];
  /** Snowflake type of each journal column's target column (may lag the type table after a retype that failed). */
  targetTypes: string[];
  snapshotComplete: boolean;
  mergedSeq: bigint;
  /** Re-read MERGED_SEQ before the next merge (the last one ended ambiguously). */
  mergedSeqStale: boolean;
  nextSeq: bigint;
  /** First seq of each write in flight: a merge window ends below the lowest. */
  readonly inflight: Map<number, bigint>;
  channels: ChannelState[];
  /** Committed tokens of the channels of earlier channel sets, per set (null: the channel holds nothing). */
  earlier: { readonly count: number; readonly tokens: readonly (string | null)[] }[];
  lastMergeAt: number;
  rowsSinceMerge: number;
  /** Merges of one table run one after the other (the timer's and a retype's). */
  mergeChain: Promise<unknown>;
}

/** A `channels_per_table` an incarnation streamed with; the first one recorded keeps the names `C<i>`. */
interface ChannelSet {
  readonly count: number;
  readonly first: boolean;
}

const channelSuffix = (set: ChannelSet, i: number): string => (set.first ? `C${i}` : `N${set.count}C${i}`);

/** Whether a channel whose committed offset token is `committed` holds the change with offset token `token`. */
const holds = (committed: string | null | undefined, token: string): boolean => committed != null && token <= committed;

/** A batch accepted by the channels, waiting for their commits. */
interface PendingBatch {
  readonly last: Position;
  committed: boolean;
}

/** A batch of changes encoded for its channels, not sent yet. */
interface EncodedBatch {
  readonly batch: PendingBatch;
  /** The tables the batch writes to (their merges wait for it: `#beginWrite`). */
  readonly writes: { state: TableState; id: number }[];
  readonly channels: { channel: ChannelState; state: TableState; lines: NdjsonLines; tokens: string[] }[];
}

const TOKEN_LSN_WIDTH = 20;
const TOKEN_ORDINAL_WIDTH = 10;
const TOKEN_ROW_WIDTH = 12;
/** Lines per append call; the channel splits requests at 4 MB itself. */
const APPEND_LINES = 10_000;

/** A change's offset token: fixed width, so string order is position order. */
export const positionToken = (p: Position): string =>
  `${p.lsn.toString().padStart(TOKEN_LSN_WIDTH, '0')}-${String(p.ordinal).padStart(TOKEN_ORDINAL_WIDTH, '0')}`;

export class SnowflakeDestination implements Destination {
  readonly #o: SnowflakeDestinationOptions;
  readonly #names: Names;
  readonly #deleteMode: DeleteMode;
  readonly #channelsPerTable: number;
  readonly #tables = new Map<string, TableState>();
  readonly #closing = new AbortController();
  readonly #metrics: MergeMetrics | undefined;
  #pipeline = '';
  #incarnation = '';
  #durable: Position | undefined;
  /** Accepted batches in write order; the committed prefix is reported to the watcher. */
  #pending: PendingBatch[] = [];
  /** The channel sets this pipeline incarnation has used, from `_FLOE_CHANNELS` (read at open). */
  #channelSets: ChannelSet[] = [];
  #watcher: DurableWatcher | undefined;
  /** A background commit wait failed for good: later writes reject with it. */
  #failure: FloeError | undefined;
  #inflightIds = 0;
  #lastRetention = 0;

  constructor(options: SnowflakeDestinationOptions) {
    this.#o = options;
    this.#names = { database: options.database, schema: options.schema, landing: options.landingSchema };
    this.#deleteMode = options.deleteMode ?? 'hard';
    this.#channelsPerTable = options.channelsPerTable ?? 2;
    this.#metrics = options.registry ? new MergeMetrics(options.registry) : undefined;
  }

  get deleteMode(): DeleteMode {
    return this.#deleteMode;
  }

  /** Names of the objects of a source table: for tests, `floe doctor` and docs. */
  objectsOf(table: { schema: string; name: string }): { journal: string; target: string; pipe: string; namedPipe: boolean } {
    const name = tableNameFor(table.schema, table.name);
    const pipe = pipeNameFor(name);
    return {
      journal: qualified(this.#names.database, this.#names.landing, name),
      target: qualified(this.#names.database, this.#names.schema, name),
      pipe: pipe.name,
      namedPipe: pipe.named,
    };
  }

  async open(pipeline: string, incarnation: string, signal?: AbortSignal): Promise<DestinationCheckpoint> {
    this.#pipeline = pipeline;
    this.#incarnation = incarnation;
    // A pipeline that reconnects opens again: channels are reopened and seqs re-read in prepare().
    this.#tables.clear();
    this.#durable = undefined;
    // Commits still awaited belong to the previous stream, which restarts from its acknowledged position.
    this.#pending = [];
    this.#failure = undefined;
    // A stop request ends the setup's calls and their retries (an unreachable or failing Snowflake).
    const setup = signal ? AbortSignal.any([this.#signal, signal]) : this.#signal;
    const [createDb, ...rest] = setupStatements(this.#names);
    await this.#retrying(
      'creating the database',
      async () => {
        // The database may exist while the role may not create databases: that is fine.
        await this.#o.sql.query(createDb!, { signal: setup }).catch((err: unknown) => {
          const e = coerceError(err);
          if (e.retry === 'timed') throw e;
          this.#o.log.debug({ err: e.message }, 'CREATE DATABASE IF NOT EXISTS failed; assuming the database exists');
        });
        await this.#o.sql.multi(rest, { signal: setup, requestId: randomUUID() });
      },
      setup,
    );
    this.#channelSets = await this.#recordChannelSet(setup);
    // Each channel's committed token is the watermark; there is no single one to report.
    return { durable: undefined };
  }

  /** Reads the channel sets of this incarnation and records the current count if it is new. */
  async #recordChannelSet(stop: AbortSignal): Promise<ChannelSet[]> {
    const table = bookkeeping(this.#names, '_FLOE_CHANNELS');
    const mine = `"PIPELINE" = ${literal(this.#pipeline)} AND "INCARNATION" = ${literal(this.#incarnation)}`;
    const { rows } = await this.#retrying(
      'reading the channel sets',
      () => this.#o.sql.query(`SELECT "CHANNEL_COUNT", "FIRST" FROM ${table} WHERE ${mine}`, { signal: stop }),
      stop,
    );
    const sets = new Map<number, ChannelSet>();
    for (const [count, first] of rows) {
      const set = { count: Number(count), first: first === 'true' || first === '1' || first === 'TRUE' };
      if (!sets.has(set.count) || set.first) sets.set(set.count, set);
    }
    if (!sets.has(this.#channelsPerTable)) {
      // A pipeline from before channel sets has no row: its channels are named C<i> for today's count.
      const set = { count: this.#channelsPerTable, first: sets.size === 0 };
      const requestId = randomUUID();
      await this.#retrying(
        'recording the channel set',
        () =>
          this.#o.sql.multi(
            [
              `INSERT INTO ${table} ("PIPELINE", "INCARNATION", "CHANNEL_COUNT", "FIRST", "CREATED_AT") VALUES (${literal(this.#pipeline)}, ${literal(this.#incarnation)}, ${set.count}, ${set.first ? 'TRUE' : 'FALSE'}, SYSDATE())`,
            ],
            { signal: stop, requestId },
          ),
        stop,
      );
      if (!set.first)
        this.#o.log.info(
          { channelsPerTable: set.count, earlier: [...sets.keys()] },
          'channels_per_table changed: replays are checked against every earlier channel set',
        );
      sets.set(set.count, set);
    }
    return [...sets.values()];
  }

  async prepare(table: TableSchema): Promise<PrepareResult> {
    const sourceTable = qualifiedName(table);
    const columns = table.columns.map((c) => ({ pg: c.name, sf: snowflakeName(c.name) }));
    checkColumnNames(table, 'Snowflake', snowflakeName);
    const { journal, target, pipe, namedPipe } = this.objectsOf(table);
    const tableName = tableNameFor(table.schema, table.name);
    const pipeDdl = namedPipe ? [createPipe(qualified(this.#names.database, this.#names.landing, pipe), journal)] : [];
    const tablesTable = bookkeeping(this.#names, '_FLOE_TABLES');
    const rows = await this.#retrying(`reading the bookkeeping of ${sourceTable}`, () =>
      this.#o.sql.query(
        `SELECT "JOURNAL_COLUMNS", "TARGET_TYPES", "SNAPSHOT_COMPLETE", "MERGED_SEQ", "TARGET_TABLE", "KEY_COLUMNS", "PIPE" FROM ${tablesTable} WHERE "SOURCE_TABLE" = ${literal(sourceTable)} ORDER BY "MERGED_SEQ" DESC LIMIT 1`,
        { signal: this.#signal },
      ),
    );
    let state = this.#tables.get(sourceTable);
    let converted = false;
    const existing = rows.rows[0];
    if (!existing) {
      const other = [...this.#tables.values()].find((t) => t.tableName === tableName && t.sourceTable !== sourceTable);
      if (other) throw tableNameClash(other.sourceTable, sourceTable, 'Snowflake', tableName);
      const sfCols = this.#sfColumns(
        table,
        columns,
        table.columns.map((c) => c.type.snowflake),
      );
      await this.#retrying(`creating the tables of ${sourceTable}`, () =>
        this.#o.sql.multi(
          [
            createJournal(journal, sfCols),
            ...pipeDdl,
            createTarget(target, sfCols, table.hasKey),
            `INSERT INTO ${tablesTable} ("SOURCE_TABLE", "TARGET_TABLE", "JOURNAL_COLUMNS", "TARGET_TYPES", "SNAPSHOT_COMPLETE", "MERGED_SEQ", "KEY_COLUMNS", "PIPE", "UPDATED_AT") VALUES (${literal(sourceTable)}, ${literal(tableName)}, ${literal(JSON.stringify(columns.map((c) => c.pg)))}, ${literal(JSON.stringify(table.columns.map((c) => c.type.snowflake)))}, FALSE, 0, ${literal(keyColumnsOf(table))}, ${literal(pipe)}, SYSDATE())`,
          ],
          { signal: this.#signal, requestId: randomUUID() },
        ),
      );
      state = this.#newState(
        table,
        sourceTable,
        tableName,
        journal,
        target,
        pipe,
        columns,
        table.columns.map((c) => c.type.snowflake),
        false,
        0n,
      );
    } else {
      const journalPg = JSON.parse(existing[0] ?? '[]') as string[];
      const targetTypes = JSON.parse(existing[1] ?? '[]') as string[];
      const journalColumns = journalPg.map((pg) => ({ pg, sf: snowflakeName(pg) }));
      const snapshotComplete = existing[2] === 'true' || existing[2] === '1' || existing[2] === 'TRUE';
      const mergedSeq = BigInt(existing[3] ?? '0');
      const described = state ? undefined : await this.#targetColumns(target);
      const wasKeyed = state ? state.schema.hasKey : described!.includes('_FLOE_DELETED');
      if (!state) {
        state = this.#newState(
          table,
          sourceTable,
          tableName,
          journal,
          target,
          pipe,
          journalColumns,
          targetTypes,
          snapshotComplete,
          mergedSeq,
        );
      }
      if (pipeDdl[0] !== undefined && existing[6] == null) await this.#moveToNamedPipe(state, pipeDdl[0]);
      const keysBefore = existing[5] ?? null;
      if (wasKeyed !== table.hasKey) converted = await this.#convertTarget(state, table);
      else if (table.hasKey && keysBefore !== null && keysBefore !== keyColumnsOf(table)) {
        // Another key (primary key or replica identity index): target rows carry keys no change names any
        // more. No merge until the resync the caller starts has emptied the target and snapshotted again.
        this.#o.log.info({ table: sourceTable }, 'the key columns changed: resyncing the table');
        state.snapshotComplete = false;
        converted = true;
      }
      if (keysBefore === null) {
        // A table from before KEY_COLUMNS: its target was merged on today's key. (A changed key is recorded
        // by resetTable, so a resync interrupted before it is detected again.)
        await this.#retrying(`recording the key of ${sourceTable}`, () =>
          this.#o.sql.query(
            `UPDATE ${tablesTable} SET "KEY_COLUMNS" = ${literal(keyColumnsOf(table))} WHERE "SOURCE_TABLE" = ${literal(sourceTable)}`,
            { signal: this.#signal },
          ),
        );
      } else if (table.hasKey && described && !described.includes('_FLOE_KEY')) converted = await this.#addKeyText(state, table);
      await this.#evolve(state, table);
    }
    state.schema = table;
    if (state.channels.length === 0) await this.#openStreamChannels(state);
    return { converted };
  }

  /**
   * A table from before named pipes whose name needs one (its row has no PIPE): the named pipe is created
   * if missing, and the default pipe the journal was loaded through stays `legacyPipe`, whose channels a
   * replay is checked against too, at every start: what they committed before an unclean stop must not
   * be sent again through the new pipe, and nothing records when no replay can reach them any more.
   */
  async #moveToNamedPipe(state: TableState, createPipeStatement: string): Promise<void> {
    state.legacyPipe = `${state.tableName}-STREAMING`;
    await this.#retrying(`creating the pipe of ${state.sourceTable}`, () =>
      this.#o.sql.query(createPipeStatement, { signal: this.#signal }),
    );
  }

  /** The column names of a target (keyed targets have `_FLOE_DELETED`). */
  async #targetColumns(target: string): Promise<string[]> {
    const r = await this.#retrying(`describing ${target}`, () => this.#o.sql.query(`DESCRIBE TABLE ${target}`, { signal: this.#signal }));
    return r.rows.map((row) => String(row[0]));
  }

  /**
   * A keyed target from before `_FLOE_KEY` gets the column, filled from the journal row each target row
   * came from. A row that cannot be matched so (a key its type could not hold) makes the table resync
   * once (returns true: the caller resyncs it).
   */
  async #addKeyText(state: TableState, table: TableSchema): Promise<boolean> {
    const keys = this.#sfColumns(table, state.journalColumns, state.targetTypes).filter((c) => c.isKey);
    const requestId = randomUUID();
    await this.#retrying(`adding _FLOE_KEY to ${state.target}`, () =>
      this.#o.sql.multi(
        ['BEGIN', addColumn(state.target, '_FLOE_KEY', 'VARCHAR'), backfillKeyTextStatement(state.target, state.journal, keys), 'COMMIT'],
        { signal: this.#signal, requestId },
      ),
    );
    const [missing] = (
      await this.#retrying(`checking _FLOE_KEY of ${state.target}`, () =>
        this.#o.sql.query(`SELECT COUNT(*) FROM ${state.target} WHERE "_FLOE_KEY" IS NULL`, { signal: this.#signal }),
      )
    ).rows;
    const resync = Number(missing?.[0] ?? 0) > 0;
    if (resync) this.#o.log.warn({ table: state.sourceTable }, 'target rows whose key the journal cannot match: resyncing the table once');
    return resync;
  }

  /**
   * A table that gained a key (a primary key added to a REPLICA IDENTITY FULL table) or lost it gets the
   * other kind of target: keyed state cannot be derived from keyless history (its deletes carry no key),
   * nor history from keyed state. The old target is replaced by an empty one, and journal rows loaded so
   * far are never merged into it; the caller resyncs the table (no merge until that snapshot completes).
   */
  async #convertTarget(state: TableState, table: TableSchema): Promise<boolean> {
    const sql = this.#o.sql;
    const [max] = (await sql.query(`SELECT MAX("_FLOE_SEQ") FROM ${state.journal}`, { signal: this.#signal })).rows;
    const seq = BigInt(max?.[0] ?? '0');
    const columns = this.#sfColumns(table, state.journalColumns, state.targetTypes).map((c) => {
      const col = table.columns.find((x) => snowflakeName(x.name) === c.name);
      return col ? { ...c, type: col.type.snowflake } : c;
    });
    const tablesTable = bookkeeping(this.#names, '_FLOE_TABLES');
    await this.#retrying(`converting the target of ${state.sourceTable}`, () =>
      sql.multi(
        [
          `DROP TABLE IF EXISTS ${state.target}`,
          createTarget(state.target, columns, table.hasKey),
          `UPDATE ${tablesTable} SET "SNAPSHOT_COMPLETE" = FALSE, "MERGED_SEQ" = ${seq}, "TARGET_TYPES" = ${literal(JSON.stringify(columns.map((c) => c.type)))}, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`,
        ],
        { signal: this.#signal, requestId: randomUUID() },
      ),
    );
    state.targetTypes = columns.map((c) => c.type);
    state.snapshotComplete = false;
    state.mergedSeq = seq;
    state.mergedSeqStale = true;
    this.#o.log.info({ table: state.sourceTable, keyed: table.hasKey }, 'table changed between keyed and keyless: target recreated');
    return true;
  }

  async writeSnapshotRange(range: SnapshotRangeRef, rows: AsyncIterable<SnapshotChunk>): Promise<number> {
    const state = this.#known(range.table);
    const sql = this.#o.sql;
    const rangesTable = bookkeeping(this.#names, '_FLOE_RANGES');
    const marker = `"PIPELINE" = ${literal(this.#pipeline)} AND "INCARNATION" = ${literal(this.#incarnation)} AND "SOURCE_TABLE" = ${literal(state.sourceTable)} AND "RANGE_INDEX" = ${range.rangeIndex}`;
    const done = await sql.query(`SELECT COUNT(*) FROM ${rangesTable} WHERE ${marker}`, { signal: this.#signal });
    if (Number(done.rows[0]?.[0] ?? 0) > 0) {
      for await (const chunk of rows) void chunk; // drain the producer
      return 0;
    }
    const pipe = { database: this.#names.database, schema: this.#names.landing, pipe: state.pipe };
    const name = this.#channelName(`S${range.rangeIndex}`);
    // Reopening discards rows an interrupted attempt left pending and fences its writer; what it
    // committed is deleted, then the channel is dropped so its offset token starts again.
    let channel = await this.#o.streaming.openChannel(pipe, name, this.#signal);
    if (channel.committedOffsetToken !== null) {
      this.#o.log.info({ table: state.sourceTable, range: range.rangeIndex }, 'rewriting an interrupted snapshot range');
      await sql.query(
        `DELETE FROM ${state.journal} WHERE "_FLOE_RANGE" = ${range.rangeIndex} AND "_FLOE_OP" = 'r' AND "_FLOE_SEQ" > ${state.mergedSeq}`,
        { signal: this.#signal, requestId: randomUUID() },
      );
      await channel.drop(this.#signal);
      channel = await this.#o.streaming.openChannel(pipe, name, this.#signal);
    }
    const encoder = this.#encoder();
    const position: Position = { lsn: range.snapshotLsn, ordinal: -1 };
    const id = this.#beginWrite(state);
    let count = 0;
    let tokens: string[] = [];
    const flush = async () => {
      if (tokens.length === 0) return;
      const [l, t] = [NdjsonLines.take(encoder), tokens];
      tokens = [];
      await channel.append(l, t, this.#signal);
    };
    try {
      for await (const chunk of rows) {
        for (let i = 0; i < chunk.length; i++) {
          encoder.writeSnapshotRow(range.table, position, chunk, i, { seq: state.nextSeq++, range: range.rangeIndex });
          count++;
          tokens.push(String(count).padStart(TOKEN_ROW_WIDTH, '0'));
        }
        if (tokens.length >= APPEND_LINES) await flush();
      }
      await flush();
      if (count > 0) await channel.waitCommitted(String(count).padStart(TOKEN_ROW_WIDTH, '0'), this.#signal);
      await sql.query(
        `INSERT INTO ${rangesTable} ("PIPELINE", "INCARNATION", "SOURCE_TABLE", "RANGE_INDEX", "SNAPSHOT_LSN", "ROW_COUNT", "LOADED_AT") VALUES (${literal(this.#pipeline)}, ${literal(this.#incarnation)}, ${literal(state.sourceTable)}, ${range.rangeIndex}, ${range.snapshotLsn}, ${count}, SYSDATE())`,
        { signal: this.#signal, requestId: randomUUID() },
      );
    } catch (err) {
      // The range is rewritten when the pipeline retries (see above).
      throw coerceError(err, `loading snapshot range ${range.rangeIndex} of ${state.sourceTable}`);
    } finally {
      this.#endWrite(state, id);
    }
    state.rowsSinceMerge += count;
    await channel.drop(this.#signal).catch((err: unknown) => {
      this.#o.log.debug({ err: coerceError(err).message }, 'could not drop a snapshot channel; it expires on its own');
    });
    return count;
  }

  async completeSnapshot(table: TableSchema): Promise<void> {
    const state = this.#known(table);
    await this.#retrying(`completing the snapshot of ${state.sourceTable}`, () =>
      this.#o.sql.query(
        `UPDATE ${bookkeeping(this.#names, '_FLOE_TABLES')} SET "SNAPSHOT_COMPLETE" = TRUE, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`,
        { signal: this.#signal, requestId: randomUUID() },
      ),
    );
    state.snapshotComplete = true;
  }

  async resetTable(table: TableSchema, snapshotLsn: bigint): Promise<void> {
    const state = this.#known(table);
    const seq = state.nextSeq++;
    const tablesTable = bookkeeping(this.#names, '_FLOE_TABLES');
    const statements = [
      'BEGIN',
      // History stays; a truncate marker just below the new snapshot's rows says where it restarts.
      `INSERT INTO ${state.journal} ("_FLOE_SEQ", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_OP") VALUES (${seq}, ${snapshotLsn}, -2, 't')`,
      // Keyed: rows loaded before are never merged (the new snapshot replaces them). Keyless: the
      // target is history and gets the marker too.
      ...(table.hasKey ? [`DELETE FROM ${state.target}`] : []),
      `UPDATE ${tablesTable} SET "SNAPSHOT_COMPLETE" = FALSE, ${table.hasKey ? `"MERGED_SEQ" = ${seq}, ` : ''}"KEY_COLUMNS" = ${literal(keyColumnsOf(table))}, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`,
      `DELETE FROM ${bookkeeping(this.#names, '_FLOE_RANGES')} WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`,
      'COMMIT',
    ];
    const requestId = randomUUID();
    await this.#retrying(`resetting ${state.sourceTable}`, () => this.#o.sql.multi(statements, { signal: this.#signal, requestId }));
    if (table.hasKey) state.mergedSeq = seq;
    state.snapshotComplete = false;
  }

  writeChanges(changes: readonly Change[]): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (changes.length === 0) return Promise.resolve();
    // Encoded at once, and `changes` not held past this call: the rows wait for their request as bytes.
    return this.#send(this.#encodeBatch(changes));
  }

  /** Per channel, the lines and tokens of the changes it does not hold yet, in position order. */
  #encodeBatch(changes: readonly Change[]): EncodedBatch {
    const perChannel = new Map<ChannelState, { state: TableState; tokens: string[]; encoder: NdjsonEncoder }>();
    const writes: { state: TableState; id: number }[] = [];
    const started = new Set<TableState>();
    for (const ch of changes) {
      const state = this.#known(ch.table);
      const hash = keyHash(ch);
      const channel = state.channels[hash % state.channels.length]!;
      const token = positionToken(ch.position);
      if (holds(channel.channel.committedOffsetToken, token) || state.earlier.some((set) => holds(set.tokens[hash % set.count], token))) {
        continue; // replayed: a channel it was sent to holds it
      }
      if (!started.has(state)) {
        started.add(state);
        writes.push({ state, id: this.#beginWrite(state) });
      }
      let out = perChannel.get(channel);
      if (!out) {
        out = { state, tokens: [], encoder: this.#encoder() };
        perChannel.set(channel, out);
      }
      out.encoder.writeChange(ch, { seq: state.nextSeq++ });
      out.tokens.push(token);
      state.rowsSinceMerge++;
    }
    const channels = [...perChannel].map(([channel, out]) => ({
      channel,
      state: out.state,
      lines: NdjsonLines.take(out.encoder),
      tokens: out.tokens,
    }));
    return { batch: { last: changes[changes.length - 1]!.position, committed: false }, writes, channels };
  }

  async #send({ batch, writes, channels }: EncodedBatch): Promise<void> {
    try {
      this.#pending.push(batch);
      await Promise.all(channels.map((c) => this.#append(c.state, c.channel, c.lines, c.tokens)));
    } catch (err) {
      for (const w of writes) this.#endWrite(w.state, w.id);
      throw err;
    }
    // Seqs of the batch stay "in flight" (outside merge windows) until its rows are committed.
    const commits = channels.map((c) => this.#committed(c.state, c.channel, c.tokens));
    void Promise.all(commits).then(
      () => {
        for (const w of writes) this.#endWrite(w.state, w.id);
        batch.committed = true;
        this.#reportDurable();
      },
      (err: unknown) => {
        for (const w of writes) this.#endWrite(w.state, w.id);
        this.#failAsync(err);
      },
    );
  }

  async durableThrough(): Promise<Position | undefined> {
    return this.#durable;
  }

  watchDurable(watcher: DurableWatcher): void {
    this.#watcher = watcher;
    if (this.#failure) watcher.failed(this.#failure);
  }

  /** Reports the committed prefix of the accepted batches. */
  #reportDurable(): void {
    let advanced = false;
    while (this.#pending[0]?.committed) {
      this.#durable = this.#pending.shift()!.last;
      advanced = true;
    }
    if (advanced) this.#watcher?.durable(this.#durable!);
  }

  #failAsync(err: unknown): void {
    if (this.#signal.aborted) return;
    this.#failure ??= coerceError(err);
    this.#watcher?.failed(this.#failure);
  }

  /**
   * Merges tables whose snapshot is complete and whose merge is due (`merge_interval`, or `merge_rows`
   * rows waiting). Without a signal (the runtime's final merge at drain) every table is due. A
   * transient failure leaves the table for the next call; a deterministic one rejects.
   */
  async merge(signal?: AbortSignal): Promise<MergeResult> {
    const force = signal === undefined;
    const interval = this.#o.mergeIntervalMs ?? 30_000;
    let tables = 0;
    let journalRows = 0;
    for (const state of this.#tables.values()) {
      if (signal?.aborted || this.#signal.aborted) break;
      if (!state.snapshotComplete) continue;
      const due =
        force ||
        Date.now() - state.lastMergeAt >= interval ||
        (this.#o.mergeRows !== undefined && state.rowsSinceMerge >= this.#o.mergeRows);
      if (!due) continue;
      try {
        const n = await this.#mergeTable(state);
        if (n > 0) {
          tables++;
          journalRows += n;
        }
      } catch (err) {
        const e = coerceError(err);
        if (e.retry !== 'timed')
          throw new FloeError(e.kind, `merging ${state.sourceTable}: ${e.message}`, { cause: err, retry: e.retry, hint: e.hint });
        state.mergedSeqStale = true;
        this.#metrics?.failures.inc();
        this.#o.log.warn({ table: state.sourceTable, err: e.message }, 'merge failed; retried at the next merge');
      }
    }
    if (this.#o.journalRetentionMs !== undefined && Date.now() - this.#lastRetention >= Math.min(interval * 10, 3_600_000)) {
      this.#lastRetention = Date.now();
      await this.#applyRetention().catch((err: unknown) =>
        this.#o.log.warn({ err: coerceError(err).message }, 'journal retention failed; retried later'),
      );
    }
    return { tables, journalRows };
  }

  /**
   * Larger requests: a channel takes at most 10 appends per second (snowflake-api.md), so a batch of
   * 4 MiB spread over a table's channels keeps each request big enough for tens of MB/s.
   */
  readonly preferredBatchBytes = 4 << 20;
  /**
   * merge() is cheap when nothing is due (no SQL): asked four times a second, `merge_interval` and
   * `merge_rows` decide, so a due merge starts within 250 ms instead of waiting for the next whole second.
   */
  readonly preferredMergeIntervalMs = 250;

  health(): DestinationHealth {
    return { breaker: this.#o.breaker?.state ?? 'closed' };
  }

  async close(): Promise<void> {
    this.#closing.abort();
    this.#tables.clear();
    for (const r of this.#o.resources ?? []) await r.close().catch(() => undefined);
  }

  /** Runs one statement through the SQL API: for tests, `--verify` and `floe doctor`. */
  async query(sql: string): Promise<(string | null)[][]> {
    return (await this.#o.sql.query(sql, { signal: this.#signal })).rows.map((r) => [...r]);
  }

  // ---- internals -------------------------------------------------------------------------

  get #signal(): AbortSignal {
    return this.#closing.signal;
  }

  #newState(
    schema: TableSchema,
    sourceTable: string,
    tableName: string,
    journal: string,
    target: string,
    pipe: string,
    journalColumns: JournalColumn[],
    targetTypes: string[],
    snapshotComplete: boolean,
    mergedSeq: bigint,
  ): TableState {
    const state: TableState = {
      schema,
      sourceTable,
      tableName,
      journal,
      target,
      pipe,
      legacyPipe: undefined,
      journalColumns,
      targetTypes,
      snapshotComplete,
      mergedSeq,
      mergedSeqStale: false,
      nextSeq: 0n,
      inflight: new Map(),
      channels: [],
      earlier: [],
      lastMergeAt: 0,
      rowsSinceMerge: 0,
      mergeChain: Promise.resolve(),
    };
    this.#tables.set(sourceTable, state);
    return state;
  }

  /** Columns of the DDL and merge: journal columns, typed by the current schema or, for dropped ones, as kept. */
  #sfColumns(table: TableSchema, journalColumns: readonly JournalColumn[], targetTypes: readonly string[]): SfColumn[] {
    const byName = new Map(table.columns.map((c) => [c.name, c] as const));
    return journalColumns.map((jc, i) => {
      const col = byName.get(jc.pg);
      const stored = targetTypes[i] ?? 'VARCHAR';
      const cast = (x: string) => {
        if (!col) return stored === 'VARCHAR' ? x : `${x}::${stored}`;
        const c = snowflakeCast(col.type, x);
        // A column whose type change Snowflake refused keeps its old type: convert into that.
        return stored === col.type.snowflake ? c : stored === 'VARCHAR' ? x : `${c}::${stored}`;
      };
      return { name: jc.sf, type: stored, cast, isKey: col?.isKey ?? false };
    });
  }

  /** New columns are added before the first change that uses them; dropped ones stay; changed types are tried. */
  async #evolve(state: TableState, table: TableSchema): Promise<void> {
    const known = new Set(state.journalColumns.map((c) => c.pg));
    const added = table.columns.filter((c) => !known.has(c.name));
    const retyped = table.columns.filter((c) => {
      const i = state.journalColumns.findIndex((jc) => jc.pg === c.name);
      return i >= 0 && state.targetTypes[i] !== c.type.snowflake;
    });
    if (added.length === 0 && retyped.length === 0) return;
    for (const c of added) {
      const sf = snowflakeName(c.name);
      if (state.journalColumns.some((jc) => jc.sf === sf)) {
        throw new FloeError('schema', `column ${c.name} of ${state.sourceTable} maps to the existing Snowflake column ${sf}`, {
          hint: 'rename the column at the source',
          retry: 'manual',
        });
      }
    }
    // Journal rows written under the old types are merged with them first.
    if (retyped.length > 0 && table.hasKey && state.snapshotComplete) await this.#mergeTable(state);
    const journalColumns = state.journalColumns.slice();
    const targetTypes = state.targetTypes.slice();
    for (const c of retyped) {
      const i = journalColumns.findIndex((jc) => jc.pg === c.name);
      const sf = journalColumns[i]!.sf;
      try {
        await this.#o.sql.query(retypeColumn(state.target, sf, c.type.snowflake), { signal: this.#signal, requestId: randomUUID() });
        targetTypes[i] = c.type.snowflake;
      } catch (err) {
        const e = coerceError(err);
        if (e.retry === 'timed') throw e;
        // Snowflake changes few types in place (wider VARCHAR, more NUMBER precision): the column keeps
        // its type and new values are converted into it; the journal keeps the exact text.
        this.#o.log.warn(
          { table: state.sourceTable, column: c.name, to: c.type.snowflake },
          'Snowflake cannot change the column type; it keeps its type',
        );
      }
    }
    const statements: string[] = [];
    for (const c of added) {
      const sf = snowflakeName(c.name);
      statements.push(addColumn(state.journal, sf, 'VARCHAR'), addColumn(state.target, sf, c.type.snowflake));
      journalColumns.push({ pg: c.name, sf });
      targetTypes.push(c.type.snowflake);
    }
    statements.push(
      `UPDATE ${bookkeeping(this.#names, '_FLOE_TABLES')} SET "JOURNAL_COLUMNS" = ${literal(JSON.stringify(journalColumns.map((c) => c.pg)))}, "TARGET_TYPES" = ${literal(JSON.stringify(targetTypes))}, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`,
    );
    const requestId = randomUUID();
    await this.#retrying(`adding columns to ${state.sourceTable}`, () =>
      this.#o.sql.multi(statements, { signal: this.#signal, requestId }),
    );
    state.journalColumns = journalColumns;
    state.targetTypes = targetTypes;
  }

  async #openStreamChannels(state: TableState): Promise<void> {
    const open = async (set: ChannelSet, i: number, pipeName = state.pipe) => {
      const pipe = { database: this.#names.database, schema: this.#names.landing, pipe: pipeName };
      const name = this.#channelName(channelSuffix(set, i));
      const channel = await this.#retrying(`opening channel ${name}`, () => this.#o.streaming.openChannel(pipe, name, this.#signal));
      rejectEarlierRowErrors(channel, state.sourceTable);
      return { channel, name };
    };
    const current = this.#channelSets.find((s) => s.count === this.#channelsPerTable) ?? { count: this.#channelsPerTable, first: true };
    const channels = await Promise.all(Array.from({ length: current.count }, (_, i) => open(current, i)));
    // Earlier sets are only read: their committed tokens say what a replay must not send again.
    state.earlier = [];
    const read = async (set: ChannelSet, pipe?: string) => {
      const tokens = await Promise.all(
        Array.from({ length: set.count }, async (_, i) => (await open(set, i, pipe)).channel.committedOffsetToken),
      );
      if (tokens.some((t) => t !== null)) state.earlier.push({ count: set.count, tokens });
    };
    for (const set of this.#channelSets.filter((s) => s !== current)) await read(set);
    if (state.legacyPipe) for (const set of this.#channelSets) await this.#readLegacy(state, () => read(set, state.legacyPipe));
    // After the (re)open nothing an earlier process left pending can still commit, so the journal's
    // highest seq is final and load order continues above it.
    const [max] = (
      await this.#retrying(`reading the journal of ${state.sourceTable}`, () =>
        this.#o.sql.query(`SELECT MAX("_FLOE_SEQ") FROM ${state.journal}`, { signal: this.#signal }),
      )
    ).rows;
    const highest = BigInt(max?.[0] ?? '0');
    state.nextSeq = (highest > state.mergedSeq ? highest : state.mergedSeq) + 1n;
    state.channels = channels;
  }

  /**
   * Reads channels of the default pipe a table used before its named pipe. A default pipe that does not
   * resolve (the mixed-case name it had never reached a pipe) never held anything.
   */
  async #readLegacy(state: TableState, read: () => Promise<void>): Promise<void> {
    try {
      await read();
    } catch (err) {
      const e = coerceError(err);
      if (!/ERR_(PIPE|TABLE)_DOES_NOT_EXIST/.test(e.message)) throw e;
      this.#o.log.info(
        { table: state.sourceTable, pipe: state.legacyPipe },
        'the default pipe used before the named pipe does not resolve: nothing to check replays against',
      );
    }
  }

  /**
   * Appends lines to a channel until it accepted them. Transient failures are waited out (honouring the
   * breaker's retry-after): the channel keeps what it did not get accepted and sends it on `flush`.
   */
  async #append(state: TableState, cs: ChannelState, lines: NdjsonLines, tokens: string[]): Promise<void> {
    if (lines.count === 0) return;
    let next = 0;
    let appending = false;
    await this.#retrying(`writing to channel ${cs.name}`, async () => {
      if (appending) await cs.channel.flush(this.#signal);
      while (next < lines.count) {
        const end = Math.min(lines.count, next + APPEND_LINES);
        const [l, t] = [lines.slice(next, end), tokens.slice(next, end)];
        // Once handed over, a slice is the channel's to deliver (flush), never appended again.
        next = end;
        appending = true;
        await cs.channel.append(l, t, this.#signal);
        appending = false;
      }
    }).catch((err: unknown) => {
      throw refused(state, tokens, err);
    });
  }

  /** Waits until the channel committed the last of `tokens` (transient failures are waited out). */
  async #committed(state: TableState, cs: ChannelState, tokens: string[]): Promise<void> {
    if (tokens.length === 0) return;
    const last = tokens[tokens.length - 1]!;
    await this.#retrying(`waiting for channel ${cs.name} to commit`, () => cs.channel.waitCommitted(last, this.#signal)).catch(
      (err: unknown) => {
        throw refused(state, tokens, err);
      },
    );
  }

  /**
   * Runs `fn` until it succeeds or fails for good; waits between attempts, at most 30 s. `stop` (the run's
   * stop request, during setup) ends the retries too: nothing is written yet that a drain would need.
   */
  async #retrying<T>(what: string, fn: () => Promise<T>, stop?: AbortSignal): Promise<T> {
    const signal = stop ? AbortSignal.any([this.#signal, stop]) : this.#signal;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const e = coerceError(err);
        // A rewound channel kept no copy of what it lost: only a replay from the slot brings it back.
        if (e.retry !== 'timed' || signal.aborted || err instanceof ChannelRewoundError) throw e;
        const hinted = (err as { retryAfterMs?: unknown }).retryAfterMs;
        const backoff = Math.min(30_000, 200 * 2 ** Math.min(attempt, 8)) * (0.5 + Math.random() / 2);
        const delay = typeof hinted === 'number' && hinted > 0 ? Math.min(hinted, 60_000) : backoff;
        this.#o.log.warn({ what, err: e.message, attempt, delayMs: Math.round(delay) }, 'Snowflake call failed; retrying');
        this.#o.onRetry?.(what, e, delay);
        await sleep(delay, undefined, { signal }).catch(() => undefined);
        if (signal.aborted) throw e;
      }
    }
  }

  #mergeTable(state: TableState): Promise<number> {
    const run = state.mergeChain.then(() => this.#mergeWindow(state));
    state.mergeChain = run.catch(() => undefined);
    return run;
  }

  async #mergeWindow(state: TableState): Promise<number> {
    const sql = this.#o.sql;
    const tablesTable = bookkeeping(this.#names, '_FLOE_TABLES');
    if (state.mergedSeqStale) {
      const [row] = (
        await sql.query(`SELECT MAX("MERGED_SEQ") FROM ${tablesTable} WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)}`, {
          signal: this.#signal,
        })
      ).rows;
      state.mergedSeq = BigInt(row?.[0] ?? '0');
      state.mergedSeqStale = false;
    }
    const fromSeq = state.mergedSeq;
    const toSeq = this.#committedSeq(state);
    if (toSeq <= fromSeq) return 0;
    const started = performance.now();
    // merge_interval is start to start: a merge as long as the interval is followed by the next at once.
    const startedAt = Date.now();
    const [stats, trunc] = await sql.multi(windowStatsStatements(state.journal, fromSeq, toSeq), { signal: this.#signal });
    const journalRows = Number(stats?.rows[0]?.[0] ?? 0);
    const unchanged = Number(stats?.rows[0]?.[1] ?? 0);
    const deletes = Number(stats?.rows[0]?.[2] ?? 0);
    const t = trunc?.rows[0];
    const truncate = t ? { lsn: BigInt(t[0]!), ordinal: Number(t[1]) } : undefined;
    const columns = this.#sfColumns(state.schema, state.journalColumns, state.targetTypes);
    const seeds = unchanged > 0 && state.schema.hasKey ? await this.#resolveMoves(state, columns, fromSeq, toSeq, truncate) : [];
    const spec = {
      sourceTable: state.sourceTable,
      journal: state.journal,
      target: state.target,
      tables: tablesTable,
      merges: bookkeeping(this.#names, '_FLOE_MERGES'),
      columns,
      deleteMode: this.#deleteMode,
      fromSeq,
      toSeq,
      journalRows,
      truncate,
      seeds,
      perColumn: unchanged > 0 || (this.#deleteMode === 'soft' && deletes > 0),
    };
    const statements = state.schema.hasKey ? mergeStatements(spec) : appendHistoryStatements(spec);
    await sql.multi(statements, { signal: this.#signal, requestId: randomUUID() });
    state.mergedSeq = toSeq;
    state.lastMergeAt = startedAt;
    state.rowsSinceMerge = 0;
    this.#metrics?.merges.inc();
    this.#metrics?.rows.inc(journalRows);
    this.#metrics?.seconds.observe((performance.now() - started) / 1000);
    this.#o.log.debug({ table: state.sourceTable, journalRows, fromSeq: String(fromSeq), toSeq: String(toSeq) }, 'merged');
    return journalRows;
  }

  /**
   * Key moves (a primary-key change: delete of the old key, insert of the new key at the next ordinal)
   * whose insert lacks unchanged TOAST values. Resolved move by move in position order, like the DuckDB
   * destination: the old key's latest image in the window fills the journal row of the insert (so a
   * chain of moves follows), else a seed statement copies the old key's target values (run in the
   * merge transaction, before the MERGE). Rare, so a few statements per move are fine.
   */
  async #resolveMoves(
    state: TableState,
    columns: readonly SfColumn[],
    fromSeq: bigint,
    toSeq: bigint,
    truncate: Position | undefined,
  ): Promise<string[]> {
    const sql = this.#o.sql;
    const keys = columns.filter((c) => c.isKey);
    const keyList = keys.map((k) => quoteSf(k.name)).join(', ');
    const win = `"_FLOE_SEQ" > ${fromSeq} AND "_FLOE_SEQ" <= ${toSeq}`;
    const q = (text: string) => sql.query(text, { signal: this.#signal });
    const moves = (
      await q(
        `SELECT "_FLOE_SEQ", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_UNCHANGED", ${keyList} FROM ${state.journal} WHERE ${win} AND "_FLOE_OP" = 'i' AND "_FLOE_UNCHANGED" IS NOT NULL ORDER BY "_FLOE_LSN", "_FLOE_ORDINAL"`,
      )
    ).rows;
    const seeds: string[] = [];
    for (const [seq, lsnText, ordText, unchangedJson, ...newKey] of moves) {
      const position: Position = { lsn: BigInt(lsnText!), ordinal: Number(ordText) - 1 };
      if (truncate && (position.lsn < truncate.lsn || (position.lsn === truncate.lsn && position.ordinal < truncate.ordinal))) continue;
      const [oldKey] = (
        await q(
          `SELECT ${keyList} FROM ${state.journal} WHERE ${win} AND "_FLOE_LSN" = ${position.lsn} AND "_FLOE_ORDINAL" = ${position.ordinal} AND "_FLOE_OP" = 'd' LIMIT 1`,
        )
      ).rows;
      if (!oldKey) continue;
      const unchanged = JSON.parse(unchangedJson ?? '[]') as string[];
      const oldMatch = keys.map((k, i) =>
        oldKey[i] === null ? `${quoteSf(k.name)} IS NULL` : `${quoteSf(k.name)} = ${literal(oldKey[i]!)}`,
      );
      let before = `("_FLOE_LSN" < ${position.lsn} OR ("_FLOE_LSN" = ${position.lsn} AND "_FLOE_ORDINAL" < ${position.ordinal}))`;
      // Images of the old key's current life only: one from before its last delete is another row's.
      const [lastDelete] = (
        await q(
          `SELECT "_FLOE_LSN", "_FLOE_ORDINAL" FROM ${state.journal} WHERE ${win} AND ${oldMatch.join(' AND ')} AND ${before} AND "_FLOE_OP" = 'd' ORDER BY "_FLOE_LSN" DESC, "_FLOE_ORDINAL" DESC LIMIT 1`,
        )
      ).rows;
      if (lastDelete) {
        const [lsn, ordinal] = [BigInt(lastDelete[0]!), Number(lastDelete[1])];
        before += ` AND ("_FLOE_LSN" > ${lsn} OR ("_FLOE_LSN" = ${lsn} AND "_FLOE_ORDINAL" > ${ordinal}))`;
      }
      const fills: string[] = [];
      const remaining: string[] = [];
      for (const c of unchanged) {
        const [image] = (
          await q(
            `SELECT ${quoteSf(c)} FROM ${state.journal} WHERE ${win} AND ${oldMatch.join(' AND ')} AND ${before} AND "_FLOE_OP" <> 'd' AND NOT ARRAY_CONTAINS(${literal(c)}::VARIANT, COALESCE("_FLOE_UNCHANGED", ARRAY_CONSTRUCT())) ORDER BY "_FLOE_LSN" DESC, "_FLOE_ORDINAL" DESC LIMIT 1`,
          )
        ).rows;
        if (image) fills.push(`${quoteSf(c)} = ${image[0] === null ? 'NULL' : literal(image[0]!)}`);
        else remaining.push(c);
      }
      if (fills.length > 0) {
        const rest = remaining.length > 0 ? `ARRAY_CONSTRUCT(${remaining.map(literal).join(', ')})` : 'NULL';
        await sql.query(`UPDATE ${state.journal} SET ${fills.join(', ')}, "_FLOE_UNCHANGED" = ${rest} WHERE "_FLOE_SEQ" = ${seq}`, {
          signal: this.#signal,
          requestId: randomUUID(),
        });
      }
      if (remaining.length > 0) {
        seeds.push(moveSeedStatement({ target: state.target, columns, oldKey, newKey, unchanged: remaining, position }));
      }
    }
    return seeds;
  }

  /** Deletes journal rows merged more than `journal_retention` ago. */
  async #applyRetention(): Promise<void> {
    const cutoff = new Date(Date.now() - this.#o.journalRetentionMs!).toISOString();
    const merges = bookkeeping(this.#names, '_FLOE_MERGES');
    for (const state of this.#tables.values()) {
      const [row] = (
        await this.#o.sql.query(
          `SELECT MAX("MERGED_SEQ") FROM ${merges} WHERE "SOURCE_TABLE" = ${literal(state.sourceTable)} AND "MERGED_AT" < TO_TIMESTAMP_TZ(${literal(cutoff)})`,
          { signal: this.#signal },
        )
      ).rows;
      if (!row?.[0]) continue;
      const seq = BigInt(row[0]);
      await this.#o.sql.multi(retentionStatements(state.sourceTable, state.journal, merges, seq), {
        signal: this.#signal,
        requestId: randomUUID(),
      });
    }
  }

  /** The highest seq such that every row at or below it is committed. */
  #committedSeq(state: TableState): bigint {
    let low = state.nextSeq;
    for (const start of state.inflight.values()) if (start < low) low = start;
    return low - 1n;
  }

  #beginWrite(state: TableState): number {
    const id = ++this.#inflightIds;
    state.inflight.set(id, state.nextSeq);
    return id;
  }

  #endWrite(state: TableState, id: number): void {
    state.inflight.delete(id);
  }

  #channelName(suffix: string): string {
    const pipeline = this.#pipeline.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
    const incarnation = this.#incarnation
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(0, 8)
      .toUpperCase();
    return `FLOE_${pipeline}_${incarnation}_${suffix}`;
  }

  #encoder(): NdjsonEncoder {
    return new NdjsonEncoder(64 * 1024, { keyName: snowflakeName, upperCaseMeta: true });
  }

  #known(table: TableSchema): TableState {
    const state = this.#tables.get(qualifiedName(table));
    if (!state) throw new FloeError('internal', `table ${qualifiedName(table)} was not prepared in the destination`);
    return state;
  }
}

/** The merge key's columns as recorded in `_FLOE_TABLES` (a JSON list; empty for keyless history). */
const keyColumnsOf = (t: TableSchema): string => JSON.stringify(t.hasKey ? t.columns.filter((c) => c.isKey).map((c) => c.name) : []);

/** Invariant 7: an error that says which table and which positions were refused. */
function refused(state: TableState, tokens: readonly string[], err: unknown): FloeError {
  const e = coerceError(err);
  return new FloeError(
    e.kind,
    `Snowflake did not take changes of ${state.sourceTable} at positions ${tokenText(tokens[0]!)} to ${tokenText(tokens[tokens.length - 1]!)}: ${e.message}`,
    { cause: err, retry: e.retry, hint: e.hint },
  );
}

/** An offset token as a position `X/Y#ordinal`, for messages. */
function tokenText(token: string): string {
  const [lsn, ordinal] = token.split('-');
  return `${formatLsn(BigInt(lsn ?? '0'))}#${Number(ordinal ?? 0)}`;
}

/** Hash of a change's key (FNV-1a of the key's text): its channel is `keyHash % count`, the same for every change of a key. */
function keyHash(change: Change): number {
  const cols = change.table.columns;
  let h = 0x811c9dc5;
  const mix = (s: string) => {
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0;
    h = Math.imul(h, 0x01000193);
  };
  const keyed = change.table.hasKey;
  for (let i = 0; i < cols.length; i++) {
    if (keyed && !cols[i]!.isKey) continue;
    const cell = change.cells[i];
    mix(typeof cell === 'string' ? cell : '\u0000');
  }
  return h >>> 0;
}

class MergeMetrics {
  readonly merges: Counter;
  readonly rows: Counter;
  readonly failures: Counter;
  readonly seconds: Histogram;

  constructor(registry: Registry) {
    const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
    this.merges = get(
      'floe_snowflake_merges_total',
      () => new Counter({ name: 'floe_snowflake_merges_total', help: 'MERGE transactions committed', registers: [registry] }),
    );
    this.rows = get(
      'floe_snowflake_merge_journal_rows_total',
      () =>
        new Counter({ name: 'floe_snowflake_merge_journal_rows_total', help: 'journal rows merged into targets', registers: [registry] }),
    );
    this.failures = get(
      'floe_snowflake_merge_failures_total',
      () =>
        new Counter({
          name: 'floe_snowflake_merge_failures_total',
          help: 'merges that failed transiently (retried at the next merge)',
          registers: [registry],
        }),
    );
    this.seconds = get(
      'floe_snowflake_merge_seconds',
      () =>
        new Histogram({
          name: 'floe_snowflake_merge_seconds',
          help: 'duration of one table merge (window statistics + MERGE transaction)',
          buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
          registers: [registry],
        }),
    );
  }
}
