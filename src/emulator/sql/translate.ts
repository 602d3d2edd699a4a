/**
 * Snowflake SQL → DuckDB, for the statement forms floe's Snowflake destination
 * emits (docs/emulator.md lists them). Every statement is classified by its
 * leading keywords; DDL and session commands become structured commands the
 * engine executes itself, queries and DML are rewritten token by token:
 *
 * - table references (after FROM, JOIN, INTO, UPDATE, USING, TABLE) map the
 *   Snowflake three-part name DB.SCHEMA.TABLE to the DuckDB schema "DB.SCHEMA";
 * - `x:key`, `x:"key".sub[0]` → json_extract(x, '$."key"."sub"[0]');
 * - `x::T`, CAST/TRY_CAST(x AS T) → the DuckDB type, through helper macros where
 *   Snowflake semantics differ (a VARIANT string cast to VARCHAR loses its quotes);
 * - functions are renamed or rewritten from an explicit table; an unknown
 *   function is a compilation error, never passed through silently.
 */
import { quoteId, quoteStr, tokenize, splitStatements, SqlSyntaxError, type Token, type StatementText } from './tokenizer.js';
import { SqlFailure } from './failure.js';
import { sfType, duckType, type SfType } from './types.js';

export interface TranslateContext {
  readonly database: string | null;
  readonly schema: string | null;
  readonly user: string;
  readonly role: string;
  readonly warehouse: string | null;
  readonly account: string;
  /** SQL API bindings, by 1-based position. */
  readonly bindings?: Readonly<Record<string, { type: string; value: string | null }>>;
}

/** A Snowflake object name resolved against the session. */
export interface ObjectName {
  readonly database: string;
  readonly schema: string;
  readonly name: string;
}

export interface ColumnDef {
  readonly name: string;
  readonly type: SfType;
  readonly notNull: boolean;
  /** DuckDB default expression. */
  readonly defaultSql: string | null;
}

export interface PipeColumn {
  readonly column: string | null; // null: by position
  /** The NDJSON path (top-level key and nested path as written after $1:). */
  readonly path: readonly (string | number)[];
  readonly cast: SfType | null;
}

export interface MergeClause {
  readonly matched: boolean;
  readonly conditionSql: string | null;
  readonly action: 'update' | 'delete' | 'insert';
}

export type Command =
  | { kind: 'query'; sql: string; verb: 'select' | 'insert' | 'update' | 'delete'; tables: ObjectName[] }
  | {
      kind: 'merge';
      sql: string;
      target: string;
      targetAlias: string;
      source: string;
      sourceAlias: string;
      onSql: string;
      clauses: MergeClause[];
    }
  | { kind: 'create-database'; name: string; ifNotExists: boolean; orReplace: boolean }
  | { kind: 'create-schema'; database: string; name: string; ifNotExists: boolean }
  | { kind: 'create-warehouse'; name: string; ifNotExists: boolean }
  | { kind: 'create-table'; table: ObjectName; columns: ColumnDef[]; ifNotExists: boolean; orReplace: boolean }
  | { kind: 'add-columns'; table: ObjectName; columns: ColumnDef[]; ifNotExists: boolean }
  | { kind: 'alter-column-type'; table: ObjectName; column: string; type: SfType }
  | { kind: 'drop-column'; table: ObjectName; column: string; ifExists: boolean }
  | { kind: 'drop-table'; table: ObjectName; ifExists: boolean }
  | { kind: 'drop-pipe'; pipe: ObjectName; ifExists: boolean }
  | { kind: 'truncate'; table: ObjectName; ifExists: boolean }
  | { kind: 'use'; what: 'database' | 'schema' | 'warehouse' | 'role'; database?: string; name: string }
  | {
      kind: 'create-pipe';
      pipe: ObjectName;
      table: ObjectName;
      ifNotExists: boolean;
      columns: PipeColumn[] | null;
      targetColumns: string[] | null;
      matchCase: 'insensitive' | 'sensitive';
      definition: string;
    }
  | { kind: 'show-pipes'; like: string | null; database: string | null; schema: string | null }
  | { kind: 'show-grants' }
  | { kind: 'describe-table'; table: ObjectName }
  | { kind: 'transaction'; action: 'begin' | 'commit' | 'rollback' }
  | { kind: 'wait'; ms: number; label: string };

export interface TranslatedStatement {
  readonly text: string;
  readonly command: Command;
}

const KEYWORDS = new Set(
  (
    'SELECT FROM WHERE GROUP BY ORDER HAVING QUALIFY LIMIT OFFSET AS ON AND OR NOT IN IS NULL TRUE FALSE CASE WHEN ' +
    'THEN ELSE END DISTINCT ALL UNION EXCEPT INTERSECT MINUS JOIN INNER LEFT RIGHT FULL OUTER CROSS USING OVER ' +
    'PARTITION ROWS RANGE BETWEEN UNBOUNDED PRECEDING FOLLOWING CURRENT ROW ASC DESC NULLS FIRST LAST WITH VALUES ' +
    'INTO SET EXISTS LIKE ILIKE INSERT UPDATE DELETE MERGE MATCHED ANY DEFAULT LATERAL NATURAL RECURSIVE TOP IGNORE RESPECT'
  ).split(' '),
);

/** Words after which a table reference follows. */
const TABLE_INTRODUCERS = new Set(['FROM', 'JOIN', 'INTO', 'UPDATE', 'USING']);

/** Functions DuckDB implements with Snowflake's meaning; passed through unchanged. */
const PASSTHROUGH = new Set(
  (
    'COALESCE MAX MIN COUNT SUM AVG ROW_NUMBER RANK DENSE_RANK UPPER LOWER LENGTH ABS ROUND FLOOR CEIL CONCAT TRIM ' +
    'LTRIM RTRIM SUBSTR SUBSTRING REPLACE GREATEST LEAST NULLIF ANY_VALUE LEAD LAG FIRST_VALUE LAST_VALUE MOD ' +
    'STARTSWITH ENDSWITH'
  ).split(' '),
);

/** Parses one request into statements; throws SqlFailure on anything outside the supported subset. */
export function translateRequest(sql: string, ctx: TranslateContext): TranslatedStatement[] {
  let parts: StatementText[];
  try {
    parts = splitStatements(sql);
  } catch (err) {
    if (err instanceof SqlSyntaxError) throw syntaxFailure(err);
    throw err;
  }
  return parts.map((p) => ({ text: p.text, command: translateStatement(p, ctx) }));
}

export function translateOne(sql: string, ctx: TranslateContext): Command {
  const all = translateRequest(sql, ctx);
  if (all.length !== 1) throw SqlFailure.compilation('expected exactly one statement');
  return all[0]!.command;
}

function syntaxFailure(err: SqlSyntaxError): SqlFailure {
  return SqlFailure.compilation(`syntax error line 1 at position ${err.pos} ${err.message}.`);
}

