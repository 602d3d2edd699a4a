/**
 * The emulator's SQL engine: DuckDB holding Snowflake objects, and the
 * execution of translated commands with Snowflake's result shapes.
 *
 * Layout inside DuckDB: a Snowflake database DB is a DuckDB schema named `DB`
 * (a marker, holds nothing), a Snowflake schema DB.S is the DuckDB schema
 * `DB.S`, and a table keeps its name. Named pipes live in `_emulator.pipes`.
 * Every column's Snowflake type is its DuckDB COMMENT (see types.ts).
 *
 * Writers are serialised by one lock (Snowflake would queue them on table
 * locks; DuckDB would abort one with a transaction conflict instead). Reads
 * run concurrently on their own connections.
 */
import {
  DuckDBBlobValue,
  DuckDBDateValue,
  DuckDBDecimalValue,
  DuckDBInstance,
  DuckDBScalarFunction,
  DuckDBTimeValue,
  DuckDBTimestampTZValue,
  DuckDBTimestampValue,
  VARCHAR,
  type DuckDBConnection,
  type DuckDBResultReader,
} from '@duckdb/node-api';
import { mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { dirname } from 'node:path';
import { SqlFailure } from './failure.js';
import { prettyJson, snowflakeJsonText } from './json.js';
import { ENGINE_MACROS, translateStatement, type Command, type ObjectName, type PipeColumn, type TranslateContext } from './translate.js';
import { splitStatements, quoteId, quoteStr, SqlSyntaxError, type StatementText } from './tokenizer.js';
import { apiTypeName, duckType, isWidening, parseSfType, renderSfType, sfTypeOfDuck, type SfType } from './types.js';
import { spillDirectory, type SpillDirectory } from '../../destination/duckdb/spill-directory.js';

export interface ResultColumn {
  readonly name: string;
  readonly type: SfType;
  readonly nullable: boolean;
  readonly table?: string;
  readonly schema?: string;
  readonly database?: string;
}

export interface StatementResult {
  readonly columns: ResultColumn[];
  readonly rows: (string | null)[][];
  readonly stats?: { numRowsInserted: number; numRowsUpdated: number; numRowsDeleted: number; numDuplicateRowsUpdated: number };
}

export interface Session {
  database: string | null;
  schema: string | null;
  warehouse: string | null;
  role: string;
  readonly user: string;
}

export interface TableColumn {
  readonly name: string;
  readonly type: SfType;
  readonly nullable: boolean;
  readonly hasDefault: boolean;
}

export interface NamedPipe {
  readonly database: string;
  readonly schema: string;
  readonly name: string;
  readonly table: string;
  readonly columns: PipeColumn[] | null;
  readonly targetColumns: string[] | null;
  readonly matchCase: 'insensitive' | 'sensitive';
  readonly definition: string;
  readonly createdOnMs: number;
}

const META = '_emulator';

export function duckSchema(database: string, schema: string): string {
  return `${database}.${schema}`;
}

export function duckTable(o: ObjectName): string {
  return `${quoteId(duckSchema(o.database, o.schema))}.${quoteId(o.name)}`;
}

/** A simple FIFO async lock. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export class SqlEngine {
  readonly writeLock = new Mutex();
  /** Bumped by every DDL statement, so catalog caches (streaming targets) know when to re-read. */
  catalogVersion = 0;
  readonly warehouses = new Set<string>();
  /** Default pipes that have been instantiated (by a channel open), key DB.S.PIPE upper-cased → created ms. */
  readonly instantiatedDefaultPipes = new Map<
    string,
    { database: string; schema: string; name: string; table: string; createdOnMs: number }
  >();

  private constructor(
    readonly instance: DuckDBInstance,
    readonly account: string,
    readonly spill: SpillDirectory,
  ) {}

  static async open(path: string, account: string, warehouses: readonly string[]): Promise<SqlEngine> {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    // SQL reaches DuckDB from anyone holding a key: no file, extension or network access from statements
    // (`SELECT * FROM '/etc/passwd'`, read_csv, ATTACH, COPY TO, INSTALL), and the settings locked so no
    // statement can turn that back on. The database file itself stays reachable (opened here, before the lock).
    const spill = spillDirectory(path);
    const instance = await DuckDBInstance.create(path, {
      ...spill.options,
      memory_limit: '1GB',
      enable_external_access: 'false',
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
    }).catch((err: unknown) => {
      spill.remove();
      throw err;
    });
    const engine = new SqlEngine(instance, account, spill);
    for (const w of warehouses) engine.warehouses.add(w);
    const conn = await instance.connect();
    try {
      await conn.run("SET GLOBAL TimeZone = 'UTC'");
      await conn.run('SET lock_configuration = true');
      await conn.run(`CREATE SCHEMA IF NOT EXISTS ${META}`);
      await conn.run(
        `CREATE TABLE IF NOT EXISTS ${META}.pipes (database VARCHAR, schema VARCHAR, name VARCHAR, definition JSON, created_on_ms BIGINT)`,
      );
      await conn.run(`CREATE TABLE IF NOT EXISTS ${META}.warehouses (name VARCHAR)`);
      conn.registerScalarFunction(jsonTextFunction());
      for (const m of ENGINE_MACROS) await conn.run(m);
      const wh = await conn.runAndReadAll(`SELECT name FROM ${META}.warehouses`);
      for (const [name] of wh.getRowsJS()) engine.warehouses.add(String(name));
    } finally {
      conn.closeSync();
    }
    return engine;
  }

  /** A connection; every one is in UTC (set globally in open, where the configuration is locked). */
  async connect(): Promise<DuckDBConnection> {
    return this.instance.connect();
  }

  close(): void {
    this.instance.closeSync();
    this.spill.remove();
  }

  // --- catalog --------------------------------------------------------------

  async schemaExists(conn: DuckDBConnection, name: string): Promise<boolean> {
    const r = await conn.runAndReadAll(`SELECT 1 FROM duckdb_schemas() WHERE database_name = current_database() AND schema_name = $1`, [
      name,
    ]);
    return r.currentRowCount > 0;
  }

  async tableColumns(conn: DuckDBConnection, t: ObjectName): Promise<TableColumn[] | undefined> {
    const r = await conn.runAndReadAll(
      `SELECT column_name, data_type, comment, is_nullable, column_default IS NOT NULL FROM duckdb_columns()
       WHERE database_name = current_database() AND schema_name = $1 AND table_name = $2 ORDER BY column_index`,
      [duckSchema(t.database, t.schema), t.name],
    );
    const rows = r.getRowsJS();
    if (rows.length === 0) return undefined;
    return rows.map(([name, dt, comment, nullable, hasDefault]) => ({
      name: String(name),
      type: (typeof comment === 'string' ? parseSfType(comment) : undefined) ?? sfTypeOfDuck(String(dt)),
      nullable: nullable === true,
      hasDefault: hasDefault === true,
    }));
  }

  readonly #columnCache = new Map<string, { version: number; columns: TableColumn[] | undefined }>();

  /** tableColumns through a cache that DDL invalidates (duckdb_columns() is slow enough to matter per query). */
  async cachedColumns(conn: DuckDBConnection, t: ObjectName): Promise<TableColumn[] | undefined> {
    const key = `${t.database}\u0000${t.schema}\u0000${t.name}`;
    const hit = this.#columnCache.get(key);
    if (hit && hit.version === this.catalogVersion) return hit.columns;
    const version = this.catalogVersion;
    const columns = await this.tableColumns(conn, t);
    this.#columnCache.set(key, { version, columns });
    return columns;
  }

  async namedPipe(conn: DuckDBConnection, database: string, schema: string, name: string): Promise<NamedPipe | undefined> {
    const r = await conn.runAndReadAll(
      `SELECT definition, created_on_ms FROM ${META}.pipes WHERE upper(database) = upper($1) AND upper(schema) = upper($2) AND upper(name) = upper($3)`,
      [database, schema, name],
    );
    const row = r.getRowsJS()[0];
    if (!row) return undefined;
    return { ...(JSON.parse(String(row[0])) as Omit<NamedPipe, 'createdOnMs'>), createdOnMs: Number(row[1]) };
  }

  async allNamedPipes(conn: DuckDBConnection): Promise<NamedPipe[]> {
    const r = await conn.runAndReadAll(`SELECT definition, created_on_ms FROM ${META}.pipes ORDER BY created_on_ms`);
    return r.getRowsJS().map((row) => ({ ...(JSON.parse(String(row[0])) as Omit<NamedPipe, 'createdOnMs'>), createdOnMs: Number(row[1]) }));
  }

  // --- execution --------------------------------------------------------------

  /** Splits a request; syntax errors become Snowflake compilation errors. */
  split(sql: string): StatementText[] {
    try {
      return splitStatements(sql);
    } catch (err) {
      if (err instanceof SqlSyntaxError) {
        throw SqlFailure.compilation(`syntax error line 1 at position ${err.pos} ${err.message}.`);
      }
      throw err;
    }
  }

  /** Executes one statement in `session` on `conn`, updating the session (USE). */
  async execute(
    conn: DuckDBConnection,
    session: Session,
    stmt: StatementText,
    bindings?: TranslateContext['bindings'],
    signal?: AbortSignal,
  ): Promise<StatementResult> {
    const ctx: TranslateContext = { ...session, account: this.account, bindings };
    const command = translateStatement(stmt, ctx);
    try {
      return await this.run(conn, session, command, signal);
    } catch (err) {
      throw toSqlFailure(err);
    }
  }

  async run(conn: DuckDBConnection, session: Session, c: Command, signal?: AbortSignal): Promise<StatementResult> {
    // A statement that may change the catalog moves the version before it runs and again once it has run:
    // a reader that reads the catalog meanwhile (reads do not take the write lock) caches what it saw under
    // the middle version, which the second move retires. DDL inside a transaction becomes visible to other
    // connections only at COMMIT (or is undone by ROLLBACK), so that moves it again.
    const ddl =
      c.kind !== 'wait' &&
      c.kind !== 'query' &&
      c.kind !== 'merge' &&
      c.kind !== 'transaction' &&
      c.kind !== 'use' &&
      !c.kind.startsWith('show') &&
      c.kind !== 'describe-table';
    const ends = c.kind === 'transaction' && c.action !== 'begin' && this.#uncommittedDdl.delete(conn);
    if (ddl) {
      this.catalogVersion++;
      this.#uncommittedDdl.add(conn);
    }
    try {
      return await this.#dispatch(conn, session, c, signal);
    } finally {
      if (ddl || ends) this.catalogVersion++;
    }
  }

  /** Connections that ran DDL since their last COMMIT or ROLLBACK (autocommitted DDL is forgotten at the next one). */
  readonly #uncommittedDdl = new WeakSet<DuckDBConnection>();

  /** Rolls back what a request left open; a rolled-back DDL moves the catalog version. */
  async rollback(conn: DuckDBConnection): Promise<void> {
    try {
      await conn.run('ROLLBACK');
    } finally {
      if (this.#uncommittedDdl.delete(conn)) this.catalogVersion++;
    }
  }

  async #dispatch(conn: DuckDBConnection, session: Session, c: Command, signal?: AbortSignal): Promise<StatementResult> {
    switch (c.kind) {
      case 'wait':
        try {
          await sleep(c.ms, undefined, { signal });
        } catch {
          throw new SqlFailure('000604', '57014', 'SQL execution canceled');
        }
        return {
          columns: [{ name: c.label, type: { base: 'VARCHAR', size: 16_777_216, scale: 0 }, nullable: true }],
          rows: [[`waited ${c.ms / 1000} seconds`]],
        };
      case 'query':
        return this.query(conn, c.sql, c.verb, c.tables);
      case 'merge':
        return this.merge(conn, c);
      case 'transaction':
        if (c.action === 'begin') await conn.run('BEGIN TRANSACTION');
        else await conn.run(c.action === 'commit' ? 'COMMIT' : 'ROLLBACK');
        return status('Statement executed successfully.');
      case 'create-database': {
        const exists = await this.schemaExists(conn, c.name);
        if (exists && c.ifNotExists) return status(`${c.name} already exists, statement succeeded.`);
        if (exists && !c.orReplace) throw SqlFailure.compilation(`Object '${c.name}' already exists.`, '002002', '42710');
        if (!exists) {
          await conn.run(`CREATE SCHEMA ${quoteId(c.name)}`);
          await conn.run(`CREATE SCHEMA IF NOT EXISTS ${quoteId(duckSchema(c.name, 'PUBLIC'))}`);
        }
        session.database = c.name;
        session.schema = 'PUBLIC';
        return status(`Database ${c.name} successfully created.`);
      }
      case 'create-schema': {
        await this.requireDatabase(conn, c.database);
        const name = duckSchema(c.database, c.name);
        const exists = await this.schemaExists(conn, name);
        if (exists && c.ifNotExists) return status(`${c.name} already exists, statement succeeded.`);
        if (exists) throw SqlFailure.compilation(`Object '${c.name}' already exists.`, '002002', '42710');
        await conn.run(`CREATE SCHEMA ${quoteId(name)}`);
        session.database = c.database;
        session.schema = c.name;
        return status(`Schema ${c.name} successfully created.`);
      }
      case 'create-warehouse': {
        if (this.warehouses.has(c.name)) {
          if (c.ifNotExists) return status(`${c.name} already exists, statement succeeded.`);
          throw SqlFailure.compilation(`Object '${c.name}' already exists.`, '002002', '42710');
        }
        await conn.run(`INSERT INTO ${META}.warehouses VALUES ($1)`, [c.name]);
        this.warehouses.add(c.name);
        session.warehouse = c.name;
        return status(`Warehouse ${c.name} successfully created.`);
      }
      case 'create-table': {
        await this.requireSchema(conn, c.table.database, c.table.schema);
        const existing = await this.tableColumns(conn, c.table);
        if (existing && c.ifNotExists) return status(`${c.table.name} already exists, statement succeeded.`);
        if (existing && !c.orReplace) throw SqlFailure.compilation(`Object '${c.table.name}' already exists.`, '002002', '42710');
        const names = new Set<string>();
        for (const col of c.columns) {
          if (names.has(col.name)) throw SqlFailure.compilation(`duplicate column name '${col.name}'`, '002025', '42S21');
          names.add(col.name);
        }
        const defs = c.columns.map(
          (col) =>
            `${quoteId(col.name)} ${duckType(col.type)}${col.notNull ? ' NOT NULL' : ''}${col.defaultSql ? ` DEFAULT ${col.defaultSql}` : ''}`,
        );
        await conn.run(`CREATE ${c.orReplace ? 'OR REPLACE ' : ''}TABLE ${duckTable(c.table)} (${defs.join(', ')})`);
        for (const col of c.columns) await this.setColumnType(conn, c.table, col.name, col.type);
        return status(`Table ${c.table.name} successfully created.`);
      }
      case 'add-columns': {
        const cols = await this.requireTable(conn, c.table);
        for (const col of c.columns) {
          if (cols.some((x) => x.name === col.name)) {
            if (c.ifNotExists) continue;
            throw SqlFailure.compilation(`column '${col.name}' already exists`, '002025', '42S21');
          }
          if (col.notNull && !col.defaultSql) {
            // Snowflake refuses NOT NULL without a default on a table that has rows; it accepts it on an empty one.
            const n = await conn.runAndReadAll(`SELECT count(*) FROM ${duckTable(c.table)}`);
            if (Number(n.getRowsJS()[0]![0]) > 0) {
              throw SqlFailure.compilation(
                `Non-nullable column '${col.name}' cannot be added to non-empty table '${c.table.name}' unless it has a non-null default value.`,
                '002025',
                '42601',
              );
            }
          }
          await conn.run(
            `ALTER TABLE ${duckTable(c.table)} ADD COLUMN ${quoteId(col.name)} ${duckType(col.type)}${col.defaultSql ? ` DEFAULT ${col.defaultSql}` : ''}`,
          );
          if (col.notNull) await conn.run(`ALTER TABLE ${duckTable(c.table)} ALTER COLUMN ${quoteId(col.name)} SET NOT NULL`);
          await this.setColumnType(conn, c.table, col.name, col.type);
        }
        return status('Statement executed successfully.');
      }
      case 'alter-column-type': {
        const cols = await this.requireTable(conn, c.table);
        const col = cols.find((x) => x.name === c.column);
        if (!col) throw SqlFailure.compilation(`invalid identifier '${c.column}'`, '000904', '42000');
        if (!isWidening(col.type, c.type)) {
          throw SqlFailure.compilation(
            `cannot change column ${c.column} from type ${renderSfType(col.type)} to ${renderSfType(c.type)}`,
            '002108',
            '22000',
          );
        }
        if (duckType(col.type) !== duckType(c.type)) {
          await conn.run(`ALTER TABLE ${duckTable(c.table)} ALTER COLUMN ${quoteId(c.column)} SET DATA TYPE ${duckType(c.type)}`);
        }
        await this.setColumnType(conn, c.table, c.column, c.type);
        return status('Statement executed successfully.');
      }
      case 'drop-column': {
        const cols = await this.requireTable(conn, c.table);
        if (!cols.some((x) => x.name === c.column)) {
          if (c.ifExists) return status('Statement executed successfully.');
          throw SqlFailure.compilation(`invalid identifier '${c.column}'`, '000904', '42000');
        }
        await conn.run(`ALTER TABLE ${duckTable(c.table)} DROP COLUMN ${quoteId(c.column)}`);
        return status('Statement executed successfully.');
      }
      case 'drop-table': {
        const cols = await this.tableColumns(conn, c.table);
        if (!cols) {
          if (c.ifExists) return status('Drop statement executed successfully (' + c.table.name + ' already dropped).');
          throw SqlFailure.notFound(`${c.table.database}.${c.table.schema}.${c.table.name}`);
        }
        await conn.run(`DROP TABLE ${duckTable(c.table)}`);
        return status(`${c.table.name} successfully dropped.`);
      }
      case 'truncate': {
        const cols = await this.tableColumns(conn, c.table);
        if (!cols) {
          if (c.ifExists) return status('Statement executed successfully.');
          throw SqlFailure.notFound(`${c.table.database}.${c.table.schema}.${c.table.name}`);
        }
        await conn.run(`DELETE FROM ${duckTable(c.table)}`);
        return status('Statement executed successfully.');
      }
      case 'use': {
        if (c.what === 'database') {
          await this.requireDatabase(conn, c.name);
          session.database = c.name;
          session.schema = (await this.schemaExists(conn, duckSchema(c.name, 'PUBLIC'))) ? 'PUBLIC' : null;
        } else if (c.what === 'schema') {
          await this.requireSchema(conn, c.database!, c.name);
          session.database = c.database!;
          session.schema = c.name;
        } else if (c.what === 'warehouse') {
          this.requireWarehouse(c.name);
          session.warehouse = c.name;
        } else {
          session.role = c.name;
        }
        return status('Statement executed successfully.');
      }
      case 'create-pipe':
        return this.createPipe(conn, c);
      case 'drop-pipe': {
        const pipe = await this.namedPipe(conn, c.pipe.database, c.pipe.schema, c.pipe.name);
        if (!pipe) {
          if (c.ifExists) return status(`Drop statement executed successfully (${c.pipe.name} already dropped).`);
          throw SqlFailure.notFound(`${c.pipe.database}.${c.pipe.schema}.${c.pipe.name}`);
        }
        await conn.run(`DELETE FROM ${META}.pipes WHERE database = $1 AND schema = $2 AND name = $3`, [
          pipe.database,
          pipe.schema,
          pipe.name,
        ]);
        return status(`${pipe.name} successfully dropped.`);
      }
      case 'show-pipes':
        return this.showPipes(conn, c);
      case 'show-grants':
        return this.showGrants(conn, session);
      case 'describe-table': {
        const cols = await this.requireTable(conn, c.table);
        const text = (name: string) => ({ name, type: { base: 'VARCHAR', size: 16_777_216, scale: 0 } as SfType, nullable: true });
        return {
          columns: ['name', 'type', 'kind', 'null?', 'default', 'primary key', 'unique key', 'check', 'expression', 'comment'].map(text),
          rows: cols.map((col) => [col.name, renderSfType(col.type), 'COLUMN', col.nullable ? 'Y' : 'N', null, 'N', 'N', null, null, null]),
        };
      }
    }
  }

  requireWarehouse(name: string): void {
    if (!this.warehouses.has(name)) {
      throw new SqlFailure('002043', '02000', `SQL compilation error:\nObject does not exist, or operation cannot be performed.`);
    }
  }

  async requireDatabase(conn: DuckDBConnection, name: string): Promise<void> {
    if (!(await this.schemaExists(conn, name)))
      throw SqlFailure.compilation(`Database '${name}' does not exist or not authorized.`, '002003', '02000');
  }

  async requireSchema(conn: DuckDBConnection, database: string, schema: string): Promise<void> {
    await this.requireDatabase(conn, database);
    if (!(await this.schemaExists(conn, duckSchema(database, schema)))) {
      throw SqlFailure.compilation(`Schema '${database}.${schema}' does not exist or not authorized.`, '002003', '02000');
    }
  }

  async requireTable(conn: DuckDBConnection, t: ObjectName): Promise<TableColumn[]> {
    const cols = await this.tableColumns(conn, t);
    if (!cols) throw SqlFailure.notFound(`${t.database}.${t.schema}.${t.name}`);
    return cols;
  }

  async setColumnType(conn: DuckDBConnection, t: ObjectName, column: string, type: SfType): Promise<void> {
    await conn.run(`COMMENT ON COLUMN ${duckTable(t)}.${quoteId(column)} IS ${quoteStr(renderSfType(type))}`);
  }

  async query(
    conn: DuckDBConnection,
    sql: string,
    verb: 'select' | 'insert' | 'update' | 'delete',
    tables: readonly ObjectName[] = [],
  ): Promise<StatementResult> {
    const r = await conn.runAndReadAll(sql);
    if (verb === 'select') {
      const known: TableColumn[] = [];
      for (const t of tables) known.push(...((await this.cachedColumns(conn, t)) ?? []));
      return renderResult(r, known);
    }
    const n = Number(r.getRowsJS()[0]?.[0] ?? 0);
    const fixed: SfType = { base: 'NUMBER', size: 38, scale: 0 };
    const col = (name: string) => ({ name, type: fixed, nullable: false });
    const stats = { numRowsInserted: 0, numRowsUpdated: 0, numRowsDeleted: 0, numDuplicateRowsUpdated: 0 };
    if (verb === 'insert')
      return { columns: [col('number of rows inserted')], rows: [[String(n)]], stats: { ...stats, numRowsInserted: n } };
    if (verb === 'update') {
      return {
        columns: [col('number of rows updated'), col('number of multi-joined rows updated')],
        rows: [[String(n), '0']],
        stats: { ...stats, numRowsUpdated: n },
      };
    }
    return { columns: [col('number of rows deleted')], rows: [[String(n)]], stats: { ...stats, numRowsDeleted: n } };
  }

  /**
   * MERGE with Snowflake's nondeterminism check (§5.5): a target row joined by
   * several source rows fails the statement with 100090 when the first
   * applicable WHEN MATCHED clause of any of them is an UPDATE (several
   * DELETEs of one row are fine). DuckDB would silently apply the last one.
   */
  async merge(conn: DuckDBConnection, c: Extract<Command, { kind: 'merge' }>): Promise<StatementResult> {
    const matched = c.clauses.filter((x) => x.matched);
    if (matched.length > 0) {
      const action = `CASE ${matched.map((x) => `WHEN ${x.conditionSql ?? 'TRUE'} THEN '${x.action === 'update' ? 'U' : 'D'}'`).join(' ')} END`;
      const check =
        `SELECT 1 FROM (SELECT ${c.targetAlias}.rowid AS __rid, ${action} AS __a FROM ${c.target} AS ${c.targetAlias} ` +
        `JOIN ${c.source} AS ${c.sourceAlias} ON ${c.onSql}) WHERE __a IS NOT NULL GROUP BY __rid ` +
        `HAVING count(*) > 1 AND count(*) FILTER (WHERE __a = 'U') > 0 LIMIT 1`;
      const dup = await conn.runAndReadAll(check);
      if (dup.currentRowCount > 0) {
        throw new SqlFailure('100090', '42P18', 'Duplicate row detected during DML action');
      }
    }
    const r = await conn.runAndReadAll(`${c.sql} RETURNING merge_action`);
    let inserted = 0;
    let updated = 0;
    let deleted = 0;
    for (const [a] of r.getRowsJS()) {
      if (a === 'INSERT') inserted++;
      else if (a === 'UPDATE') updated++;
      else if (a === 'DELETE') deleted++;
    }
    const fixed: SfType = { base: 'NUMBER', size: 38, scale: 0 };
    const columns: ResultColumn[] = [
      { name: 'number of rows inserted', type: fixed, nullable: false },
      { name: 'number of rows updated', type: fixed, nullable: false },
    ];
    const row = [String(inserted), String(updated)];
    if (c.clauses.some((x) => x.action === 'delete')) {
      columns.push({ name: 'number of rows deleted', type: fixed, nullable: false });
      row.push(String(deleted));
    }
    return {
      columns,
      rows: [row],
      stats: { numRowsInserted: inserted, numRowsUpdated: updated, numRowsDeleted: deleted, numDuplicateRowsUpdated: 0 },
    };
  }

  async createPipe(conn: DuckDBConnection, c: Extract<Command, { kind: 'create-pipe' }>): Promise<StatementResult> {
    await this.requireSchema(conn, c.pipe.database, c.pipe.schema);
    if (c.pipe.name.toUpperCase().endsWith('-STREAMING')) {
      throw SqlFailure.compilation(`Pipe name '${c.pipe.name}' is reserved for the default pipe.`, '002002', '42710');
    }
    const existing = await this.namedPipe(conn, c.pipe.database, c.pipe.schema, c.pipe.name);
    if (existing) {
      if (c.ifNotExists) return status(`${c.pipe.name} already exists, statement succeeded.`);
      throw SqlFailure.compilation(`Object '${c.pipe.name}' already exists.`, '002002', '42710');
    }
    const cols = await this.requireTable(conn, c.table);
    for (const name of c.targetColumns ?? []) {
      if (!cols.some((x) => x.name === name)) throw SqlFailure.compilation(`invalid identifier '${name}'`, '000904', '42000');
    }
    if (c.columns && !c.targetColumns && c.columns.length > cols.length) {
      throw SqlFailure.compilation('Insert value list does not match column list', '002020', '21S01');
    }
    const pipe: Omit<NamedPipe, 'createdOnMs'> = {
      database: c.pipe.database,
      schema: c.pipe.schema,
      name: c.pipe.name,
      table: c.table.name,
      columns: c.columns,
      targetColumns: c.targetColumns,
      matchCase: c.matchCase,
      definition: c.definition,
    };
    if (c.table.database !== c.pipe.database || c.table.schema !== c.pipe.schema) {
      throw SqlFailure.unsupported('a pipe loading a table of another schema');
    }
    await conn.run(`INSERT INTO ${META}.pipes VALUES ($1, $2, $3, $4, $5)`, [
      pipe.database,
      pipe.schema,
      pipe.name,
      JSON.stringify(pipe),
      Date.now(),
    ]);
    return status(`Pipe ${c.pipe.name} successfully created.`);
  }

  async showPipes(conn: DuckDBConnection, c: Extract<Command, { kind: 'show-pipes' }>): Promise<StatementResult> {
    const named = await this.allNamedPipes(conn);
    const all = [
      ...named.map((p) => ({ ...p, owner: 'ACCOUNTADMIN' as string | null })),
      ...[...this.instantiatedDefaultPipes.values()].map((p) => ({
        ...p,
        definition: `COPY INTO ${p.database}.${p.schema}."${p.table}" FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING')) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE`,
        owner: null,
      })),
    ];
    const like =
      c.like === null
        ? null
        : new RegExp(
            `^${c.like
              .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
              .replaceAll('%', '.*')
              .replaceAll('_', '.')}$`,
            'i',
          );
    const rows = all
      .filter((p) => (c.database === null || p.database === c.database) && (c.schema === null || p.schema === c.schema))
      .filter((p) => like === null || like.test(p.name))
      .map((p) => [
        String(p.createdOnMs / 1000),
        p.name,
        p.database,
        p.schema,
        p.definition,
        p.owner,
        null,
        null,
        null,
        null,
        'false',
        null,
      ]);
    const text = (name: string): ResultColumn => ({ name, type: { base: 'VARCHAR', size: 16_777_216, scale: 0 }, nullable: true });
    return {
      columns: [
        { name: 'created_on', type: { base: 'TIMESTAMP_LTZ', size: 3, scale: 0 }, nullable: true },
        ...[
          'name',
          'database_name',
          'schema_name',
          'definition',
          'owner',
          'notification_channel',
          'comment',
          'integration',
          'pattern',
          'invalid',
          'invalid_reason',
        ].map(text),
      ],
      rows: rows.map((r) => r.map((v) => (v === null ? null : String(v)))),
    };
  }

  async showGrants(conn: DuckDBConnection, session: Session): Promise<StatementResult> {
    // The emulator has no access control: the session role owns everything.
    const schemas = await conn.runAndReadAll(
      `SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database() AND schema_name NOT IN ('main', 'pg_catalog', 'information_schema', '${META}') ORDER BY 1`,
    );
    const now = String(Date.now() / 1000);
    const rows: (string | null)[][] = [];
    for (const [s] of schemas.getRowsJS()) {
      const name = String(s);
      rows.push([now, 'OWNERSHIP', name.includes('.') ? 'SCHEMA' : 'DATABASE', name, 'ROLE', session.role, 'true', session.role]);
    }
    for (const w of this.warehouses) rows.push([now, 'USAGE', 'WAREHOUSE', w, 'ROLE', session.role, 'false', 'ACCOUNTADMIN']);
    const text = (name: string): ResultColumn => ({ name, type: { base: 'VARCHAR', size: 16_777_216, scale: 0 }, nullable: true });
    return {
      columns: [
        { name: 'created_on', type: { base: 'TIMESTAMP_LTZ', size: 3, scale: 0 }, nullable: true },
        ...['privilege', 'granted_on', 'name', 'granted_to', 'grantee_name', 'grant_option', 'granted_by'].map(text),
      ],
      rows,
    };
  }
}

