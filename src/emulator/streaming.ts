/**
 * Snowpipe Streaming named channels (reference §1.6–§1.9, §1.14, §1.16).
 *
 * Channel state machine: open bumps the client sequencer (so every earlier
 * continuation token is stale) and discards uncommitted batches; append
 * checks the token, enqueues the batch and returns the next token; a commit
 * loop moves each channel's batches into the table, in order, after the
 * commit delay. Rows that do not fit their column are not committed and are
 * counted in the channel status; the rest of the batch commits. Offset tokens
 * are stored, never used to deduplicate (§1.14).
 */
import { SqlEngine, duckTable, resolveTable, type NamedPipe, type TableColumn } from './sql/engine.js';
import type { ObjectName } from './sql/translate.js';
import type { DuckDBConnection, DuckDBPreparedStatement } from '@duckdb/node-api';
import { coerceValue, columnExpr } from './rows.js';
import { quoteId } from './sql/tokenizer.js';
import { checkBody, joinBodies, parseNdjson, parsedBody, plainGroup, plainLoad, type CheckedBody, type PlainHint } from './ndjson-body.js';

/** A streaming API error: HTTP status plus Snowflake's code. */
export class StreamingFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'StreamingFailure';
  }
}

export interface ChannelStatus {
  database_name: string;
  schema_name: string;
  pipe_name: string;
  channel_name: string;
  channel_status_code: string;
  last_committed_offset_token: string | null;
  created_on_ms: number;
  rows_inserted: number;
  rows_parsed: number;
  rows_error_count: number;
  rows_errors: number;
  last_error_offset_upper_bound: string | null;
  last_error_message: string | null;
  last_error_timestamp: number | null;
  snowflake_avg_processing_latency_ms: number;
}

interface Batch {
  readonly body: CheckedBody;
  readonly startOffset: string | null;
  readonly endOffset: string | null;
  readonly dueAt: number;
  readonly acceptedAt: number;
}

interface Channel {
  readonly key: string;
  readonly database: string;
  readonly schema: string;
  readonly pipe: string;
  readonly name: string;
  readonly createdOnMs: number;
  clientSeq: number;
  rowSeq: number;
  committedOffset: string | null;
  rowsInserted: number;
  rowsParsed: number;
  rowsErrorCount: number;
  lastError: { offsetUpperBound: string | null; message: string; timestampMs: number } | null;
  pending: Batch[];
  statusCode: string;
  latencyTotalMs: number;
  batchesCommitted: number;
  /** Token bucket for the per-channel request rate. */
  bucket: { tokens: number; at: number };
  /** Batches committed by SQL alone (ndjson-body.ts) since the emulator started: for tests and benchmarks. */
  sqlBatches: number;
  /** Statements that loaded them: fewer than sqlBatches when due batches were committed together. */
  sqlCommits: number;
  /** Batches found plain at append, for the load of the channel's last SQL commit (`plainHint`). */
  plainAtAppend: number;
  plainHint: PlainHint | undefined;
}

/** What survives a restart: everything but the in-flight batches and the rate bucket. */
type PersistedChannel = Omit<
  Channel,
  'key' | 'pending' | 'bucket' | 'rowSeq' | 'sqlBatches' | 'sqlCommits' | 'plainAtAppend' | 'plainHint'
>;

/**
 * At most this many bytes of NDJSON go into one commit statement. Batches committed together cost less
 * per row (one statement, one state row, one transaction); the bound keeps DuckDB's working set small.
 */
const GROUP_COMMIT_BYTES = 4 << 20;

/** A channel's batches due at `now`, in order, within GROUP_COMMIT_BYTES (the first always). */
function dueBatches(ch: Channel, now: number): Batch[] {
  const due: Batch[] = [];
  let bytes = 0;
  for (const b of ch.pending) {
    if (b.dueAt > now || (due.length > 0 && bytes + b.body.bytes.length > GROUP_COMMIT_BYTES)) break;
    due.push(b);
    bytes += b.body.bytes.length;
  }
  return due;
}

const sumRows = (batches: readonly Batch[]) => batches.reduce((n, b) => n + b.body.count, 0);

function persisted(ch: Channel): PersistedChannel {
  return {
    database: ch.database,
    schema: ch.schema,
    pipe: ch.pipe,
    name: ch.name,
    createdOnMs: ch.createdOnMs,
    clientSeq: ch.clientSeq,
    committedOffset: ch.committedOffset,
    rowsInserted: ch.rowsInserted,
    rowsParsed: ch.rowsParsed,
    rowsErrorCount: ch.rowsErrorCount,
    lastError: ch.lastError,
    statusCode: ch.statusCode,
    latencyTotalMs: ch.latencyTotalMs,
    batchesCommitted: ch.batchesCommitted,
  };
}

