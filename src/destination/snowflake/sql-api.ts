/**
 * Snowflake SQL API v2 client (snowflake-api.md §3).
 *
 * - One `requestId` (UUID) per logical statement; every resubmission of it carries `retry=true`, so a
 *   statement that already succeeded is not executed again (§3.4). The request layer resubmits on 429,
 *   5xx and lost connections.
 * - 202 means "still running" (Snowflake answers 202 after 45 s even without `async`): the client polls
 *   `GET /api/v2/statements/{handle}` with a growing interval until 200, 422 or 408, and cancels the
 *   statement when the caller's signal aborts.
 * - 408 means the statement's own `timeout` expired and Snowflake cancelled it: reported as a timed
 *   error (raise the timeout). A 408 without a handle (a proxy's request timeout) is resubmitted.
 * - 422 is a statement failure: `SqlStatementError` (retry `none`) with Snowflake's code, SQLSTATE and
 *   message, classified (compilation, duplicate row 100090, missing object, ...). The SQL text is never
 *   put in an error or a log: floe inlines values into multi-statement requests.
 * - Results: `resultSetMetaData.rowType` + `data` (every cell a string or null), plus the partitions
 *   listed in `partitionInfo`, fetched with `?partition=n` (gzip bodies, `data` only).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { FloeError } from '../../errors.js';
import type { Logger } from '../../telemetry/logger.js';
import type { KeyPairAuth } from './auth.js';
import { keyPairTokens, SnowflakeHttp, type RetryPolicy, type SnowflakeBreaker, type SnowflakeResponse, type TokenSource } from './http.js';
import type { SnowflakeMetrics } from './metrics.js';

export interface SqlResult {
  readonly columns: readonly { name: string; type: string }[];
  readonly rows: readonly (string | null)[][];
  readonly rowsAffected?: number;
  /** Snowflake's statement handle (query id), for support cases and QUERY_HISTORY. */
  readonly statementHandle?: string;
}

/** What kind of statement failure Snowflake reported, so callers can branch without parsing messages. */
export type SqlErrorCategory =
  | 'compilation' // syntax error, invalid identifier (SQLSTATE class 42, except missing objects)
  | 'missing-object' // 002003: object does not exist or not authorized
  | 'duplicate-row' // 100090: nondeterministic MERGE (two source rows for one target row)
  | 'data' // SQLSTATE class 22: a value could not be converted
  | 'multi-statement' // 100132: one statement of a multi-statement request failed
  | 'timeout' // 408: the statement timeout expired and Snowflake cancelled it
  | 'cancelled' // 000604
  | 'other';

export class SqlStatementError extends FloeError {
  readonly code: string | undefined;
  readonly sqlState: string | undefined;
  readonly statementHandle: string | undefined;
  readonly category: SqlErrorCategory;
  constructor(
    message: string,
    o: { code?: string; sqlState?: string; statementHandle?: string; category: SqlErrorCategory; retry: 'timed' | 'none'; hint?: string },
  ) {
    super('destination', message, { retry: o.retry, hint: o.hint });
    this.code = o.code;
    this.sqlState = o.sqlState;
    this.statementHandle = o.statementHandle;
    this.category = o.category;
  }
}

export function classifySqlError(code: string | undefined, sqlState: string | undefined): SqlErrorCategory {
  if (code === '100090') return 'duplicate-row';
  if (code === '002003' || sqlState === '42S02' || code === '000709') return 'missing-object';
  if (code === '100132' || sqlState === 'P0000') return 'multi-statement';
  if (code === '000604' || sqlState === '57014') return 'cancelled';
  if (sqlState?.startsWith('42') || code === '001003' || code === '000904') return 'compilation';
  if (sqlState?.startsWith('22')) return 'data';
  return 'other';
}

const CATEGORY_TEXT: Record<SqlErrorCategory, string> = {
  compilation: 'SQL compilation error',
  'missing-object': 'object does not exist or is not authorized',
  'duplicate-row': 'duplicate row detected during DML action (a MERGE matched one target row with several source rows)',
  data: 'data error',
  'multi-statement': 'a statement of a multi-statement request failed',
  timeout: 'statement timed out',
  cancelled: 'statement cancelled',
  other: 'statement failed',
};