/**
 * Translates one statement, updating the session context the caller threads
 * through (USE changes what later statements of the request resolve against).
 */
export function translateStatement(stmt: StatementText, ctx: TranslateContext): Command {
  try {
    return new Translator(stmt.tokens, ctx, stmt.text).statement();
  } catch (err) {
    if (err instanceof SqlSyntaxError) throw syntaxFailure(err);
    throw err;
  }
}

class Translator {
  #i = 0;
  readonly #cteNames = new Set<string>();
  /** Tables the statement reads or writes (result columns take their Snowflake types from them). */
  readonly #tables: ObjectName[] = [];
  /** Token index → alias to emit after it (unaliased select items, see nameSelectItems). */
  readonly #aliasAfter = new Map<number, string>();

  constructor(
    readonly tokens: readonly Token[],
    readonly ctx: TranslateContext,
    readonly text: string,
  ) {}

  // --- cursor -------------------------------------------------------------

  peek(ahead = 0): Token {
    return this.tokens[Math.min(this.#i + ahead, this.tokens.length - 1)]!;
  }

  next(): Token {
    const t = this.peek();
    if (t.kind !== 'eof') this.#i++;
    return t;
  }

  isWord(word: string, ahead = 0): boolean {
    const t = this.peek(ahead);
    return t.kind === 'word' && t.value === word;
  }

  isOp(op: string, ahead = 0): boolean {
    const t = this.peek(ahead);
    return t.kind === 'op' && t.value === op;
  }

  acceptWord(...words: string[]): boolean {
    for (let k = 0; k < words.length; k++) if (!this.isWord(words[k]!, k)) return false;
    this.#i += words.length;
    return true;
  }

  expectWord(word: string): void {
    if (!this.acceptWord(word)) throw this.unexpected();
  }

  expectOp(op: string): void {
    if (!this.isOp(op)) throw this.unexpected();
    this.next();
  }

  expectEnd(): void {
    if (this.peek().kind !== 'eof') throw this.unexpected();
  }

  unexpected(): SqlFailure {
    const t = this.peek();
    return SqlFailure.compilation(
      t.kind === 'eof'
        ? `syntax error line 1 at position ${t.pos} unexpected '<EOF>'.`
        : `syntax error line 1 at position ${t.pos} unexpected '${t.text}'.`,
    );
  }

  /** An identifier: unquoted → upper-case, quoted → as written (§6.3). */
  identifier(): string {
    const t = this.peek();
    if (t.kind === 'quoted') {
      this.next();
      return t.value;
    }
    if (t.kind === 'word' && !KEYWORDS.has(t.value)) {
      this.next();
      return t.value;
    }
    throw this.unexpected();
  }

  identifierChain(): string[] {
    const parts = [this.identifier()];
    while (this.isOp('.') && (this.peek(1).kind === 'word' || this.peek(1).kind === 'quoted')) {
      this.next();
      parts.push(this.identifier());
    }
    return parts;
  }

  objectName(parts: string[]): ObjectName {
    if (parts.length > 3) throw SqlFailure.compilation(`invalid object name '${parts.join('.')}'`);
    const name = parts[parts.length - 1]!;
    const schema = parts.length >= 2 ? parts[parts.length - 2]! : this.ctx.schema;
    const database = parts.length === 3 ? parts[0]! : this.ctx.database;
    if (database === null) {
      throw SqlFailure.compilation(
        "Cannot perform operation. This session does not have a current database. Call 'USE DATABASE', or use a qualified name.",
        '090105',
        '22000',
      );
    }
    if (schema === null) {
      throw SqlFailure.compilation(
        "Cannot perform operation. This session does not have a current schema. Call 'USE SCHEMA', or use a qualified name.",
        '090106',
        '22000',
      );
    }
    return { database, schema, name };
  }

  // --- statements ---------------------------------------------------------

  statement(): Command {
    const first = this.peek();
    if (first.kind !== 'word') throw this.unexpected();
    if ((first.value === 'SELECT' || first.value === 'CALL') && this.isWord('SYSTEM$WAIT', 1)) return this.wait();
    switch (first.value) {
      case 'SELECT':
      case 'WITH':
        return { kind: 'query', sql: this.renderQuery(), verb: 'select', tables: this.#tables };
      case 'INSERT':
        return { kind: 'query', sql: this.renderQuery(), verb: 'insert', tables: this.#tables };
      case 'UPDATE':
        return { kind: 'query', sql: this.renderQuery(), verb: 'update', tables: this.#tables };
      case 'DELETE':
        return { kind: 'query', sql: this.renderQuery(), verb: 'delete', tables: this.#tables };
      case 'MERGE':
        return this.merge();
      case 'CREATE':
        return this.create();
      case 'ALTER':
        return this.alter();
      case 'DROP':
        return this.drop();
      case 'TRUNCATE':
        return this.truncate();
      case 'USE':
        return this.use();
      case 'SHOW':
        return this.show();
      case 'DESCRIBE':
      case 'DESC':
        return this.describe();
      case 'BEGIN':
      case 'START':
        this.next();
        if (first.value === 'START') this.expectWord('TRANSACTION');
        else if (!this.acceptWord('TRANSACTION')) this.acceptWord('WORK');
        this.expectEnd();
        return { kind: 'transaction', action: 'begin' };
      case 'COMMIT':
      case 'ROLLBACK':
        this.next();
        this.acceptWord('WORK');
        this.expectEnd();
        return { kind: 'transaction', action: first.value === 'COMMIT' ? 'commit' : 'rollback' };
      default:
        throw SqlFailure.unsupported(`statement '${first.text}'`, first.pos);
    }
  }

  /** `SYSTEM$WAIT(n [, 'SECONDS'|'MILLISECONDS'|'MINUTES'])`: a statement that just takes time (tests of 202, cancel, timeout). */
  wait(): Command {
    this.next();
    const name = this.next();
    this.expectOp('(');
    const n = this.next();
    if (n.kind !== 'number') throw this.unexpected();
    let unit = 'SECONDS';
    if (this.isOp(',')) {
      this.next();
      const u = this.next();
      if (u.kind !== 'string') throw this.unexpected();
      unit = u.value.toUpperCase();
    }
    this.expectOp(')');
    this.expectEnd();
    const factor = { SECONDS: 1000, MILLISECONDS: 1, MINUTES: 60_000, HOURS: 3_600_000 }[unit];
    if (factor === undefined) throw SqlFailure.compilation(`invalid time unit '${unit}' for ${name.text}`);
    return { kind: 'wait', ms: Number(n.value) * factor, label: `${name.value}(${n.value})` };
  }

  renderQuery(): string {
    // CTE names are not tables; they must not get the database/schema prefix.
    for (let k = 0; k + 2 < this.tokens.length; k++) {
      const t = this.tokens[k]!;
      const prev = this.tokens[k - 1];
      if ((t.kind === 'word' || t.kind === 'quoted') && this.tokens[k + 1]?.value === 'AS' && this.tokens[k + 2]?.value === '(') {
        if (prev && (prev.value === 'WITH' || prev.value === ',' || prev.value === 'RECURSIVE')) {
          this.#cteNames.add(t.kind === 'quoted' ? t.value : t.value);
        }
      }
    }
    if (this.isWord('SELECT')) this.nameSelectItems();
    const sql = this.seq(() => false);
    this.expectEnd();
    return sql;
  }

  /**
   * Snowflake names an unaliased result column after its expression text,
   * upper-cased (`SELECT current_user()` → `CURRENT_USER()`); DuckDB would
   * name it differently. Records, for each such item of the top-level select
   * list, the alias to emit after its last token.
   */
  nameSelectItems(): void {
    const toks = this.tokens;
    let k = 1;
    while (toks[k]?.kind === 'word' && (toks[k]!.value === 'DISTINCT' || toks[k]!.value === 'ALL')) k++;
    const ENDS = new Set(['FROM', 'WHERE', 'GROUP', 'HAVING', 'QUALIFY', 'ORDER', 'LIMIT', 'UNION', 'EXCEPT', 'INTERSECT', 'MINUS']);
    const items: [number, number][] = [];
    let depth = 0;
    let start = k;
    for (; k < toks.length; k++) {
      const t = toks[k]!;
      if (t.kind === 'eof' || (depth === 0 && t.kind === 'word' && ENDS.has(t.value))) break;
      if (t.kind === 'op' && (t.value === '(' || t.value === '[')) depth++;
      else if (t.kind === 'op' && (t.value === ')' || t.value === ']')) depth--;
      else if (depth === 0 && t.kind === 'op' && t.value === ',') {
        items.push([start, k - 1]);
        start = k + 1;
      }
    }
    if (k > start) items.push([start, k - 1]);
    for (const [a, b] of items) {
      const last = toks[b]!;
      const prev = toks[b - 1];
      const isIdent = (t: Token | undefined) => t !== undefined && (t.kind === 'quoted' || (t.kind === 'word' && !KEYWORDS.has(t.value)));
      if (b - a >= 1 && isIdent(last) && prev && (prev.value === 'AS' || prev.kind !== 'op')) continue; // aliased
      if (b - a >= 1 && isIdent(last) && prev?.kind === 'op' && prev.value === ')') continue; // `f(x) alias`
      const plainColumn = toks.slice(a, b + 1).every((t, j) => (j % 2 === 0 ? isIdent(t) || t.value === '*' : t.value === '.'));
      if (plainColumn) continue;
      this.#aliasAfter.set(b, this.text.slice(toks[a]!.pos - toks[0]!.pos, last.pos - toks[0]!.pos + last.text.length).toUpperCase());
    }
  }

  merge(): Command {
    this.expectWord('MERGE');
    this.expectWord('INTO');
    const target = this.tableRef();
    this.acceptWord('AS');
    const targetAlias = this.peek().kind === 'word' && !KEYWORDS.has(this.peek().value) ? this.identifier() : null;
    this.expectWord('USING');
    let source: string;
    if (this.isOp('(')) {
      this.next();
      this.collectCtes();
      source = `(${this.seq((t) => t.value === ')')})`;
      this.expectOp(')');
    } else {
      source = this.tableRef();
    }
    this.acceptWord('AS');
    const sourceAlias = this.peek().kind === 'word' && !KEYWORDS.has(this.peek().value) ? this.identifier() : null;
    this.expectWord('ON');
    const onSql = this.seq((t) => t.kind === 'word' && t.value === 'WHEN');
    const clauses: MergeClause[] = [];
    const clauseSql: string[] = [];
    while (this.acceptWord('WHEN')) {
      const matched = !this.acceptWord('NOT');
      this.expectWord('MATCHED');
      let conditionSql: string | null = null;
      if (this.acceptWord('AND')) conditionSql = this.seq((t) => t.kind === 'word' && t.value === 'THEN');
      this.expectWord('THEN');
      let action: MergeClause['action'];
      let body: string;
      if (matched && this.acceptWord('UPDATE')) {
        this.expectWord('SET');
        action = 'update';
        body = `UPDATE SET ${this.assignments((t) => t.kind === 'word' && t.value === 'WHEN')}`;
      } else if (matched && this.acceptWord('DELETE')) {
        action = 'delete';
        body = 'DELETE';
      } else if (!matched && this.acceptWord('INSERT')) {
        action = 'insert';
        let cols = '';
        if (this.isOp('(')) {
          this.next();
          const names: string[] = [];
          do names.push(quoteId(this.identifier()));
          while (this.isOp(',') && this.next());
          this.expectOp(')');
          cols = ` (${names.join(', ')})`;
        }
        this.expectWord('VALUES');
        this.expectOp('(');
        const values = this.seq((t) => t.value === ')');
        this.expectOp(')');
        body = `INSERT${cols} VALUES (${values})`;
      } else {
        throw this.unexpected();
      }
      clauses.push({ matched, conditionSql, action });
      clauseSql.push(`WHEN ${matched ? '' : 'NOT '}MATCHED${conditionSql ? ` AND ${conditionSql}` : ''} THEN ${body}`);
    }
    this.expectEnd();
    if (clauses.length === 0) throw this.unexpected();
    // Snowflake rejects an unconditional clause that is not the last of its kind (it would hide later ones).
    for (const kind of [true, false]) {
      const same = clauses.filter((c) => c.matched === kind);
      if (same.slice(0, -1).some((c) => c.conditionSql === null)) {
        throw SqlFailure.compilation('Unreachable WHEN clause: an unconditional WHEN clause must be the last of its kind.');
      }
    }
    const tAlias = targetAlias ?? target.split('.').pop()!;
    const sAlias = sourceAlias ?? (source.startsWith('(') ? '__src' : source.split('.').pop()!);
    const sql =
      `MERGE INTO ${target}${targetAlias ? ` AS ${quoteId(targetAlias)}` : ''} USING ${source}` +
      `${sourceAlias ? ` AS ${quoteId(sourceAlias)}` : source.startsWith('(') ? ' AS "__src"' : ''} ON ${onSql} ${clauseSql.join(' ')}`;
    return {
      kind: 'merge',
      sql,
      target,
      targetAlias: tAlias.startsWith('"') ? tAlias : quoteId(tAlias),
      source,
      sourceAlias: sAlias.startsWith('"') ? sAlias : quoteId(sAlias),
      onSql,
      clauses,
    };
  }

  collectCtes(): void {
    for (let k = this.#i; k + 2 < this.tokens.length; k++) {
      const t = this.tokens[k]!;
      const prev = this.tokens[k - 1];
      if ((t.kind === 'word' || t.kind === 'quoted') && this.tokens[k + 1]?.value === 'AS' && this.tokens[k + 2]?.value === '(') {
        if (prev && (prev.value === 'WITH' || prev.value === ',')) this.#cteNames.add(t.value);
      }
    }
  }

  create(): Command {
    const start = this.peek().pos;
    this.expectWord('CREATE');
    const orReplace = this.acceptWord('OR', 'REPLACE');
    this.acceptWord('TRANSIENT');
    if (this.acceptWord('DATABASE')) {
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const name = this.identifier();
      this.skipOptions();
      return { kind: 'create-database', name, ifNotExists, orReplace };
    }
    if (this.acceptWord('SCHEMA')) {
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const parts = this.identifierChain();
      if (parts.length > 2) throw SqlFailure.compilation(`invalid schema name '${parts.join('.')}'`);
      const database = parts.length === 2 ? parts[0]! : this.ctx.database;
      if (database === null) return this.objectName(parts) as never;
      this.skipOptions();
      return { kind: 'create-schema', database, name: parts[parts.length - 1]!, ifNotExists };
    }
    if (this.acceptWord('WAREHOUSE')) {
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const name = this.identifier();
      this.skipOptions();
      return { kind: 'create-warehouse', name, ifNotExists };
    }
    if (this.acceptWord('TABLE')) {
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const table = this.objectName(this.identifierChain());
      this.expectOp('(');
      const columns: ColumnDef[] = [];
      for (;;) {
        if (this.isWord('PRIMARY') || this.isWord('CONSTRAINT') || this.isWord('UNIQUE')) {
          // Snowflake does not enforce PRIMARY KEY/UNIQUE; the emulator records nothing, like the service.
          this.skipBalanced();
        } else {
          columns.push(this.columnDef());
        }
        if (this.isOp(',')) {
          this.next();
          continue;
        }
        break;
      }
      this.expectOp(')');
      this.skipOptions();
      return { kind: 'create-table', table, columns, ifNotExists, orReplace };
    }
    if (this.acceptWord('PIPE')) {
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const pipe = this.objectName(this.identifierChain());
      while (!this.isWord('AS') && this.peek().kind !== 'eof') this.next(); // pipe options
      this.expectWord('AS');
      const definitionStart = this.peek().pos;
      this.expectWord('COPY');
      this.expectWord('INTO');
      const table = this.objectName(this.identifierChain());
      let targetColumns: string[] | null = null;
      if (this.isOp('(')) {
        this.next();
        targetColumns = [];
        do targetColumns.push(this.identifier());
        while (this.isOp(',') && this.next());
        this.expectOp(')');
      }
      this.expectWord('FROM');
      let columns: PipeColumn[] | null = null;
      if (this.isOp('(')) {
        this.next();
        this.expectWord('SELECT');
        columns = [];
        do columns.push(this.pipeColumn());
        while (this.isOp(',') && this.next());
        this.expectWord('FROM');
        this.dataSource();
        this.expectOp(')');
      } else {
        this.dataSource();
      }
      let matchCase: 'insensitive' | 'sensitive' = 'insensitive';
      while (this.peek().kind !== 'eof') {
        if (this.acceptWord('MATCH_BY_COLUMN_NAME')) {
          this.expectOp('=');
          const v = this.next().value.toUpperCase();
          if (v === 'CASE_SENSITIVE') matchCase = 'sensitive';
          else if (v !== 'CASE_INSENSITIVE') throw SqlFailure.unsupported(`MATCH_BY_COLUMN_NAME = ${v}`);
        } else {
          throw SqlFailure.unsupported(`pipe option '${this.peek().text}'`, this.peek().pos);
        }
      }
      if (targetColumns && columns && targetColumns.length !== columns.length) {
        throw SqlFailure.compilation('Insert value list does not match column list', '002020', '21S01');
      }
      return {
        kind: 'create-pipe',
        pipe,
        table,
        ifNotExists,
        columns,
        targetColumns,
        matchCase,
        definition: this.text.slice(definitionStart - start).trim(),
      };
    }
    throw SqlFailure.unsupported(`CREATE ${this.peek().text}`, this.peek().pos);
  }

  pipeColumn(): PipeColumn {
    const t = this.next();
    if (t.kind !== 'param' || t.value !== '$1') throw SqlFailure.unsupported('pipe columns other than $1:<path>', t.pos);
    const path = this.pathAfterColon();
    if (path.length === 0) throw SqlFailure.unsupported('pipe column $1 without a path', t.pos);
    let cast: SfType | null = null;
    if (this.isOp('::')) {
      this.next();
      cast = this.typeName();
    }
    let column: string | null = null;
    if (this.acceptWord('AS')) column = this.identifier();
    return { column, path, cast };
  }

  dataSource(): void {
    this.expectWord('TABLE');
    this.expectOp('(');
    this.expectWord('DATA_SOURCE');
    this.expectOp('(');
    this.expectWord('TYPE');
    this.expectOp('=>');
    const t = this.next();
    if (t.kind !== 'string' || t.value.toUpperCase() !== 'STREAMING')
      throw SqlFailure.unsupported('DATA_SOURCE other than STREAMING', t.pos);
    this.expectOp(')');
    this.expectOp(')');
  }

  columnDef(): ColumnDef {
    const name = this.identifier();
    const type = this.typeName();
    let notNull = false;
    let defaultSql: string | null = null;
    for (;;) {
      if (this.acceptWord('NOT', 'NULL')) notNull = true;
      else if (this.acceptWord('NULL')) notNull = false;
      else if (this.acceptWord('DEFAULT')) defaultSql = this.term();
      else if (this.acceptWord('PRIMARY', 'KEY') || this.acceptWord('UNIQUE')) continue;
      else if (this.acceptWord('COMMENT')) this.next();
      else if (this.acceptWord('COLLATE')) this.next();
      else break;
    }
    return { name, type, notNull, defaultSql };
  }

  typeName(): SfType {
    const t = this.next();
    if (t.kind !== 'word') throw SqlFailure.compilation(`syntax error line 1 at position ${t.pos} unexpected '${t.text}'.`);
    let name = t.value;
    if (name === 'DOUBLE' && this.acceptWord('PRECISION')) name = 'DOUBLE';
    if ((name === 'CHARACTER' || name === 'CHAR') && this.acceptWord('VARYING')) name = 'VARCHAR';
    const args: number[] = [];
    if (this.isOp('(')) {
      this.next();
      do {
        const n = this.next();
        if (n.kind !== 'number') throw SqlFailure.compilation(`syntax error line 1 at position ${n.pos} unexpected '${n.text}'.`);
        args.push(Number(n.value));
      } while (this.isOp(',') && this.next());
      this.expectOp(')');
    }
    return sfType(name, args);
  }

  /** Skips table/database options we do not model (COMMENT = '...', DATA_RETENTION_TIME_IN_DAYS = 1, ...). */
  skipOptions(): void {
    while (this.peek().kind !== 'eof') {
      const t = this.next();
      if (t.kind === 'word' && (t.value === 'CLONE' || t.value === 'AS' || t.value === 'LIKE')) {
        throw SqlFailure.unsupported(t.value, t.pos);
      }
    }
  }

  skipBalanced(): void {
    let depth = 0;
    while (this.peek().kind !== 'eof') {
      if (depth === 0 && (this.isOp(',') || this.isOp(')'))) return;
      const t = this.next();
      if (t.value === '(') depth++;
      if (t.value === ')') depth--;
    }
  }

  alter(): Command {
    this.expectWord('ALTER');
    if (!this.acceptWord('TABLE')) throw SqlFailure.unsupported(`ALTER ${this.peek().text}`, this.peek().pos);
    this.acceptWord('IF', 'EXISTS');
    const table = this.objectName(this.identifierChain());
    if (this.acceptWord('ADD')) {
      this.acceptWord('COLUMN');
      const ifNotExists = this.acceptWord('IF', 'NOT', 'EXISTS');
      const columns = [this.columnDef()];
      while (this.isOp(',')) {
        this.next();
        this.acceptWord('COLUMN');
        columns.push(this.columnDef());
      }
      this.expectEnd();
      return { kind: 'add-columns', table, columns, ifNotExists };
    }
    if (this.acceptWord('ALTER') || this.acceptWord('MODIFY')) {
      this.acceptWord('COLUMN');
      const column = this.identifier();
      if (!this.acceptWord('SET', 'DATA', 'TYPE')) this.expectWord('TYPE');
      const type = this.typeName();
      this.expectEnd();
      return { kind: 'alter-column-type', table, column, type };
    }
    if (this.acceptWord('DROP')) {
      this.acceptWord('COLUMN');
      const ifExists = this.acceptWord('IF', 'EXISTS');
      const column = this.identifier();
      this.expectEnd();
      return { kind: 'drop-column', table, column, ifExists };
    }
    throw SqlFailure.unsupported(`ALTER TABLE ... ${this.peek().text}`, this.peek().pos);
  }

  drop(): Command {
    this.expectWord('DROP');
    if (this.acceptWord('PIPE')) {
      const ifExists = this.acceptWord('IF', 'EXISTS');
      const pipe = this.objectName(this.identifierChain());
      this.expectEnd();
      return { kind: 'drop-pipe', pipe, ifExists };
    }
    if (!this.acceptWord('TABLE')) throw SqlFailure.unsupported(`DROP ${this.peek().text}`, this.peek().pos);
    const ifExists = this.acceptWord('IF', 'EXISTS');
    const table = this.objectName(this.identifierChain());
    if (!this.acceptWord('CASCADE')) this.acceptWord('RESTRICT');
    this.expectEnd();
    return { kind: 'drop-table', table, ifExists };
  }

  truncate(): Command {
    this.expectWord('TRUNCATE');
    this.acceptWord('TABLE');
    const ifExists = this.acceptWord('IF', 'EXISTS');
    const table = this.objectName(this.identifierChain());
    this.expectEnd();
    return { kind: 'truncate', table, ifExists };
  }

  use(): Command {
    this.expectWord('USE');
    let what: 'database' | 'schema' | 'warehouse' | 'role' | null = null;
    if (this.acceptWord('DATABASE')) what = 'database';
    else if (this.acceptWord('SCHEMA')) what = 'schema';
    else if (this.acceptWord('WAREHOUSE')) what = 'warehouse';
    else if (this.acceptWord('ROLE')) what = 'role';
    const parts = this.identifierChain();
    this.expectEnd();
    if (what === null) what = parts.length === 2 ? 'schema' : 'database';
    if (what === 'schema') {
      if (parts.length > 2) throw SqlFailure.compilation(`invalid schema name '${parts.join('.')}'`);
      const database = parts.length === 2 ? parts[0]! : this.ctx.database;
      if (database === null) return this.objectName(['x']) as never;
      return { kind: 'use', what, database, name: parts[parts.length - 1]! };
    }
    if (parts.length !== 1) throw this.unexpected();
    return { kind: 'use', what, name: parts[0]! };
  }

  show(): Command {
    this.expectWord('SHOW');
    if (this.acceptWord('PIPES')) {
      let like: string | null = null;
      let database: string | null = null;
      let schema: string | null = null;
      if (this.acceptWord('LIKE')) {
        const t = this.next();
        if (t.kind !== 'string') throw this.unexpected();
        like = t.value;
      }
      if (this.acceptWord('IN')) {
        if (this.acceptWord('ACCOUNT')) {
          // all pipes
        } else if (this.acceptWord('DATABASE')) {
          database = this.identifier();
        } else {
          this.acceptWord('SCHEMA');
          const parts = this.identifierChain();
          database = parts.length === 2 ? parts[0]! : this.ctx.database;
          schema = parts[parts.length - 1]!;
        }
      }
      this.expectEnd();
      return { kind: 'show-pipes', like, database, schema };
    }
    if (this.acceptWord('GRANTS')) {
      while (this.peek().kind !== 'eof') this.next();
      return { kind: 'show-grants' };
    }
    throw SqlFailure.unsupported(`SHOW ${this.peek().text}`, this.peek().pos);
  }

  describe(): Command {
    this.next();
    this.expectWord('TABLE');
    const table = this.objectName(this.identifierChain());
    if (this.acceptWord('TYPE')) {
      this.expectOp('=');
      this.next();
    }
    this.expectEnd();
    return { kind: 'describe-table', table };
  }

  // --- expressions ----------------------------------------------------------

  /** `a = expr, b = expr` of UPDATE/MERGE; Snowflake allows `t.col` targets, DuckDB wants bare names. */
  assignments(stop: (t: Token) => boolean): string {
    const out: string[] = [];
    for (;;) {
      const chain = this.identifierChain();
      this.expectOp('=');
      const value = this.seq((t) => stop(t) || (t.kind === 'op' && t.value === ','));
      out.push(`${quoteId(chain[chain.length - 1]!)} = ${value}`);
      if (this.isOp(',')) {
        this.next();
        continue;
      }
      return out.join(', ');
    }
  }

  /** Renders tokens until `stop` matches at this nesting level (or a closing paren / end). */
  seq(stop: (t: Token) => boolean): string {
    const out: string[] = [];
    while (this.peek().kind !== 'eof' && !stop(this.peek()) && !this.isOp(')')) {
      const t = this.peek();
      if (t.kind === 'word' && TABLE_INTRODUCERS.has(t.value)) {
        this.next();
        out.push(t.value);
        if (t.value === 'UPDATE') {
          out.push(this.tableRef());
          if (this.peek().kind === 'word' && !KEYWORDS.has(this.peek().value)) out.push(quoteId(this.identifier()));
          else if (this.acceptWord('AS')) out.push('AS', quoteId(this.identifier()));
          this.expectWord('SET');
          out.push(
            'SET',
            this.assignments((x) => x.kind === 'word' && (x.value === 'WHERE' || x.value === 'FROM')),
          );
          continue;
        }
        if (this.peek().kind === 'word' || this.peek().kind === 'quoted') {
          if (!(this.peek().kind === 'word' && KEYWORDS.has(this.peek().value))) {
            out.push(this.tableRef(t.value === 'INTO'));
            // FROM a, b: later entries of the list are tables too
            while (t.value === 'FROM') {
              if (this.acceptWord('AS')) out.push('AS');
              if (this.peek().kind === 'word' && !KEYWORDS.has(this.peek().value)) out.push(quoteId(this.identifier()));
              else if (this.peek().kind === 'quoted') out.push(quoteId(this.identifier()));
              if (this.isOp(',') && (this.peek(1).kind === 'word' || this.peek(1).kind === 'quoted')) {
                this.next();
                out.push(',', this.tableRef());
              } else {
                break;
              }
            }
          }
        }
        continue;
      }
      out.push(this.term());
      const alias = this.#aliasAfter.get(this.#i - 1);
      if (alias !== undefined) {
        this.#aliasAfter.delete(this.#i - 1);
        out.push(`AS ${quoteId(alias)}`);
      }
    }
    return out.join(' ');
  }

  tableRef(columnListMayFollow = false): string {
    const start = this.peek();
    const parts = this.identifierChain();
    if (this.isOp('(') && !columnListMayFollow) throw SqlFailure.unsupported(`table function '${parts.join('.')}'`, start.pos);
    if (parts.length === 1 && this.#cteNames.has(parts[0]!)) return quoteId(parts[0]!);
    const o = this.objectName(parts);
    this.#tables.push(o);
    return `${quoteId(`${o.database}.${o.schema}`)}.${quoteId(o.name)}`;
  }

  /** One term: a primary with its postfix operators, or a single operator/keyword token. */
  term(): string {
    const t = this.peek();
    let primary: string;
    let isJson = false;
    if (t.kind === 'op') {
      if (t.value === '(') {
        this.next();
        if (this.isWord('SELECT') || this.isWord('WITH')) this.collectCtes();
        primary = `(${this.seq(() => false)})`;
        this.expectOp(')');
      } else if (t.value === ':' || t.value === '::' || t.value === '=>' || t.value === '{' || t.value === '}' || t.value === ';') {
        throw this.unexpected();
      } else {
        this.next();
        return t.value === '!=' ? '<>' : t.value;
      }
    } else if (t.kind === 'string') {
      this.next();
      primary = quoteStr(t.value);
    } else if (t.kind === 'number') {
      this.next();
      primary = t.text;
    } else if (t.kind === 'param') {
      this.next();
      primary = this.binding(t);
    } else if (t.kind === 'word' && t.value === 'CASE') {
      this.next();
      const parts = ['CASE'];
      while (!this.isWord('END')) {
        if (this.peek().kind === 'eof') throw this.unexpected();
        const inner = this.seq(
          (x) => x.kind === 'word' && (x.value === 'WHEN' || x.value === 'THEN' || x.value === 'ELSE' || x.value === 'END'),
        );
        parts.push(inner);
        if (!this.isWord('END')) parts.push(this.next().value);
      }
      this.next();
      parts.push('END');
      primary = `(${parts.join(' ')})`;
    } else if (t.kind === 'word' && KEYWORDS.has(t.value)) {
      this.next();
      if (t.value === 'MINUS') return 'EXCEPT';
      return t.value;
    } else if (t.kind === 'word' && this.isOp('(', 1)) {
      this.next();
      ({ sql: primary, json: isJson } = this.functionCall(t));
    } else if (t.kind === 'word' && (t.value === 'CURRENT_TIMESTAMP' || t.value === 'SYSDATE' || t.value === 'CURRENT_DATE')) {
      this.next();
      primary = this.specialNoArgs(t.value);
    } else if (t.kind === 'word' || t.kind === 'quoted') {
      const parts: string[] = [quoteId(this.identifier())];
      while (this.isOp('.')) {
        const n = this.peek(1);
        if (n.kind === 'word' || n.kind === 'quoted') {
          this.next();
          parts.push(quoteId(this.identifier()));
        } else if (n.kind === 'op' && n.value === '*') {
          this.next();
          this.next();
          parts.push('*');
          break;
        } else {
          break;
        }
      }
      primary = parts.join('.');
    } else {
      throw this.unexpected();
    }
    // postfix: variant paths and casts
    for (;;) {
      if (this.isOp(':')) {
        const path = this.pathAfterColon();
        primary = `json_extract(${primary}, ${quoteStr(jsonPath(path))})`;
        isJson = true;
      } else if (this.isOp('::')) {
        this.next();
        const type = this.typeName();
        primary = castSql(primary, type, false);
        isJson = type.base === 'VARIANT' || type.base === 'ARRAY' || type.base === 'OBJECT';
      } else if (isJson && this.isOp('[')) {
        this.next();
        const idx = this.next();
        if (idx.kind !== 'number' && idx.kind !== 'string') throw this.unexpected();
        this.expectOp(']');
        primary = `json_extract(${primary}, ${quoteStr(jsonPath([idx.kind === 'number' ? Number(idx.value) : idx.value]))})`;
      } else {
        return primary;
      }
    }
  }

  /** After `:` — `key`, `"key"`, then `.key`, `["key"]`, `[0]` segments. Consumes the colon. */
  pathAfterColon(): (string | number)[] {
    this.expectOp(':');
    const path: (string | number)[] = [];
    const first = this.next();
    if (first.kind === 'word') path.push(first.text);
    else if (first.kind === 'quoted') path.push(first.value);
    else throw SqlFailure.compilation(`syntax error line 1 at position ${first.pos} unexpected '${first.text}'.`);
    for (;;) {
      if (this.isOp('.') && (this.peek(1).kind === 'word' || this.peek(1).kind === 'quoted')) {
        this.next();
        const k = this.next();
        path.push(k.kind === 'word' ? k.text : k.value);
      } else if (this.isOp('[')) {
        this.next();
        const k = this.next();
        if (k.kind === 'number') path.push(Number(k.value));
        else if (k.kind === 'string' || k.kind === 'quoted') path.push(k.value);
        else throw this.unexpected();
        this.expectOp(']');
      } else {
        return path;
      }
    }
  }

  binding(t: Token): string {
    if (t.value !== '?') throw SqlFailure.unsupported(`positional column ${t.text} outside a pipe definition`, t.pos);
    const index = this.tokens.slice(0, this.#i).filter((x) => x.kind === 'param' && x.value === '?').length;
    const b = this.ctx.bindings?.[String(index)];
    if (!b) throw new SqlFailure('002049', '42601', `SQL compilation error: error line 1 at position ${t.pos}\nBind variable ? not set.`);
    if (b.value === null) return 'NULL';
    switch (b.type.toUpperCase()) {
      case 'FIXED':
      case 'REAL':
      case 'DECFLOAT':
        if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(b.value)) {
          throw new SqlFailure('100037', '22018', `${b.type} value '${b.value}' is not recognized`);
        }
        return b.value;
      case 'BOOLEAN':
        return /^(true|1)$/i.test(b.value) ? 'TRUE' : 'FALSE';
      default:
        return quoteStr(b.value);
    }
  }

  specialNoArgs(name: string): string {
    switch (name) {
      case 'SYSDATE':
        return "(now() AT TIME ZONE 'UTC')";
      case 'CURRENT_DATE':
        return 'current_date';
      default:
        return 'current_timestamp';
    }
  }

  args(): { sql: string[]; tokens: Token[][] } {
    this.expectOp('(');
    const sql: string[] = [];
    const tokens: Token[][] = [];
    if (this.isOp(')')) {
      this.next();
      return { sql, tokens };
    }
    for (;;) {
      const from = this.#i;
      sql.push(this.seq((t) => t.kind === 'op' && t.value === ','));
      tokens.push(this.tokens.slice(from, this.#i));
      if (this.isOp(',')) {
        this.next();
        continue;
      }
      this.expectOp(')');
      return { sql, tokens };
    }
  }

  functionCall(nameToken: Token): { sql: string; json: boolean } {
    const name = nameToken.value;
    const ctx = this.ctx;
    if (name === 'CAST' || name === 'TRY_CAST') {
      this.expectOp('(');
      const value = this.seq((t) => t.kind === 'word' && t.value === 'AS');
      this.expectWord('AS');
      const type = this.typeName();
      this.expectOp(')');
      return {
        sql: castSql(value, type, name === 'TRY_CAST'),
        json: type.base === 'VARIANT' || type.base === 'ARRAY' || type.base === 'OBJECT',
      };
    }
    const { sql: a, tokens: rawArgs } = this.args();
    const arity = (min: number, max = min) => {
      if (a.length < min || a.length > max) {
        throw SqlFailure.compilation(
          `error line 1 at position ${nameToken.pos}\ninvalid argument count for function ${name}: ${a.length}`,
          '001044',
          '42P13',
        );
      }
    };
    const literal = (k: number): Token | undefined => (rawArgs[k]?.length === 1 ? rawArgs[k]![0] : undefined);
    if (PASSTHROUGH.has(name)) {
      // Snowflake also writes `LAST_VALUE(x) IGNORE NULLS OVER (...)`; DuckDB only takes it inside the parens.
      const nulls = this.acceptWord('IGNORE', 'NULLS') ? ' IGNORE NULLS' : this.acceptWord('RESPECT', 'NULLS') ? ' RESPECT NULLS' : '';
      return { sql: `${name.toLowerCase()}(${a.join(', ')}${nulls})`, json: false };
    }
    switch (name) {
      case 'IFF':
        arity(3);
        return { sql: `(CASE WHEN ${a[0]} THEN ${a[1]} ELSE ${a[2]} END)`, json: false };
      case 'NVL':
      case 'IFNULL':
        arity(2);
        return { sql: `coalesce(${a[0]}, ${a[1]})`, json: false };
      case 'PARSE_JSON':
        arity(1);
        return { sql: `sf_parse_json(${a[0]})`, json: true };
      case 'TRY_PARSE_JSON':
        // Snowflake's duplicate-key and number rules (sf_json_text, emulator/sql/json.ts); 's' is the default.
        arity(1, 2);
        return { sql: `sf_try_parse_json(${a[0]}, ${a[1] ?? "'s'"})`, json: true };
      case 'TO_VARIANT':
        arity(1);
        return { sql: `sf_variant(${a[0]})`, json: true };
      case 'TO_ARRAY':
        arity(1);
        return { sql: `sf_to_array(${a[0]})`, json: true };
      case 'TO_OBJECT':
        arity(1);
        return { sql: `sf_variant(${a[0]})`, json: true };
      case 'ARRAY_CONTAINS':
        arity(2);
        return { sql: `list_contains(CAST(${a[1]} AS JSON[]), sf_variant(${a[0]}))`, json: false };
      case 'ARRAY_CONSTRUCT':
        return { sql: a.length === 0 ? "CAST('[]' AS JSON)" : `json_array(${a.map((x) => `sf_variant(${x})`).join(', ')})`, json: true };
      case 'ARRAY_SIZE':
        arity(1);
        return { sql: `CAST(json_array_length(${a[0]}) AS DECIMAL(38,0))`, json: false };
      case 'OBJECT_CONSTRUCT':
        if (a.length % 2 !== 0) arity(a.length + 1);
        return {
          sql:
            a.length === 0
              ? "CAST('{}' AS JSON)"
              : `sf_object_construct(json_object(${a.map((x, k) => (k % 2 === 0 ? x : `sf_variant(${x})`)).join(', ')}))`,
          json: true,
        };
      case 'GET': {
        arity(2);
        const k = literal(1);
        if (!k || (k.kind !== 'string' && k.kind !== 'number')) throw SqlFailure.unsupported('GET with a non-literal key', nameToken.pos);
        return { sql: `json_extract(${a[0]}, ${quoteStr(jsonPath([k.kind === 'number' ? Number(k.value) : k.value]))})`, json: true };
      }
      case 'TO_BINARY':
      case 'TRY_TO_BINARY': {
        arity(1, 2);
        const fmt = a.length === 2 ? literal(1) : undefined;
        if (a.length === 2 && fmt?.kind !== 'string') throw SqlFailure.unsupported(`${name} with a non-literal format`, nameToken.pos);
        const f = (fmt?.value ?? 'HEX').toUpperCase();
        if (f !== 'HEX' && f !== 'BASE64' && f !== 'UTF-8' && f !== 'UTF8') throw SqlFailure.compilation(`invalid binary format '${f}'`);
        const conv = f === 'BASE64' ? `from_base64(sf_str(${a[0]}))` : f === 'HEX' ? `unhex(sf_str(${a[0]}))` : `encode(sf_str(${a[0]}))`;
        return { sql: name === 'TRY_TO_BINARY' ? `TRY(${conv})` : conv, json: false };
      }
      case 'BASE64_DECODE_BINARY':
        arity(1);
        return { sql: `from_base64(sf_str(${a[0]}))`, json: false };
      case 'TO_NUMBER':
      case 'TO_DECIMAL':
      case 'TO_NUMERIC':
      case 'TRY_TO_NUMBER':
      case 'TRY_TO_DECIMAL':
      case 'TRY_TO_NUMERIC': {
        arity(1, 3);
        const nums = [1, 2].map((k) => literal(k)).filter((x) => x !== undefined);
        if (nums.some((x) => x.kind !== 'number')) throw SqlFailure.unsupported(`${name} with a format argument`, nameToken.pos);
        const p = nums[0] ? Number(nums[0].value) : 38;
        const s = nums[1] ? Number(nums[1].value) : 0;
        return { sql: castSql(a[0]!, sfType('NUMBER', [p, s]), name.startsWith('TRY_')), json: false };
      }
      case 'TO_DOUBLE':
      case 'TRY_TO_DOUBLE':
        arity(1);
        return { sql: castSql(a[0]!, sfType('FLOAT'), name.startsWith('TRY_')), json: false };
      case 'TO_BOOLEAN':
      case 'TRY_TO_BOOLEAN':
        arity(1);
        return { sql: castSql(a[0]!, sfType('BOOLEAN'), name.startsWith('TRY_')), json: false };
      case 'TO_TIMESTAMP_TZ':
      case 'TRY_TO_TIMESTAMP_TZ':
      case 'TO_TIMESTAMP_LTZ':
      case 'TRY_TO_TIMESTAMP_LTZ':
        arity(1);
        return { sql: castSql(a[0]!, sfType('TIMESTAMP_TZ'), name.startsWith('TRY_')), json: false };
      case 'TO_TIMESTAMP':
      case 'TO_TIMESTAMP_NTZ':
      case 'TRY_TO_TIMESTAMP':
      case 'TRY_TO_TIMESTAMP_NTZ':
        arity(1);
        return { sql: castSql(a[0]!, sfType('TIMESTAMP_NTZ'), name.startsWith('TRY_')), json: false };
      case 'TO_DATE':
      case 'TRY_TO_DATE':
        arity(1);
        return { sql: castSql(a[0]!, sfType('DATE'), name.startsWith('TRY_')), json: false };
      case 'TO_TIME':
      case 'TRY_TO_TIME':
        arity(1);
        return { sql: castSql(a[0]!, sfType('TIME'), name.startsWith('TRY_')), json: false };
      case 'TO_VARCHAR':
      case 'TO_CHAR':
        arity(1);
        return { sql: `sf_str(${a[0]})`, json: false };
      case 'SYSDATE':
      case 'CURRENT_TIMESTAMP':
      case 'CURRENT_DATE':
        arity(0);
        return { sql: this.specialNoArgs(name), json: false };
      case 'CURRENT_USER':
        arity(0);
        return { sql: quoteStr(ctx.user), json: false };
      case 'CURRENT_ROLE':
        arity(0);
        return { sql: quoteStr(ctx.role), json: false };
      case 'CURRENT_WAREHOUSE':
        arity(0);
        return { sql: ctx.warehouse === null ? 'CAST(NULL AS VARCHAR)' : quoteStr(ctx.warehouse), json: false };
      case 'CURRENT_DATABASE':
        arity(0);
        return { sql: ctx.database === null ? 'CAST(NULL AS VARCHAR)' : quoteStr(ctx.database), json: false };
      case 'CURRENT_SCHEMA':
        arity(0);
        return { sql: ctx.schema === null ? 'CAST(NULL AS VARCHAR)' : quoteStr(ctx.schema), json: false };
      case 'CURRENT_ACCOUNT':
        arity(0);
        return { sql: quoteStr(ctx.account), json: false };
      case 'CURRENT_VERSION':
        arity(0);
        return { sql: quoteStr(EMULATED_VERSION), json: false };
      case 'ARRAY_AGG':
        arity(1);
        return { sql: `to_json(list(sf_variant(${a[0]})))`, json: true };
      default:
        throw SqlFailure.compilation(`error line 1 at position ${nameToken.pos}\nUnknown function ${name}`, '002140', '42601');
    }
  }
}

/** The version string CURRENT_VERSION() returns; it names the emulator so nobody mistakes it for the service. */
export const EMULATED_VERSION = '9.0.0-floe-emulator';

/** `$."a"[0]."b"` for DuckDB's json_extract. Snowflake path keys are case-sensitive, so no folding. */
export function jsonPath(path: readonly (string | number)[]): string {
  return '$' + path.map((p) => (typeof p === 'number' ? `[${p}]` : `."${p.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`)).join('');
}

/** A cast with Snowflake's semantics on top of DuckDB (macros defined by the engine). */
export function castSql(value: string, type: SfType, tryCast: boolean): string {
  switch (type.base) {
    case 'VARCHAR':
      return `sf_str(${value})`;
    case 'VARIANT':
    case 'OBJECT':
      return `sf_variant(${value})`;
    case 'ARRAY':
      return `sf_to_array(${value})`;
    case 'BINARY':
      return tryCast ? `TRY(sf_binary(${value}))` : `sf_binary(${value})`;
    case 'BOOLEAN':
      // A VARIANT's JSON text cast straight to BOOLEAN works; strings like 'yes'/'on' go through DuckDB's parser.
      return `${tryCast ? 'TRY_CAST' : 'CAST'}(${value} AS BOOLEAN)`;
    default:
      // DuckDB casts JSON scalars (numbers and strings alike) to these types directly.
      return `${tryCast ? 'TRY_CAST' : 'CAST'}(${value} AS ${duckType(type)})`;
  }
}

/**
 * Helper macros the translated SQL relies on. `typeof(x)` is a constant per
 * call site, so DuckDB folds the CASE to one branch when it binds the macro.
 */
export const ENGINE_MACROS = [
  `CREATE OR REPLACE MACRO sf_str(x) AS CASE WHEN typeof(x) = 'JSON' THEN json_extract_string(x, '$') WHEN typeof(x) = 'BLOB' THEN upper(hex(x)) ELSE CAST(x AS VARCHAR) END`,
  `CREATE OR REPLACE MACRO sf_variant(x) AS CASE WHEN typeof(x) = 'JSON' THEN x ELSE to_json(x) END`,
  `CREATE OR REPLACE MACRO sf_to_array(x) AS CASE WHEN x IS NULL THEN NULL WHEN json_type(sf_variant(x)) = 'ARRAY' THEN sf_variant(x) ELSE json_array(sf_variant(x)) END`,
  `CREATE OR REPLACE MACRO sf_parse_json(x) AS CAST(sf_str(x) AS JSON)`,
  // sf_json_text applies Snowflake's duplicate-key and number rules (json.ts); json_valid drops what DuckDB's JSON refuses.
  `CREATE OR REPLACE MACRO sf_try_parse_json(x, p) AS CASE WHEN json_valid(sf_json_text(sf_str(x), p)) THEN CAST(sf_json_text(sf_str(x), p) AS JSON) END`,
  `CREATE OR REPLACE MACRO sf_binary(x) AS CASE WHEN typeof(x) = 'BLOB' THEN x ELSE unhex(sf_str(x)) END`,
  // Snowflake's OBJECT_CONSTRUCT leaves out keys whose value is NULL.
  `CREATE OR REPLACE MACRO sf_object_construct(j) AS CAST(to_json(map_from_entries(list_filter(map_entries(CAST(j AS MAP(VARCHAR, JSON))), e -> e.value IS NOT NULL AND CAST(e.value AS VARCHAR) <> 'null'))) AS JSON)`,
];

export { tokenize };