const CHANNELS = '_emulator.channels';

interface PipeTarget {
  readonly database: string;
  readonly schema: string;
  readonly pipe: string;
  readonly table: ObjectName;
  readonly named: NamedPipe | undefined;
}

export interface StreamingOptions {
  commitDelayMs: number;
  /** Extra random delay per batch, 0..commitJitterMs. */
  commitJitterMs: number;
  channelRps: number;
  /** Status code for a stale continuation token (undocumented; default 400). */
  staleTokenStatus: number;
  /** Check and load plain bodies by SQL (ndjson-body.ts); false: always row by row in JavaScript. */
  plainLoads: boolean;
  /** Takes back the body of a committed batch, which nothing reads any more (body-pool.ts). */
  releaseBody?: (bytes: Buffer) => void;
}

export interface StreamingState {
  channels: {
    database: string;
    schema: string;
    pipe: string;
    channel: string;
    clientSequencer: number;
    rowSequencer: number;
    committedOffsetToken: string | null;
    pendingBatches: number;
    pendingRows: number;
    rowsInserted: number;
    rowsErrorCount: number;
    statusCode: string;
    batchesCommitted: number;
    sqlBatches: number;
    sqlCommits: number;
    plainAtAppend: number;
  }[];
}

const up = (s: string) => s.toUpperCase();

const channelMissing = (name: string) =>
  new StreamingFailure(404, 'ERR_CHANNEL_DOES_NOT_EXIST_OR_IS_NOT_AUTHORIZED', `Channel ${name} does not exist or is not authorized.`);

/** Rows of a batch that set the same columns (the others take their DEFAULT), as normalized texts. */
interface Group {
  readonly present: TableColumn[];
  readonly rows: (string | null)[][];
}

export class StreamingService {
  readonly #channels = new Map<string, Channel>();
  #timer: NodeJS.Timeout | undefined;
  #committing = false;
  /** The batch each channel is committing right now (a reopen waits for it). */
  readonly #committingBatch = new Map<string, Promise<number>>();
  /** Where a group's bodies are joined (ndjson-body.ts, joinBodies); one commit at a time uses it. */
  #joinScratch: Buffer | undefined;
  #closed = false;
  /** While true no batch commits (fault: stalled commits). */
  stalled = false;
  /** Pipe targets and their columns, valid while the engine's catalog version is unchanged. */
  readonly #targets = new Map<string, { version: number; target: PipeTarget; columns: TableColumn[] }>();
  #commitConn: DuckDBConnection | undefined;
  /** Staging tables that exist on each commit connection (temp tables are per connection). */
  readonly #stages = new WeakMap<DuckDBConnection, Set<number>>();
  /**
   * The plain loads prepared on each commit connection, by SQL text (a table change makes a new text):
   * planning one costs more than running it on a 2,500-row batch.
   */
  readonly #prepared = new WeakMap<DuckDBConnection, Map<string, DuckDBPreparedStatement>>();

  constructor(
    readonly engine: SqlEngine,
    readonly options: StreamingOptions,
  ) {}

  channelKey(database: string, schema: string, pipe: string, channel: string): string {
    return [database, schema, pipe, channel].map(up).join('/');
  }

  /** Resolves a pipe and its table's columns through a cache invalidated by DDL. */
  async resolve(database: string, schema: string, pipe: string): Promise<{ target: PipeTarget; columns: TableColumn[]; version: number }> {
    const key = [database, schema, pipe].map(up).join('/');
    const version = this.engine.catalogVersion;
    const hit = this.#targets.get(key);
    if (hit && hit.version === version) return hit;
    const target = await this.resolvePipe(database, schema, pipe);
    const conn = await this.engine.connect();
    try {
      const columns = (await this.engine.tableColumns(conn, target.table)) ?? [];
      const entry = { version, target, columns };
      this.#targets.set(key, entry);
      return entry;
    } finally {
      conn.closeSync();
    }
  }