const CATEGORY_HINT: Partial<Record<SqlErrorCategory, string>> = {
  'missing-object': 'check the database, schema and table names and the grants of the role',
  'duplicate-row': 'the MERGE source must hold one row per key (QUALIFY ROW_NUMBER() ... = 1); this is a floe bug, please report it',
  timeout: 'raise the statement timeout or the warehouse size',
};

interface StatementBody {
  readonly resultSetMetaData?: {
    readonly numRows?: number;
    readonly rowType?: readonly { readonly name?: string; readonly type?: string }[];
    readonly partitionInfo?: readonly unknown[];
  };
  readonly data?: readonly (readonly unknown[])[];
  readonly code?: string;
  readonly message?: string;
  readonly sqlState?: string;
  readonly statementHandle?: string;
  readonly statementHandles?: readonly string[];
  readonly statementStatusUrl?: string;
  readonly stats?: Readonly<Record<string, unknown>>;
}

export interface SqlApiClientOptions {
  /** `https://<account>.snowflakecomputing.com`, or a `base_url` override such as the emulator's. */
  readonly baseUrl: string;
  readonly auth: KeyPairAuth;
  readonly warehouse?: string;
  readonly role?: string;
  readonly database?: string;
  readonly schema?: string;
  /** Session parameters sent with every statement (e.g. QUERY_TAG, TIMEZONE). */
  readonly parameters?: Readonly<Record<string, string>>;
  readonly breaker?: SnowflakeBreaker;
  readonly log: Logger;
  readonly metrics?: SnowflakeMetrics;
  readonly retry?: Partial<RetryPolicy>;
  /** First and longest interval between status polls of a running statement (Default: 200 ms, 5 s). */
  readonly pollIntervalMs?: { readonly min: number; readonly max: number };
  /** HTTP timeout of one request; Snowflake holds a submit up to 45 s before answering 202 (Default: 90 s). */
  readonly requestTimeoutMs?: number;
}

export interface QueryOptions {
  readonly signal?: AbortSignal;
  /** Idempotency key of this logical statement (Default: a fresh UUID). Reuse it to resubmit safely. */
  readonly requestId?: string;
  /** Statement timeout in seconds (`timeout` field; Default: the account's STATEMENT_TIMEOUT_IN_SECONDS). */
  readonly timeoutSeconds?: number;
  /** Extra session parameters for this request. */
  readonly parameters?: Readonly<Record<string, string>>;
}

export class SqlApiClient {
  readonly #base: URL;
  readonly #o: SqlApiClientOptions;
  readonly #http: SnowflakeHttp;
  readonly #tokens: TokenSource;
  readonly #log: Logger;