function status(message: string): StatementResult {
  return { columns: [{ name: 'status', type: { base: 'VARCHAR', size: 16_777_216, scale: 0 }, nullable: true }], rows: [[message]] };
}

/** Maps DuckDB's error classes to the Snowflake codes a client would see for the same mistake. */
export function toSqlFailure(err: unknown): SqlFailure {
  if (err instanceof SqlFailure) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const first = msg.split('\n')[0]!;
  if (/^Catalog Error: (Table|Schema) with name (\S+) does not exist/.test(first)) {
    const name = /with name (\S+) does not exist/.exec(first)![1]!;
    return SqlFailure.notFound(name);
  }
  if (/^Binder Error: (Referenced column|Values list|Table .* does not have a column)/.test(first)) {
    const col = /"([^"]+)"/.exec(first)?.[1] ?? '?';
    return SqlFailure.compilation(`error line 1 at position 0\ninvalid identifier '${col}'`, '000904', '42000');
  }
  if (/^Conversion Error/.test(first) || /^Invalid Input Error: Malformed JSON/.test(first)) {
    return new SqlFailure('100038', '22018', `${first.replace(/^[A-Za-z ]+Error: /, '')}`);
  }
  if (/^Constraint Error: NOT NULL constraint failed/.test(first)) {
    return new SqlFailure('100072', '22000', 'NULL result in a non-nullable column');
  }
  if (/^Parser Error/.test(first)) return SqlFailure.compilation(first.replace(/^Parser Error: /, ''));
  if (/^Binder Error/.test(first)) return SqlFailure.compilation(first.replace(/^Binder Error: /, ''), '002262', '42000');
  if (/^INTERRUPT Error/.test(first)) return new SqlFailure('000604', '57014', 'SQL execution canceled');
  if (/^Out of Range Error/.test(first)) return new SqlFailure('100046', '22003', first.replace(/^Out of Range Error: /, ''));
  if (/Transaction conflict|TransactionContext Error/.test(first)) return new SqlFailure('000625', '57014', first);
  return new SqlFailure('100000', 'XX000', first);
}