  /**
   * Path segments are documented as case-insensitive (reference §1.6): a segment names the object its
   * upper-cased spelling names, exactly. So the default pipe of a table whose name is not upper case
   * (`"public_Orders"`), or a named pipe created with a quoted lower-case name, is not reachable here —
   * stricter than an account may be, so a client that depends on it fails here first.
   */
  async resolvePipe(database: string, schema: string, pipe: string): Promise<PipeTarget> {
    const conn = await this.engine.connect();
    try {
      const missing = () =>
        new StreamingFailure(
          404,
          'ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED',
          `Pipe ${database}.${schema}.${pipe} does not exist or not authorized.`,
        );
      const [db, sc, name] = [database, schema, pipe].map(up) as [string, string, string];
      const exact = (o: { database: string; schema: string; name: string }, n: string) =>
        o.database === db && o.schema === sc && o.name === n;
      const m = /^(.*)-STREAMING$/.exec(name);
      if (m) {
        const table = await resolveTable(conn, db, sc, m[1]!);
        if (!table || !exact(table, m[1]!)) throw missing();
        return { database: table.database, schema: table.schema, pipe: `${table.name}-STREAMING`, table, named: undefined };
      }
      const named = await this.engine.namedPipe(conn, db, sc, name);
      if (!named || !exact(named, name)) throw missing();
      const table = await resolveTable(conn, named.database, named.schema, named.table);
      if (!table)
        throw new StreamingFailure(
          404,
          'ERR_TABLE_DOES_NOT_EXIST_NOT_AUTHORIZED',
          `Table ${named.table} of pipe ${named.name} does not exist.`,
        );
      return { database: named.database, schema: named.schema, pipe: named.name, table, named };
    } finally {
      conn.closeSync();
    }
  }

  token(ch: Channel): string {
    return Buffer.from(JSON.stringify({ c: ch.key, cs: ch.clientSeq, rs: ch.rowSeq, t: ch.createdOnMs })).toString('base64url');
  }

  status(ch: Channel): ChannelStatus {
    return {
      database_name: ch.database,
      schema_name: ch.schema,
      pipe_name: ch.pipe,
      channel_name: ch.name,
      channel_status_code: ch.statusCode,
      last_committed_offset_token: ch.committedOffset,
      created_on_ms: ch.createdOnMs,
      rows_inserted: ch.rowsInserted,
      rows_parsed: ch.rowsParsed,
      rows_error_count: ch.rowsErrorCount,
      rows_errors: ch.rowsErrorCount,
      last_error_offset_upper_bound: ch.lastError?.offsetUpperBound ?? null,
      last_error_message: ch.lastError?.message ?? null,
      last_error_timestamp: ch.lastError?.timestampMs ?? null,
      snowflake_avg_processing_latency_ms: ch.batchesCommitted === 0 ? 0 : Math.round(ch.latencyTotalMs / ch.batchesCommitted),
    };
  }

  async open(
    database: string,
    schema: string,
    pipe: string,
    channel: string,
    body: { offset_token?: unknown; fail_on_uncommitted_rows?: unknown },
  ): Promise<{ next_continuation_token: string; channel_status: ChannelStatus }> {
    const { target } = await this.resolve(database, schema, pipe);
    if (!target.named) {
      // Opening a channel on the default pipe instantiates it (§1.12).
      const k = [target.database, target.schema, target.pipe].map(up).join('.');
      if (!this.engine.instantiatedDefaultPipes.has(k)) {
        this.engine.instantiatedDefaultPipes.set(k, {
          database: target.database,
          schema: target.schema,
          name: target.pipe,
          table: target.table.name,
          createdOnMs: Date.now(),
        });
      }
    }
    const key = this.channelKey(target.database, target.schema, target.pipe, channel);
    // A batch being committed right now either lands before the reopen answers or not at all: the
    // committed offset token the reopen reports must cover everything that will ever commit from the
    // old session, or the client replays rows that commit anyway (duplicates in the table).
    await this.#committingBatch.get(key)?.catch(() => undefined);
    let ch = this.#channels.get(key);
    if (ch) {
      if (ch.pending.length > 0 && body.fail_on_uncommitted_rows === true) {
        throw new StreamingFailure(409, 'ERR_CHANNEL_HAS_UNCOMMITTED_DATA', `Channel ${channel} has uncommitted data.`);
      }
      ch.pending = [];
      ch.clientSeq++;
      ch.statusCode = 'SUCCESS';
    } else {
      ch = {
        key,
        database: target.database,
        schema: target.schema,
        pipe: target.pipe,
        name: channel,
        createdOnMs: Date.now(),
        clientSeq: 1,
        rowSeq: 0,
        committedOffset: null,
        rowsInserted: 0,
        rowsParsed: 0,
        rowsErrorCount: 0,
        lastError: null,
        pending: [],
        statusCode: 'SUCCESS',
        latencyTotalMs: 0,
        batchesCommitted: 0,
        bucket: { tokens: this.options.channelRps, at: Date.now() },
        sqlBatches: 0,
        sqlCommits: 0,
        plainAtAppend: 0,
        plainHint: undefined,
      };
      this.#channels.set(key, ch);
    }
    if (typeof body.offset_token === 'string') ch.committedOffset = body.offset_token;
    await this.#save(ch);
    return { next_continuation_token: this.token(ch), channel_status: this.status(ch) };
  }