  constructor(o: SqlApiClientOptions) {
    this.#base = new URL(o.baseUrl);
    this.#o = o;
    this.#log = o.log;
    this.#http = new SnowflakeHttp({
      log: o.log,
      breaker: o.breaker,
      metrics: o.metrics,
      retry: o.retry,
      timeoutMs: o.requestTimeoutMs ?? 90_000,
    });
    this.#tokens = keyPairTokens(o.auth);
  }

  get breaker(): SnowflakeBreaker {
    return this.#http.breaker;
  }

  /** Runs one statement and returns its result. */
  async query(sql: string, o: QueryOptions = {}): Promise<SqlResult> {
    const body = await this.#submit(sql, undefined, o);
    return this.#decode(body, o.signal);
  }

  /** Several statements in one request (MULTI_STATEMENT_COUNT); the caller wraps BEGIN/COMMIT for atomicity. */
  async multi(sqls: readonly string[], o: QueryOptions = {}): Promise<SqlResult[]> {
    if (sqls.length === 0) return [];
    const statements = sqls.map((s) => s.trim().replace(/;+\s*$/, ''));
    const body = await this.#submit(statements.join(';\n'), statements.length, o);
    const handles = body.statementHandles;
    if (!handles || handles.length === 0) {
      // One statement (or a server that answers a multi-statement request like a single one).
      if (statements.length === 1) return [await this.#decode(body, o.signal)];
      throw new FloeError('destination', 'Snowflake answered a multi-statement request without statementHandles', { retry: 'none' });
    }
    const results: SqlResult[] = [];
    for (const handle of handles) {
      const child = await this.#fetchStatement(handle, o.signal);
      results.push(await this.#decode(child, o.signal));
    }
    return results;
  }

  async close(): Promise<void> {
    await this.#http.close();
  }

  #url(path: string, query: Record<string, string> = {}): URL {
    const url = new URL(path, this.#base);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    return url;
  }

  /** Submits, then follows 202/408 until the statement finished; returns the final 200 body. */
  async #submit(statement: string, count: number | undefined, o: QueryOptions): Promise<StatementBody> {
    const requestId = o.requestId ?? randomUUID();
    const parameters: Record<string, string> = { ...this.#o.parameters, ...o.parameters };
    if (count !== undefined) parameters.MULTI_STATEMENT_COUNT = String(count);
    const payload = JSON.stringify({
      statement,
      ...(o.timeoutSeconds !== undefined ? { timeout: o.timeoutSeconds } : {}),
      ...(this.#o.database ? { database: this.#o.database } : {}),
      ...(this.#o.schema ? { schema: this.#o.schema } : {}),
      ...(this.#o.warehouse ? { warehouse: this.#o.warehouse } : {}),
      ...(this.#o.role ? { role: this.#o.role } : {}),
      ...(Object.keys(parameters).length > 0 ? { parameters } : {}),
    });
    let retry = false;
    for (let resubmits = 0; ; resubmits++) {
      const url = this.#url('/api/v2/statements', retry ? { requestId, retry: 'true' } : { requestId });
      const res = await this.#http.send({
        route: 'statement_submit',
        method: 'POST',
        url,
        auth: this.#tokens,
        statementTimeout: true,
        headers: { 'content-type': 'application/json' },
        body: payload,
        signal: o.signal,
        retryUrl: (u) => {
          u.searchParams.set('retry', 'true');
          return u;
        },
      });
      // Any later submission of this requestId is a retry, whatever happened to this one.
      retry = true;
      if (res.status === 408 && !SqlApiClient.#body(res).statementHandle && resubmits + 1 < this.#http.retryPolicy.maxAttempts) {
        this.#log.warn({ requestId }, 'snowflake statement submit timed out without a handle, resubmitting');
        continue;
      }
      return this.#finish(res, o.signal);
    }
  }

  /** Turns a submit or poll answer into the final 200 body, polling while Snowflake says 202. */
  async #finish(first: SnowflakeResponse, signal: AbortSignal | undefined): Promise<StatementBody> {
    let res = first;
    let interval = this.#o.pollIntervalMs?.min ?? 200;
    const maxInterval = this.#o.pollIntervalMs?.max ?? 5000;
    for (;;) {
      const body = SqlApiClient.#body(res);
      if (res.status === 200) return body;
      if (res.status === 202 || (res.status === 408 && body.statementHandle && res === first)) {
        // 408 on submit can race the statement finishing: look once at the handle before giving up.
        const handle = body.statementHandle;
        if (!handle) throw new FloeError('destination', 'Snowflake answered 202 without a statement handle', { retry: 'timed' });
        try {
          if (res.status === 202) {
            await sleep(interval, undefined, { signal });
            interval = Math.min(maxInterval, interval * 1.5);
          }
          res = await this.#http.send({
            route: 'statement_poll',
            method: 'GET',
            url: this.#url(`/api/v2/statements/${encodeURIComponent(handle)}`),
            auth: this.#tokens,
            statementTimeout: true,
            signal,
          });
        } catch (err) {
          if (!signal?.aborted) throw err;
          // The caller gave up: do not leave the statement running on the warehouse.
          await this.#cancel(handle);
          throw new FloeError('destination', `Snowflake statement ${handle} was cancelled`, { retry: 'timed', cause: signal.reason });
        }
        if (res.status === 408) throw this.#failure(res);
        continue;
      }
      throw this.#failure(res);
    }
  }

  async #fetchStatement(handle: string, signal: AbortSignal | undefined): Promise<StatementBody> {
    const res = await this.#http.send({
      route: 'statement_poll',
      method: 'GET',
      url: this.#url(`/api/v2/statements/${encodeURIComponent(handle)}`),
      auth: this.#tokens,
      statementTimeout: true,
      signal,
    });
    return this.#finish(res, signal);
  }

  async #cancel(handle: string): Promise<void> {
    try {
      await this.#http.send({
        route: 'statement_cancel',
        method: 'POST',
        url: this.#url(`/api/v2/statements/${encodeURIComponent(handle)}/cancel`),
        auth: this.#tokens,
        statementTimeout: true,
        headers: { 'content-type': 'application/json' },
        body: '{}',
        timeoutMs: 10_000,
      });
    } catch (err) {
      this.#log.warn({ handle, err: (err as Error).message }, 'snowflake statement cancel failed');
    }
  }

  #failure(res: SnowflakeResponse): FloeError {
    const body = SqlApiClient.#body(res);
    if (res.status === 422 || res.status === 408) {
      const category = res.status === 408 ? 'timeout' : classifySqlError(body.code, body.sqlState);
      const detail = [body.code, body.sqlState ? `(${body.sqlState})` : undefined].filter(Boolean).join(' ');
      const message = `Snowflake ${CATEGORY_TEXT[category]}${detail ? ` ${detail}` : ''}: ${(body.message ?? 'no message').slice(0, 600)}${
        body.statementHandle ? ` [statement ${body.statementHandle}]` : ''
      }`;
      return new SqlStatementError(message, {
        code: body.code,
        sqlState: body.sqlState,
        statementHandle: body.statementHandle,
        category,
        retry: category === 'timeout' ? 'timed' : 'none',
        hint: CATEGORY_HINT[category],
      });
    }
    return SnowflakeHttp.error(res.status === 202 ? 'statement_poll' : 'statement_submit', res, {
      hint:
        res.status === 400 || res.status === 415
          ? 'Snowflake refused the request itself; this is a floe bug, please report it'
          : res.status === 404
            ? 'check the account URL (base_url)'
            : undefined,
    });
  }

  static #body(res: SnowflakeResponse): StatementBody {
    const v = SnowflakeHttp.json(res);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as StatementBody) : {};
  }

  async #decode(body: StatementBody, signal: AbortSignal | undefined): Promise<SqlResult> {
    const meta = body.resultSetMetaData;
    const columns = (meta?.rowType ?? []).map((c) => ({ name: String(c.name ?? ''), type: String(c.type ?? '').toLowerCase() }));
    const rows: (string | null)[][] = [];
    pushRows(rows, body.data);
    const partitions = meta?.partitionInfo?.length ?? 0;
    if (partitions > 1) {
      const handle = body.statementHandle;
      if (!handle)
        throw new FloeError('destination', 'Snowflake returned a partitioned result without a statement handle', { retry: 'none' });
      for (let i = 1; i < partitions; i++) {
        const res = await this.#http.send({
          route: 'statement_poll',
          method: 'GET',
          url: this.#url(`/api/v2/statements/${encodeURIComponent(handle)}`, { partition: String(i) }),
          auth: this.#tokens,
          statementTimeout: true,
          signal,
        });
        if (res.status !== 200) throw this.#failure(res);
        const part = SnowflakeHttp.json(res);
        // Partition bodies carry only the data: a bare array, or an object with `data` (§3.3, layout undocumented).
        pushRows(rows, Array.isArray(part) ? (part as unknown[][]) : (part as StatementBody | undefined)?.data);
      }
    }
    const rowsAffected = affectedRows(body, columns, rows);
    return {
      columns,
      rows,
      ...(rowsAffected !== undefined ? { rowsAffected } : {}),
      ...(body.statementHandle ? { statementHandle: body.statementHandle } : {}),
    };
  }
}