// --- result rendering -----------------------------------------------------------

function secs9(micros: bigint): string {
  const neg = micros < 0n;
  const abs = neg ? -micros : micros;
  return `${neg ? '-' : ''}${abs / 1_000_000n}.${(abs % 1_000_000n).toString().padStart(6, '0')}000`;
}

/** One cell as the SQL API renders it by default (§3.3). */
export function renderCell(v: unknown, type: SfType): string | null {
  if (v === null || v === undefined) return null;
  if (v instanceof DuckDBDecimalValue) return v.toString();
  if (v instanceof DuckDBDateValue) return String(v.days);
  if (v instanceof DuckDBTimeValue) return secs9(v.micros);
  // TIMESTAMP_LTZ renders like NTZ (session time zone UTC); TIMESTAMP_TZ carries its offset (always UTC here).
  if (v instanceof DuckDBTimestampTZValue) return type.base === 'TIMESTAMP_LTZ' ? secs9(v.micros) : `${secs9(v.micros)} 1440`;
  if (v instanceof DuckDBTimestampValue) return secs9(v.micros);
  if (v instanceof DuckDBBlobValue) return Buffer.from(v.bytes).toString('hex').toUpperCase();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
    return String(v);
  }
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') {
    if (type.base === 'VARIANT' || type.base === 'ARRAY' || type.base === 'OBJECT') {
      try {
        // Snowflake pretty-prints semi-structured values (numbers digit for digit: json.ts).
        return prettyJson(v) ?? JSON.stringify(JSON.parse(v), null, 2);
      } catch {
        return v;
      }
    }
    return v;
  }
  return String(v);
}