  /** Finds the channel named by a path; 404 if it does not exist. */
  lookup(database: string, schema: string, pipe: string, channel: string): Channel {
    const direct = this.#channels.get(this.channelKey(database, schema, pipe, channel));
    if (direct) return direct;
    throw channelMissing(channel);
  }

  /** Per-channel token bucket; false when the request must be throttled. */
  admit(ch: Channel): boolean {
    const rps = this.options.channelRps;
    if (rps <= 0) return true;
    const now = Date.now();
    ch.bucket.tokens = Math.min(rps, ch.bucket.tokens + ((now - ch.bucket.at) / 1000) * rps);
    ch.bucket.at = now;
    if (ch.bucket.tokens < 1) return false;
    ch.bucket.tokens -= 1;
    return true;
  }

  /** Validates the continuation token and rate; call before reading the body's rows. */
  checkAppend(database: string, schema: string, pipe: string, channel: string, continuationToken: string | undefined): Channel {
    const ch = this.lookup(database, schema, pipe, channel);
    if (!continuationToken) {
      throw new StreamingFailure(400, 'ERR_CONTINUATION_TOKEN_REQUIRED', 'The continuationToken query parameter is required.');
    }
    let tok: { c?: unknown; cs?: unknown; rs?: unknown; t?: unknown };
    try {
      tok = JSON.parse(Buffer.from(continuationToken, 'base64url').toString('utf8')) as typeof tok;
    } catch {
      throw new StreamingFailure(400, 'ERR_CHANNEL_HAS_INVALID_CLIENT_SEQUENCER', 'The continuation token is not valid.');
    }
    if (tok.c !== ch.key || tok.t !== ch.createdOnMs) {
      throw new StreamingFailure(400, 'ERR_CHANNEL_HAS_INVALID_CLIENT_SEQUENCER', 'The continuation token belongs to another channel.');
    }
    this.#checkSequencers(ch, tok.cs, tok.rs);
    if (!this.admit(ch)) throw new StreamingFailure(429, 'ERR_TOO_MANY_REQUESTS', `Too many requests on channel ${ch.name}.`);
    return ch;
  }

  /**
   * Checks an append's body (after checkAppend, which the caller may have awaited the body after): an append
   * racing this one, a reopen or a drop in between makes this one fail as its token would have at
   * checkAppend, and a token is never spent twice.
   */
  checkBody(ch: Channel, clientSeq: number, rowSeq: number, bytes: Buffer): CheckedBody {
    const hint = ch.plainHint?.version === this.engine.catalogVersion ? ch.plainHint : undefined;
    const body = this.options.plainLoads ? checkBody(bytes, hint) : parsedBody(bytes);
    if (this.#channels.get(ch.key) !== ch) throw channelMissing(ch.name);
    this.#checkSequencers(ch, clientSeq, rowSeq);
    if (body.plainUnder) ch.plainAtAppend++;
    return body;
  }

  /** An append token's sequencers against the channel's, and the channel's health (checkAppend, checkBody). */
  #checkSequencers(ch: Channel, clientSeq: unknown, rowSeq: unknown): void {
    if (typeof clientSeq !== 'number' || clientSeq < ch.clientSeq) {
      throw new StreamingFailure(
        this.options.staleTokenStatus,
        'STALE_CONTINUATION_TOKEN_SEQUENCER',
        'Channel sequencer in the continuation token is stale. Please reopen the channel',
      );
    }
    if (clientSeq !== ch.clientSeq || rowSeq !== ch.rowSeq) {
      throw new StreamingFailure(
        400,
        'ERR_CHANNEL_HAS_INVALID_ROW_SEQUENCER',
        'Row sequencer in the continuation token is invalid. Please reopen the channel',
      );
    }
    if (ch.statusCode !== 'SUCCESS') throw new StreamingFailure(400, ch.statusCode, `Channel ${ch.name} must be reopened.`);
  }

  /** Enqueues a checked append. Returns the next continuation token. */
  append(ch: Channel, body: CheckedBody, startOffset: string | null, endOffset: string | null): string {
    ch.rowSeq++;
    const now = Date.now();
    const jitter = this.options.commitJitterMs > 0 ? Math.random() * this.options.commitJitterMs : 0;
    // Never due before the batch ahead of it: a channel commits in append order, so its committed offset
    // token only ever covers rows that are in the table.
    const dueAt = Math.max(now + this.options.commitDelayMs + jitter, ch.pending.at(-1)?.dueAt ?? 0);
    ch.pending.push({ body, startOffset, endOffset, dueAt, acceptedAt: now });
    this.schedule();
    return this.token(ch);
  }