function pushRows(into: (string | null)[][], data: readonly (readonly unknown[])[] | undefined): void {
  if (!Array.isArray(data)) return;
  for (const row of data) {
    if (!Array.isArray(row)) continue;
    // Cells are strings (or null); numbers and booleans from lenient servers are rendered as text.
    into.push(
      row.map((c) =>
        c === null || c === undefined ? null : typeof c === 'string' ? c : typeof c === 'object' ? JSON.stringify(c) : String(c),
      ),
    );
  }
}

const AFFECTED_COLUMNS = new Set(['number of rows inserted', 'number of rows updated', 'number of rows deleted']);

/** DML row count: `stats` when present, else the DML summary row (§3.3). */
function affectedRows(body: StatementBody, columns: readonly { name: string }[], rows: readonly (string | null)[][]): number | undefined {
  const stats = body.stats;
  if (stats) {
    const n = ['numRowsInserted', 'numRowsUpdated', 'numRowsDeleted'].reduce((sum, k) => sum + (Number(stats[k] ?? 0) || 0), 0);
    return n;
  }
  const idx = columns.map((c, i) => (AFFECTED_COLUMNS.has(c.name.toLowerCase()) ? i : -1)).filter((i) => i >= 0);
  if (idx.length === 0 || rows.length !== 1) return undefined;
  return idx.reduce((sum, i) => sum + (Number(rows[0]![i] ?? 0) || 0), 0);
}