/**
 * A result with Snowflake column types. DuckDB cannot say where a result column came from, so a column whose
 * name and storage type match a column of a table the statement referenced takes that column's Snowflake type
 * (ARRAY vs VARIANT, TIMESTAMP_LTZ vs TIMESTAMP_TZ, VARCHAR length); others are typed from DuckDB's type.
 */
export function renderResult(r: DuckDBResultReader, known: readonly TableColumn[] = []): StatementResult {
  const names = r.columnNames();
  const types = r.columnTypes();
  const columns: ResultColumn[] = names.map((name, k) => {
    const t = types[k]!;
    const duck = t.alias === 'JSON' ? 'JSON' : t.toString().replace('TIMESTAMP WITH TIME ZONE', 'TIMESTAMPTZ');
    const fromTable =
      known.find((c) => c.name === name && duckType(c.type) === duck) ??
      known.find((c) => c.name.toUpperCase() === name.toUpperCase() && duckType(c.type) === duck);
    return { name, type: fromTable?.type ?? sfTypeOfDuck(duck), nullable: fromTable?.nullable ?? true };
  });
  const rows = r.getRows().map((row) => row.map((v, k) => renderCell(v, columns[k]!.type)));
  return { columns, rows };
}

export { apiTypeName };

/** Finds a table by Snowflake path segments, which the streaming API treats case-insensitively. */
export async function resolveTable(
  conn: DuckDBConnection,
  database: string,
  schema: string,
  table: string,
): Promise<ObjectName | undefined> {
  const r = await conn.runAndReadAll(
    `SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() AND upper(schema_name) = upper($1) AND upper(table_name) = upper($2)`,
    [duckSchema(database, schema), table],
  );
  const rows = r.getRowsJS();
  // Prefer the exact spelling when quoted names differ only in case.
  const exact = rows.find(([s, t]) => s === duckSchema(database, schema) && t === table) ?? rows[0];
  if (!exact) return undefined;
  const s = String(exact[0]);
  const dot = s.indexOf('.');
  return { database: s.slice(0, dot), schema: s.slice(dot + 1), name: String(exact[1]) };
}

/** `sf_json_text(text, parameter)`: the JSON text a Snowflake VARIANT parsed from `text` holds (json.ts). */
function jsonTextFunction(): DuckDBScalarFunction {
  return DuckDBScalarFunction.create({
    name: 'sf_json_text',
    returnType: VARCHAR,
    parameterTypes: [VARCHAR, VARCHAR],
    mainFunction: (_info, input, output) => {
      const texts = input.getColumnVector(0);
      const params = input.getColumnVector(1);
      for (let r = 0; r < input.rowCount; r++) {
        const text = texts.getItem(r);
        output.setItem(r, text === null ? null : snowflakeJsonText(String(text), String(params.getItem(r) ?? 's')));
      }
      output.flush();
    },
  });
}