  async drop(database: string, schema: string, pipe: string, channel: string, failOnUncommitted: boolean): Promise<void> {
    const ch = this.lookup(database, schema, pipe, channel);
    if (failOnUncommitted && ch.pending.length > 0) {
      throw new StreamingFailure(409, 'ERR_CHANNEL_HAS_UNCOMMITTED_DATA', `Channel ${channel} has uncommitted data.`);
    }
    this.#channels.delete(ch.key);
    await this.#save(undefined, ch.key);
  }

  async bulkStatus(database: string, schema: string, pipe: string, names: string[]): Promise<Record<string, ChannelStatus>> {
    const { target } = await this.resolve(database, schema, pipe);
    const out: Record<string, ChannelStatus> = {};
    for (const name of names) {
      const ch = this.#channels.get(this.channelKey(target.database, target.schema, target.pipe, name));
      if (ch) out[name] = this.status(ch);
    }
    return out;
  }

  /** Fault: make a channel unusable until reopened. */
  invalidate(channelName: string | undefined, code = 'ERR_CHANNEL_MUST_BE_REOPENED'): number {
    let n = 0;
    for (const ch of this.#channels.values()) {
      if (channelName === undefined || ch.name === channelName) {
        ch.statusCode = code;
        ch.pending = [];
        n++;
      }
    }
    return n;
  }

