/**
 * SQL API v2 (reference §3): statements with request-id idempotency, 202 +
 * polling, multi-statement requests with child handles, cancel, and the
 * documented response bodies.
 */
import { randomUUID } from 'node:crypto';
import type { DuckDBConnection } from '@duckdb/node-api';
import { SqlFailure } from './sql/failure.js';
import { apiTypeName, type ResultColumn, type Session, type SqlEngine, type StatementResult } from './sql/engine.js';
import type { StatementText } from './sql/tokenizer.js';

export interface StatementRequest {
  statement?: unknown;
  timeout?: unknown;
  database?: unknown;
  schema?: unknown;
  warehouse?: unknown;
  role?: unknown;
  bindings?: unknown;
  parameters?: unknown;
}

interface Statement {
  readonly handle: string;
  readonly requestId: string | undefined;
  readonly createdOn: number;
  state: 'running' | 'done' | 'failed' | 'canceled' | 'timeout';
  readonly abort: AbortController;
  timeoutSeconds?: number;
  result?: StatementResult;
  failure?: SqlFailure;
  childHandles?: string[];
  done: Promise<void>;
  conn?: DuckDBConnection;
  nullable: boolean;
}

export interface SqlApiReply {
  status: number;
  body: unknown;
  /** Result partitions after the first are sent gzip-compressed, as Snowflake does. */
  gzip?: boolean;
  /** `Link` header for partitioned results. */
  link?: string;
}

const READ_ONLY = new Set(['SELECT', 'WITH', 'SHOW', 'DESC', 'DESCRIBE', 'USE', 'CALL']);
/** Statements that need a running warehouse in Snowflake. */
const NEEDS_WAREHOUSE = new Set(['SELECT', 'WITH', 'INSERT', 'UPDATE', 'DELETE', 'MERGE']);

/** Statements kept for GET/retry; a long-running emulator forgets the oldest finished ones. */
const MAX_KEPT_STATEMENTS = 10_000;

let handleCounter = 0;
function newHandle(): string {
  // Snowflake query ids look like 01b2c3d4-0000-0000-0000-00000000000N.
  handleCounter++;
  const t = Math.floor(Date.now() / 1000)
    .toString(16)
    .padStart(8, '0')
    .slice(-8);
  return `${t}-0000-f10e-0000-${handleCounter.toString(16).padStart(12, '0')}`;
}

export class SqlApi {
  readonly #statements = new Map<string, Statement>();
  readonly #byRequestId = new Map<string, string>();
  /** How long POST waits before answering 202 (Snowflake: 45 s). */
  syncWaitMs: number;
  /** Rows per result partition; larger results are paged (`partitionInfo`, `?partition=n`). */
  partitionRows: number;

  constructor(
    readonly engine: SqlEngine,
    options: { syncWaitMs: number; partitionRows: number },
  ) {
    this.syncWaitMs = options.syncWaitMs;
    this.partitionRows = options.partitionRows;
  }

  async submit(
    body: StatementRequest,
    query: { requestId?: string; retry?: string; async?: string; nullable?: string },
    user: string,
    defaultRole: string | undefined,
  ): Promise<SqlApiReply> {
    if (typeof body !== 'object' || body === null || typeof body.statement !== 'string') {
      return { status: 400, body: { code: '390142', message: 'Incoming request does not contain a valid payload.' } };
    }
    const requestId = query.requestId;
    if (requestId && query.retry === 'true') {
      const known = this.#byRequestId.get(requestId);
      const st = known ? this.#statements.get(known) : undefined;
      // Retried with the same request id: a statement that succeeded (or still runs) is not executed again;
      // one that failed or was cancelled is.
      if (st && (st.state === 'running' || st.state === 'done')) return this.#await(st, query.async === 'true');
    }
    const st: Statement = {
      handle: newHandle(),
      requestId,
      createdOn: Date.now(),
      state: 'running',
      done: Promise.resolve(),
      nullable: query.nullable !== 'false',
      abort: new AbortController(),
    };
    this.#remember(st);
    if (requestId) this.#byRequestId.set(requestId, st.handle);
    let timer: NodeJS.Timeout | undefined;
    if (typeof body.timeout === 'number' && body.timeout > 0) {
      st.timeoutSeconds = body.timeout;
      timer = setTimeout(() => {
        if (st.state !== 'running') return;
        st.state = 'timeout';
        st.abort.abort();
        st.conn?.interrupt();
      }, body.timeout * 1000);
    }
    st.done = this.#execute(st, body, user, defaultRole).then(
      (r) => {
        clearTimeout(timer);
        if (st.state === 'running') {
          st.state = 'done';
          st.result = r;
        }
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (st.state === 'running') {
          st.state = 'failed';
          st.failure = err instanceof SqlFailure ? err : new SqlFailure('100000', 'XX000', (err as Error).message);
        }
      },
    );
    return this.#await(st, query.async === 'true');
  }

  async #await(st: Statement, async: boolean): Promise<SqlApiReply> {
    if (!async && st.state === 'running') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([st.done, new Promise<void>((r) => (timer = setTimeout(r, this.syncWaitMs)))]);
      clearTimeout(timer);
    }
    return this.reply(st);
  }

  status(handle: string, partition?: string): SqlApiReply {
    const st = this.#statements.get(handle);
    if (!st) return notFound(handle);
    if (partition === undefined || st.state !== 'done') return this.reply(st);
    const parts = this.#partitions(st, st.result!);
    const n = Number(partition);
    if (!Number.isInteger(n) || n < 0 || n >= parts.length) {
      return {
        status: 422,
        body: {
          code: '000709',
          message: `Partition ${partition} of statement ${handle} not found`,
          sqlState: '02000',
          statementHandle: handle,
        },
      };
    }
    // A partition carries only its data.
    return { status: 200, body: { data: parts[n] }, gzip: true };
  }

  #partitions(st: Statement, r: StatementResult): (string | null)[][][] {
    const data = st.nullable ? r.rows : r.rows.map((row) => row.map((v) => v ?? 'null'));
    const size = Math.max(1, this.partitionRows);
    const parts: (string | null)[][][] = [];
    for (let i = 0; i < data.length; i += size) parts.push(data.slice(i, i + size));
    return parts.length > 0 ? parts : [[]];
  }

  async cancel(handle: string): Promise<SqlApiReply> {
    const st = this.#statements.get(handle);
    if (!st) return notFound(handle);
    if (st.state === 'running') {
      st.state = 'canceled';
      st.abort.abort();
      st.conn?.interrupt();
    }
    return {
      status: 200,
      body: {
        code: '000604',
        sqlState: '57014',
        message: 'SQL execution canceled',
        statementHandle: handle,
        statementStatusUrl: statusUrl(handle),
      },
    };
  }

  reply(st: Statement): SqlApiReply {
    switch (st.state) {
      case 'running':
        return {
          status: 202,
          body: {
            code: '333334',
            message: 'Asynchronous execution in progress. Use provided query id to perform query monitoring and management.',
            statementHandle: st.handle,
            statementStatusUrl: statusUrl(st.handle),
          },
        };
      case 'timeout':
        return {
          status: 408,
          body: {
            code: '000630',
            sqlState: '57014',
            message: `Statement reached its statement or warehouse timeout of ${st.timeoutSeconds} second(s) and was canceled.`,
            statementHandle: st.handle,
            statementStatusUrl: statusUrl(st.handle),
          },
        };
      case 'canceled':
        return {
          status: 422,
          body: {
            code: '000604',
            sqlState: '57014',
            message: 'SQL execution canceled',
            statementHandle: st.handle,
            statementStatusUrl: statusUrl(st.handle),
          },
        };
      case 'failed':
        return {
          status: 422,
          body: {
            code: st.failure!.code,
            message: st.failure!.message,
            sqlState: st.failure!.sqlState,
            statementHandle: st.handle,
            statementStatusUrl: statusUrl(st.handle),
            createdOn: st.createdOn,
          },
        };
      case 'done': {
        const parts = this.#partitions(st, st.result!);
        const body = resultBody(st, st.result!, parts);
        if (parts.length === 1) return { status: 200, body };
        const url = (n: number) => `<${statusUrl(st.handle)}?partition=${n}>`;
        const link = [`${url(0)}; rel="first"`, `${url(1)}; rel="next"`, `${url(parts.length - 1)}; rel="last"`].join(', ');
        return { status: 200, body, link };
      }
    }
  }

  async #execute(st: Statement, body: StatementRequest, user: string, defaultRole: string | undefined): Promise<StatementResult> {
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);
    const params = (typeof body.parameters === 'object' && body.parameters !== null ? body.parameters : {}) as Record<string, unknown>;
    const param = (name: string) => Object.entries(params).find(([k]) => k.toUpperCase() === name)?.[1];
    const statements = this.engine.split(body.statement as string);
    const wanted = Number(param('MULTI_STATEMENT_COUNT') ?? 1);
    if (!Number.isInteger(wanted) || wanted < 0) throw new SqlFailure('000008', '0A000', 'Invalid MULTI_STATEMENT_COUNT parameter.');
    if (statements.length === 0) throw SqlFailure.compilation('Empty SQL statement.', '000900', '42000');
    if (wanted !== 0 && wanted !== statements.length) {
      throw new SqlFailure(
        '000008',
        '0A000',
        `Actual statement count ${statements.length} did not match the desired statement count ${wanted}.`,
      );
    }
    const multi = wanted !== 1;
    const bindings = parseBindings(body.bindings);
    if (multi && bindings) throw new SqlFailure('000002', '0A000', 'Bind variables are not supported in multi-statement requests.');
    const warehouse = str(body.warehouse) ?? [...this.engine.warehouses][0] ?? null;
    const session: Session = {
      database: str(body.database),
      schema: str(body.schema),
      warehouse,
      role: str(body.role) ?? defaultRole ?? 'PUBLIC',
      user,
    };
    const writes = statements.some((s) => !READ_ONLY.has(s.tokens[0]?.value ?? ''));
    const run = () => this.#runAll(st, session, statements, multi, bindings);
    return writes ? this.engine.writeLock.run(run) : run();
  }

  async #runAll(
    st: Statement,
    session: Session,
    statements: StatementText[],
    multi: boolean,
    bindings: Record<string, { type: string; value: string | null }> | undefined,
  ): Promise<StatementResult> {
    const conn = await this.engine.connect();
    st.conn = conn;
    try {
      if (session.database !== null) await this.engine.requireDatabase(conn, session.database);
      if (session.database !== null && session.schema !== null) await this.engine.requireSchema(conn, session.database, session.schema);
      if (!multi) return await this.#one(conn, session, statements[0]!, bindings, st.abort.signal);
      const children: string[] = [];
      st.childHandles = children;
      for (const [k, stmt] of statements.entries()) {
        const child: Statement = {
          handle: newHandle(),
          requestId: undefined,
          createdOn: Date.now(),
          state: 'running',
          done: Promise.resolve(),
          nullable: st.nullable,
          abort: st.abort,
        };
        this.#remember(child);
        try {
          child.result = await this.#one(conn, session, stmt, undefined, st.abort.signal);
          child.state = 'done';
          children.push(child.handle);
        } catch (err) {
          const f = err instanceof SqlFailure ? err : new SqlFailure('100000', 'XX000', (err as Error).message);
          child.state = 'failed';
          child.failure = f;
          throw new SqlFailure(
            '100132',
            'P0000',
            `JavaScript execution error: Uncaught Execution of multiple statements failed on statement "${stmt.text.slice(0, 80)}${stmt.text.length > 80 ? '...' : ''}" (statement ${k + 1}).\n${f.message}`,
          );
        }
      }
      return {
        columns: [{ name: 'multiple statement execution', type: { base: 'VARCHAR', size: 16_777_216, scale: 0 }, nullable: true }],
        rows: [['Multiple statements executed successfully.']],
      };
    } finally {
      // A transaction left open at the end of the request is rolled back with the session.
      await this.engine.rollback(conn).catch(() => undefined);
      st.conn = undefined;
      conn.closeSync();
    }
  }

  async #one(
    conn: DuckDBConnection,
    session: Session,
    stmt: StatementText,
    bindings: Record<string, { type: string; value: string | null }> | undefined,
    signal: AbortSignal,
  ): Promise<StatementResult> {
    if (signal.aborted) throw new SqlFailure('000604', '57014', 'SQL execution canceled');
    const verb = stmt.tokens[0]?.value ?? '';
    if (NEEDS_WAREHOUSE.has(verb) && (session.warehouse === null || !this.engine.warehouses.has(session.warehouse))) {
      throw new SqlFailure(
        '000606',
        '57P03',
        "No active warehouse selected in the current session.  Select an active warehouse with the 'use warehouse' command.",
      );
    }
    return this.engine.execute(conn, session, stmt, bindings, signal);
  }

  /** Keeps statements for polling and retries, forgetting the oldest finished ones beyond a bound. */
  #remember(st: Statement): void {
    this.#statements.set(st.handle, st);
    if (this.#statements.size <= MAX_KEPT_STATEMENTS) return;
    for (const [handle, old] of this.#statements) {
      if (this.#statements.size <= MAX_KEPT_STATEMENTS) break;
      if (old.state === 'running') continue;
      this.#statements.delete(handle);
      if (old.requestId && this.#byRequestId.get(old.requestId) === handle) this.#byRequestId.delete(old.requestId);
    }
  }

  childOf(handle: string): string[] | undefined {
    return this.#statements.get(handle)?.childHandles;
  }
}

function parseBindings(v: unknown): Record<string, { type: string; value: string | null }> | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const out: Record<string, { type: string; value: string | null }> = {};
  for (const [k, b] of Object.entries(v as Record<string, unknown>)) {
    const x = b as { type?: unknown; value?: unknown };
    out[k] = { type: typeof x?.type === 'string' ? x.type : 'TEXT', value: typeof x?.value === 'string' ? x.value : null };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function statusUrl(handle: string): string {
  return `/api/v2/statements/${handle}`;
}

function notFound(handle: string): SqlApiReply {
  return { status: 422, body: { code: '000709', message: `Statement ${handle} not found`, sqlState: '02000', statementHandle: handle } };
}

function rowType(c: ResultColumn): Record<string, unknown> {
  const t = c.type;
  const base = {
    name: c.name,
    database: c.database ?? '',
    schema: c.schema ?? '',
    table: c.table ?? '',
    nullable: c.nullable,
    collation: null,
  };
  switch (t.base) {
    case 'NUMBER':
      return { ...base, type: 'fixed', length: null, byteLength: null, precision: t.size, scale: t.scale };
    case 'VARCHAR':
      return { ...base, type: 'text', length: t.size, byteLength: Math.min(t.size * 4, 134_217_728), precision: null, scale: null };
    case 'BINARY':
      return { ...base, type: 'binary', length: t.size, byteLength: t.size, precision: null, scale: null };
    case 'TIME':
    case 'TIMESTAMP_NTZ':
    case 'TIMESTAMP_TZ':
    case 'TIMESTAMP_LTZ':
      return { ...base, type: apiTypeName(t), length: null, byteLength: null, precision: 0, scale: t.size };
    default:
      return { ...base, type: apiTypeName(t), length: null, byteLength: null, precision: null, scale: null };
  }
}

function resultBody(st: Statement, r: StatementResult, parts: (string | null)[][][]): Record<string, unknown> {
  const body: Record<string, unknown> = {
    resultSetMetaData: {
      numRows: r.rows.length,
      format: 'jsonv2',
      rowType: r.columns.map(rowType),
      partitionInfo: parts.map((p) => ({ rowCount: p.length, uncompressedSize: Buffer.byteLength(JSON.stringify(p)) })),
    },
    data: parts[0],
    code: '090001',
    statementStatusUrl: `${statusUrl(st.handle)}?requestId=${st.requestId ?? randomUUID()}&partition=0`,
    requestId: st.requestId,
    sqlState: '00000',
    statementHandle: st.handle,
    message: 'Statement executed successfully.',
    createdOn: st.createdOn,
  };
  if (r.stats) body.stats = r.stats;
  if (st.childHandles) body.statementHandles = st.childHandles;
  return body;
}