  state(): StreamingState {
    return {
      channels: [...this.#channels.values()].map((ch) => ({
        database: ch.database,
        schema: ch.schema,
        pipe: ch.pipe,
        channel: ch.name,
        clientSequencer: ch.clientSeq,
        rowSequencer: ch.rowSeq,
        committedOffsetToken: ch.committedOffset,
        pendingBatches: ch.pending.length,
        pendingRows: ch.pending.reduce((n, b) => n + b.body.count, 0),
        rowsInserted: ch.rowsInserted,
        rowsErrorCount: ch.rowsErrorCount,
        statusCode: ch.statusCode,
        batchesCommitted: ch.batchesCommitted,
        sqlBatches: ch.sqlBatches,
        sqlCommits: ch.sqlCommits,
        plainAtAppend: ch.plainAtAppend,
      })),
    };
  }

  // --- commit loop ------------------------------------------------------------

  /** Arms the timer for the earliest due batch. */
  schedule(): void {
    if (this.#closed || this.#committing || this.stalled) return;
    let earliest = Infinity;
    for (const ch of this.#channels.values()) if (ch.pending[0]) earliest = Math.min(earliest, ch.pending[0].dueAt);
    if (earliest === Infinity) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.commitDue(), Math.max(0, earliest - Date.now()));
  }

  async commitDue(): Promise<void> {
    this.#timer = undefined;
    if (this.#committing || this.#closed || this.stalled) return;
    this.#committing = true;
    try {
      for (;;) {
        const now = Date.now();
        const due = [...this.#channels.values()].filter((ch) => ch.pending[0] && ch.pending[0].dueAt <= now);
        if (due.length === 0 || this.stalled || this.#closed) break;
        for (const ch of due) {
          const batches = dueBatches(ch, now);
          if (batches.length === 0) continue;
          const committing = this.engine.writeLock.run(() => this.commitBatches(ch, batches));
          this.#committingBatch.set(ch.key, committing);
          let committed = 0;
          try {
            committed = await committing;
          } catch (err) {
            // An unexpected engine failure must not spin the loop: the channel fails and must be reopened.
            ch.statusCode = 'ERR_CHANNEL_MUST_BE_REOPENED';
            ch.pending = [];
            ch.lastError = {
              offsetUpperBound: batches[0]!.endOffset,
              message: `Commit failed: ${(err as Error).message.split('\n')[0]}`,
              timestampMs: Date.now(),
            };
            this.#commitConn?.closeSync();
            this.#commitConn = undefined;
          }
          // A reopen or drop while the batches were being written has already discarded the queue.
          for (const batch of batches.slice(0, committed)) {
            if (ch.pending[0] === batch) ch.pending.shift();
            this.options.releaseBody?.(batch.body.bytes);
          }
          this.#committingBatch.delete(ch.key);
        }
      }
    } finally {
      this.#committing = false;
      this.schedule();
    }
  }

  /** Commits every pending batch now, ignoring the delay (tests, `POST /_emulator/flush`). */
  async commitAll(): Promise<void> {
    if (this.stalled) return;
    for (const ch of this.#channels.values()) {
      for (const b of ch.pending) (b as { dueAt: number }).dueAt = 0;
    }
    while (this.#committing) await new Promise((r) => setTimeout(r, 5));
    await this.commitDue();
  }

  /**
   * Commits the first of `batches` (a channel's due batches, in order), or more of them in one transaction
   * when they load by SQL alike; returns how many it committed.
   */
  async commitBatches(ch: Channel, batches: readonly Batch[]): Promise<number> {
    this.#commitConn ??= await this.engine.connect();
    const conn = this.#commitConn;
    let target: PipeTarget;
    let columns: TableColumn[];
    let version: number;
    try {
      ({ target, columns, version } = await this.resolve(ch.database, ch.schema, ch.pipe));
    } catch (err) {
      ch.statusCode = err instanceof StreamingFailure ? err.code : 'ERR_CHANNEL_MUST_BE_REOPENED';
      ch.pending = [];
      return 0;
    }
    const binaryFormat = target.named ? 'HEX' : 'BASE64';
    const table = duckTable(target.table);
    const plain = plainGroup(batches, version, (keys) => plainLoad(table, columns, target.named, binaryFormat, keys));
    if (plain) ch.plainHint = { version, load: plain.load };
    // A group whose load fails (a cast DuckDB refuses) is tried again as its first half, and so on: the
    // batch holding the row is found in a few statements, and only it takes the JavaScript path.
    for (let n = plain?.batches.length ?? 0; n > 0; n = n === 1 ? 0 : Math.floor(n / 2)) {
      if (await this.#commitPlain(conn, ch, plain!.batches.slice(0, n), plain!.load.sql)) return n;
    }
    await this.#commitRows(conn, ch, batches[0]!, { table, columns, named: target.named, binaryFormat });
    return 1;
  }

  /** Commits a batch through the JavaScript path, the reference: row by row coercion, errors per row. */
  async #commitRows(
    conn: DuckDBConnection,
    ch: Channel,
    batch: Batch,
    {
      table,
      columns,
      named,
      binaryFormat,
    }: { table: string; columns: TableColumn[]; named: NamedPipe | undefined; binaryFormat: 'BASE64' | 'HEX' },
  ): Promise<void> {
    const errors: string[] = [];
    // Rows grouped by which columns they leave to the column DEFAULT (usually one group: none).
    const groups = new Map<string, Group>();
    for (const row of batch.body.rows ?? parseNdjson(batch.body.bytes.toString('utf8'))) {
      const m = mapRow(row, columns, named, binaryFormat);
      if ('error' in m) {
        errors.push(m.error);
        continue;
      }
      const key = m.defaulted.join(',');
      let g = groups.get(key);
      if (!g) {
        g = { present: columns.filter((_, k) => !m.defaulted.includes(k)), rows: [] };
        groups.set(key, g);
      }
      g.rows.push(m.texts);
    }
    const rowsSql = (present: TableColumn[]) =>
      `SELECT ${present.map((c, k) => columnExpr(c.type, `__r[${k + 1}]`, binaryFormat)).join(', ')} ` +
      `FROM (SELECT unnest(from_json($1, '[["VARCHAR"]]')) AS __r)`;
    const insertAll = async (list: Group[]) => {
      for (const g of list) {
        if (g.rows.length === 0) continue;
        if (g.present.length === 0) {
          for (let k = 0; k < g.rows.length; k++) await conn.run(`INSERT INTO ${table} DEFAULT VALUES`);
          continue;
        }
        // The texts go through DuckDB's appender into a VARCHAR staging table and are cast by one set-based
        // INSERT ... SELECT: an order of magnitude faster than shipping them as one JSON parameter, and the
        // casts (columnExpr) stay exactly those of the row-by-row path below.
        const stage = await this.#stage(conn, g.present.length);
        const appender = await conn.createAppender(stage, 'main', 'temp');
        try {
          for (const r of g.rows) {
            for (const v of r) {
              if (v === null) appender.appendNull();
              else appender.appendVarchar(v);
            }
            appender.endRow();
          }
          appender.flushSync();
        } finally {
          appender.closeSync();
        }
        const casts = g.present.map((c, k) => columnExpr(c.type, `c${k}`, binaryFormat)).join(', ');
        await conn.run(
          `INSERT INTO ${table} (${g.present.map((c) => quoteId(c.name)).join(', ')}) SELECT ${casts} FROM temp.main.${stage}`,
        );
        await conn.run(`DELETE FROM temp.main.${stage}`);
      }
    };
    const commit = (list: Group[], rowErrors: string[]) =>
      this.#commitTx(
        conn,
        ch,
        [batch],
        list.reduce((n, g) => n + g.rows.length, 0),
        rowErrors,
        () => insertAll(list),
      );
    const groupList = [...groups.values()];
    try {
      await commit(groupList, errors);
    } catch {
      // Some row DuckDB itself refuses (e.g. a value the checks let through): find it by converting row by
      // row outside the transaction, then commit the rest.
      const kept = [];
      for (const g of groupList) {
        const rows: (string | null)[][] = [];
        for (const r of g.rows) {
          try {
            if (g.present.length > 0) await conn.run(rowsSql(g.present), [JSON.stringify([r])]);
            rows.push(r);
          } catch (err) {
            errors.push(`Row could not be loaded: ${(err as Error).message.split('\n')[0]!.replace(/'[^']*'|"[^"]*"/g, "'…'")}`);
          }
        }
        kept.push({ present: g.present, rows });
      }
      await commit(kept, errors);
    }
  }

  /**
   * Loads batches by SQL (ndjson-body.ts), in one statement and one transaction; false, with nothing
   * written, when a row needs the JavaScript path.
   */
  async #commitPlain(conn: DuckDBConnection, ch: Channel, batches: readonly Batch[], sql: string): Promise<boolean> {
    try {
      const statement = await this.#prepare(conn, sql);
      const bodies = batches.map((b) => b.body);
      await this.#commitTx(conn, ch, batches, sumRows(batches), [], async () => {
        // bindBlob hands DuckDB the bytes directly; bind() with a DuckDBBlobValue took ~4 ms per MB.
        this.#joinScratch ??= Buffer.allocUnsafeSlow(GROUP_COMMIT_BYTES + 4096);
        statement.bindBlob(1, joinBodies(bodies, this.#joinScratch));
        await statement.run();
      });
      ch.sqlBatches += batches.length;
      ch.sqlCommits++;
      return true;
    } catch {
      // A row that is not plain (or anything else DuckDB refused): the JavaScript path decides, row by row.
      return false;
    }
  }

  async #prepare(conn: DuckDBConnection, sql: string): Promise<DuckDBPreparedStatement> {
    let cache = this.#prepared.get(conn);
    if (!cache) this.#prepared.set(conn, (cache = new Map()));
    let statement = cache.get(sql);
    if (!statement) {
      // Tables come and go in tests; keep the cache from growing with them.
      if (cache.size >= 64) {
        for (const old of cache.values()) old.destroySync();
        cache.clear();
      }
      statement = await conn.prepare(sql);
      cache.set(sql, statement);
    }
    return statement;
  }

  /**
   * The rows and the channel's new committed state land in one transaction: after a crash or restart the
   * committed offset token never disagrees with the table.
   */
  async #commitTx(
    conn: DuckDBConnection,
    ch: Channel,
    batches: readonly Batch[],
    inserted: number,
    rowErrors: string[],
    insert: () => Promise<void>,
  ): Promise<void> {
    const now = Date.now();
    const committedOffset = batches.reduce((offset, b) => b.endOffset ?? offset, ch.committedOffset);
    const next: PersistedChannel = {
      ...persisted(ch),
      rowsParsed: ch.rowsParsed + sumRows(batches),
      rowsInserted: ch.rowsInserted + inserted,
      rowsErrorCount: ch.rowsErrorCount + rowErrors.length,
      lastError:
        rowErrors.length > 0
          ? {
              offsetUpperBound: committedOffset,
              message: rowErrors[rowErrors.length - 1]!,
              timestampMs: now,
            }
          : ch.lastError,
      committedOffset,
      latencyTotalMs: batches.reduce((ms, b) => ms + (now - b.acceptedAt), ch.latencyTotalMs),
      batchesCommitted: ch.batchesCommitted + batches.length,
    };
    await conn.run('BEGIN TRANSACTION');
    try {
      await insert();
      await this.#persist(conn, next);
      await conn.run('COMMIT');
    } catch (err) {
      await conn.run('ROLLBACK').catch(() => undefined);
      // A staging table created inside the rolled-back transaction is gone with it.
      this.#stages.delete(conn);
      throw err;
    }
    Object.assign(ch, next);
  }

  /** A connection-local VARCHAR staging table with `width` columns c0..c(width-1), created on first use. */
  async #stage(conn: DuckDBConnection, width: number): Promise<string> {
    const name = `__floe_stage_${width}`;
    let made = this.#stages.get(conn);
    if (!made) this.#stages.set(conn, (made = new Set()));
    if (!made.has(width)) {
      const cols = Array.from({ length: width }, (_, k) => `c${k} VARCHAR`).join(', ');
      await conn.run(`CREATE TEMP TABLE IF NOT EXISTS ${name} (${cols})`);
      made.add(width);
    }
    return name;
  }

  async #persist(conn: DuckDBConnection, state: PersistedChannel): Promise<void> {
    const key = this.channelKey(state.database, state.schema, state.pipe, state.name);
    await conn.run(`DELETE FROM ${CHANNELS} WHERE key = $1`, [key]);
    await conn.run(`INSERT INTO ${CHANNELS} VALUES ($1, $2)`, [key, JSON.stringify(state)]);
  }

  /** Saves a channel's state outside a batch commit (open, drop), serialised with the other writers. */
  async #save(ch: Channel | undefined, dropKey?: string): Promise<void> {
    await this.engine.writeLock.run(async () => {
      this.#commitConn ??= await this.engine.connect();
      if (ch) await this.#persist(this.#commitConn, persisted(ch));
      else await this.#commitConn.run(`DELETE FROM ${CHANNELS} WHERE key = $1`, [dropKey!]);
    });
  }

  /** Loads the channels saved in the data file. Their client sequencer is bumped: tokens from before a restart are stale. */
  async load(): Promise<void> {
    const conn = await this.engine.connect();
    try {
      await conn.run(`CREATE TABLE IF NOT EXISTS ${CHANNELS} (key VARCHAR, state JSON)`);
      const r = await conn.runAndReadAll(`SELECT state FROM ${CHANNELS}`);
      for (const [state] of r.getRowsJS()) {
        const p = JSON.parse(String(state)) as PersistedChannel;
        const key = this.channelKey(p.database, p.schema, p.pipe, p.name);
        this.#channels.set(key, {
          ...p,
          key,
          clientSeq: p.clientSeq + 1,
          rowSeq: 0,
          pending: [],
          bucket: { tokens: this.options.channelRps, at: Date.now() },
          sqlBatches: 0,
          sqlCommits: 0,
          plainAtAppend: 0,
          plainHint: undefined,
        });
        if (/-STREAMING$/i.test(p.pipe)) {
          const k = [p.database, p.schema, p.pipe].map(up).join('.');
          this.engine.instantiatedDefaultPipes.set(k, {
            database: p.database,
            schema: p.schema,
            name: p.pipe,
            table: p.pipe.replace(/-STREAMING$/i, ''),
            createdOnMs: p.createdOnMs,
          });
        }
      }
    } finally {
      conn.closeSync();
    }
  }

  /** Stops the commit loop (pending batches are dropped, like a server restart) once a running commit is done. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    while (this.#committing) await new Promise((r) => setTimeout(r, 5));
    this.#commitConn?.closeSync();
    this.#commitConn = undefined;
  }
}

function getPath(row: unknown, path: readonly (string | number)[]): unknown {
  let v: unknown = row;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

/** Maps one NDJSON object to normalized texts for every column (indices of defaulted columns apart), or the first error. */
function mapRow(
  row: unknown,
  columns: TableColumn[],
  named: NamedPipe | undefined,
  binaryFormat: 'BASE64' | 'HEX',
): { texts: (string | null)[]; defaulted: number[] } | { error: string } {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) return { error: 'Row is not a JSON object' };
  const obj = row as Record<string, unknown>;
  let byColumn: Map<string, unknown> | undefined;
  if (named?.columns) {
    byColumn = new Map();
    const targets = named.targetColumns ?? columns.slice(0, named.columns.length).map((c) => c.name);
    for (const [k, pc] of named.columns.entries()) byColumn.set(targets[k]!, getPath(obj, pc.path));
  }
  const sensitive = named?.matchCase === 'sensitive';
  let keys: string[] | undefined;
  const texts: (string | null)[] = [];
  const defaulted: number[] = [];
  for (let k = 0; k < columns.length; k++) {
    const c = columns[k]!;
    let present = false;
    let value: unknown;
    if (byColumn) {
      present = byColumn.has(c.name);
      value = byColumn.get(c.name);
    } else if (Object.hasOwn(obj, c.name)) {
      present = true;
      value = obj[c.name];
    } else if (!sensitive) {
      // No exact key: a case-insensitive match (the default pipe loads MATCH_BY_COLUMN_NAME).
      keys ??= Object.keys(obj);
      const key = keys.find((x) => x.toUpperCase() === c.name.toUpperCase());
      if (key !== undefined) {
        present = true;
        value = obj[key];
      }
    }
    if (!present && c.hasDefault) {
      defaulted.push(k);
      continue;
    }
    const r = coerceValue(value, c.name, c.type, c.nullable, binaryFormat);
    if (!r.ok) return { error: r.message };
    texts.push(r.text);
  }
  return { texts, defaulted };
}
