/**
 * The SQL the Snowflake destination sends: DDL for journals, targets and
 * bookkeeping, and the MERGE that derives a target from its journal. Pure
 * functions of names and numbers, so golden tests pin every statement
 * (test/snowflake-sql.test.ts).
 *
 * Snowflake SQL used, for review against the SQL reference:
 *   statements: CREATE DATABASE/SCHEMA/TABLE IF NOT EXISTS; ALTER TABLE ADD
 *   COLUMN IF NOT EXISTS; ALTER TABLE ALTER COLUMN SET DATA TYPE; BEGIN;
 *   COMMIT; INSERT INTO ... VALUES / SELECT; UPDATE; DELETE; SELECT with
 *   WHERE, ORDER BY, LIMIT, QUALIFY; MERGE INTO ... USING (subquery) ON ...
 *   WHEN MATCHED AND ... THEN UPDATE | DELETE, WHEN NOT MATCHED AND ... THEN
 *   INSERT; SHOW PIPES; DESCRIBE TABLE; SHOW GRANTS; SELECT CURRENT_USER(),
 *   CURRENT_ROLE(), CURRENT_WAREHOUSE().
 *   functions: ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..), LAST_VALUE(..)
 *   OVER (PARTITION BY .. ORDER BY .. ROWS BETWEEN UNBOUNDED PRECEDING AND
 *   UNBOUNDED FOLLOWING), SUM(..) OVER (.. ROWS BETWEEN CURRENT ROW AND
 *   UNBOUNDED FOLLOWING), IFF, COALESCE, OBJECT_CONSTRUCT, GET,
 *   ARRAY_CONTAINS, ARRAY_CONSTRUCT, TRY_PARSE_JSON, TO_BINARY(.., 'HEX'),
 *   TRY_TO_NUMBER(x, p, s), TRY_TO_DATE, TRY_TO_TIMESTAMP_TZ, SYSDATE(),
 *   COUNT, SUM, MAX, LENGTH (key text of several key columns), `::` casts, `||`.
 *   Beyond the emulator's agreed list: SUBSTR (bytea '\x' prefix, casts.ts),
 *   TRY_TO_TIMESTAMP_NTZ (timestamp without time zone, casts.ts).
 *
 * Never RANK: ties would give a key two source rows and MERGE fails with
 * "Duplicate row detected during DML action" (100090).
 *
 * Identifiers (snowflake-api.md §6.3): a PostgreSQL name that is all
 * lower-case becomes its upper-case form (what an unquoted Snowflake name
 * resolves to); any other name is kept as it is; every name is quoted.
 */
import { createHash } from 'node:crypto';
import type { DeleteMode } from '../destination.js';
import type { Position } from '../../model.js';

/** The Snowflake name for a PostgreSQL identifier (unquoted form). */
export const snowflakeName = (pg: string): string => (pg === pg.toLowerCase() ? pg.toUpperCase() : pg);

/** A quoted Snowflake identifier. */
export const quoteSf = (name: string): string => `"${name.replaceAll('"', '""')}"`;

export const literal = (s: string): string => `'${s.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;

/**
 * Table name for a source table, in the target schema and the landing schema alike: the source schema
 * stays part of the name (`public.orders` → `PUBLIC_ORDERS`) so equal table names in two source schemas
 * never collide.
 */
export const tableNameFor = (schema: string, table: string): string => `${snowflakeName(schema)}_${snowflakeName(table)}`;

/** A name Snowflake reads the same quoted or not: what a case-insensitive REST path segment resolves to. */
const UPPER_CASE_SAFE = /^[A-Z_][A-Z0-9_]*$/;

/**
 * The pipe a journal is loaded through. REST path segments are documented as case-insensitive, so a
 * segment names the object its upper-cased spelling names: the default pipe `<TABLE>-STREAMING` of a
 * table with an upper-case-safe name is reached that way. The default pipe of a mixed-case or quoted
 * name (`public_Orders`) may resolve to nothing, or to another table's pipe (`PUBLIC_ORDERS`), and how
 * Snowflake treats it is undocumented; such a journal gets a named pipe floe creates, whose name is
 * upper-case-safe and unique to the exact table name (a hash of it).
 */
export function pipeNameFor(tableName: string): { readonly name: string; readonly named: boolean } {
  if (UPPER_CASE_SAFE.test(tableName)) return { name: `${tableName}-STREAMING`, named: false };
  const readable = tableName
    .toUpperCase()
    .replace(/[^A-Z0-9_]/g, '_')
    .slice(0, 100);
  const hash = createHash('sha256').update(tableName).digest('hex').slice(0, 10).toUpperCase();
  return { name: `FLOE_PIPE_${readable}_${hash}`, named: true };
}

/** The named streaming pipe of a journal: columns matched by their exact names (the NDJSON keys are those). */
export const createPipe = (pipe: string, journal: string): string =>
  `CREATE PIPE IF NOT EXISTS ${pipe} AS COPY INTO ${journal} FROM TABLE(DATA_SOURCE(TYPE => 'STREAMING')) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE`;

export const qualified = (database: string, schema: string, table: string): string =>
  `${quoteSf(database)}.${quoteSf(schema)}.${quoteSf(table)}`;

/** Journal metadata columns, after the data columns. */
export const JOURNAL_META = [
  ['_FLOE_LSN', 'NUMBER(20,0)'],
  ['_FLOE_ORDINAL', 'NUMBER(10,0)'],
  ['_FLOE_OP', 'VARCHAR(1)'],
  ['_FLOE_COMMIT_TIME', 'TIMESTAMP_TZ(6)'],
  ['_FLOE_UNCHANGED', 'ARRAY'],
  ['_FLOE_SEQ', 'NUMBER(38,0)'],
  ['_FLOE_RANGE', 'NUMBER(10,0)'],
] as const;

export interface Names {
  readonly database: string;
  readonly schema: string;
  readonly landing: string;
}

export const bookkeeping = (n: Names, table: '_FLOE_TABLES' | '_FLOE_RANGES' | '_FLOE_MERGES' | '_FLOE_CHANNELS'): string =>
  qualified(n.database, n.landing, table);

export function setupStatements(n: Names): string[] {
  return [
    `CREATE DATABASE IF NOT EXISTS ${quoteSf(n.database)}`,
    `CREATE SCHEMA IF NOT EXISTS ${quoteSf(n.database)}.${quoteSf(n.schema)}`,
    `CREATE SCHEMA IF NOT EXISTS ${quoteSf(n.database)}.${quoteSf(n.landing)}`,
    `CREATE TABLE IF NOT EXISTS ${bookkeeping(n, '_FLOE_TABLES')} ("SOURCE_TABLE" VARCHAR, "TARGET_TABLE" VARCHAR, "JOURNAL_COLUMNS" VARCHAR, "TARGET_TYPES" VARCHAR, "SNAPSHOT_COMPLETE" BOOLEAN, "MERGED_SEQ" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_TZ(6))`,
    // Added after the first release: which columns are the merge key (a change of them re-keys the target).
    `ALTER TABLE ${bookkeeping(n, '_FLOE_TABLES')} ADD COLUMN IF NOT EXISTS "KEY_COLUMNS" VARCHAR`,
    // Added later: the pipe the journal is loaded through (NULL: the table's default pipe, as before).
    `ALTER TABLE ${bookkeeping(n, '_FLOE_TABLES')} ADD COLUMN IF NOT EXISTS "PIPE" VARCHAR`,
    `CREATE TABLE IF NOT EXISTS ${bookkeeping(n, '_FLOE_RANGES')} ("PIPELINE" VARCHAR, "INCARNATION" VARCHAR, "SOURCE_TABLE" VARCHAR, "RANGE_INDEX" NUMBER(10,0), "SNAPSHOT_LSN" NUMBER(20,0), "ROW_COUNT" NUMBER(38,0), "LOADED_AT" TIMESTAMP_TZ(6))`,
    // Every channels_per_table a pipeline incarnation has streamed with: a replay after a change of the
    // count is checked against each (snowflake-destination.ts, "Channel sets").
    `CREATE TABLE IF NOT EXISTS ${bookkeeping(n, '_FLOE_CHANNELS')} ("PIPELINE" VARCHAR, "INCARNATION" VARCHAR, "CHANNEL_COUNT" NUMBER(10,0), "FIRST" BOOLEAN, "CREATED_AT" TIMESTAMP_TZ(6))`,
    `CREATE TABLE IF NOT EXISTS ${bookkeeping(n, '_FLOE_MERGES')} ("SOURCE_TABLE" VARCHAR, "MERGED_SEQ" NUMBER(38,0), "JOURNAL_ROWS" NUMBER(38,0), "MERGED_AT" TIMESTAMP_TZ(6))`,
  ];
}

/** A column as the DDL and the merge see it. */
export interface SfColumn {
  /** Snowflake column name (unquoted form). */
  readonly name: string;
  /** Snowflake type of the target column. */
  readonly type: string;
  /** Converts the journal's VARCHAR expression into the target type. */
  readonly cast: (x: string) => string;
  readonly isKey: boolean;
}

export function createJournal(journal: string, columns: readonly SfColumn[]): string {
  const defs = [...columns.map((c) => `${quoteSf(c.name)} VARCHAR`), ...JOURNAL_META.map(([n, t]) => `${quoteSf(n)} ${t}`)];
  return `CREATE TABLE IF NOT EXISTS ${journal} (${defs.join(', ')})`;
}

/** Keyed tables: current state with the position guard and soft-delete columns. Keyless: typed history. */
export function createTarget(target: string, columns: readonly SfColumn[], hasKey: boolean): string {
  const data = columns.map((c) => `${quoteSf(c.name)} ${c.type}`);
  const meta = hasKey
    ? [
        '"_FLOE_KEY" VARCHAR',
        '"_FLOE_LSN" NUMBER(20,0)',
        '"_FLOE_ORDINAL" NUMBER(10,0)',
        '"_FLOE_DELETED" BOOLEAN',
        '"_FLOE_SYNCED_AT" TIMESTAMP_TZ(6)',
      ]
    : [
        '"_FLOE_OP" VARCHAR(1)',
        '"_FLOE_LSN" NUMBER(20,0)',
        '"_FLOE_ORDINAL" NUMBER(10,0)',
        '"_FLOE_COMMIT_TIME" TIMESTAMP_TZ(6)',
        '"_FLOE_SEQ" NUMBER(38,0)',
      ];
  return `CREATE TABLE IF NOT EXISTS ${target} (${[...data, ...meta].join(', ')})`;
}

export const addColumn = (table: string, name: string, type: string): string =>
  `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${quoteSf(name)} ${type}`;

export const retypeColumn = (table: string, name: string, type: string): string =>
  `ALTER TABLE ${table} ALTER COLUMN ${quoteSf(name)} SET DATA TYPE ${type}`;

const seqWindow = (alias: string, fromSeq: bigint, toSeq: bigint): string =>
  `${alias}."_FLOE_SEQ" > ${fromSeq} AND ${alias}."_FLOE_SEQ" <= ${toSeq}`;

/** `(a.lsn, a.ordinal) > (b.lsn, b.ordinal)`, spelled out. */
const newer = (a: string, b: string): string =>
  `(${a}."_FLOE_LSN" > ${b}."_FLOE_LSN" OR (${a}."_FLOE_LSN" = ${b}."_FLOE_LSN" AND ${a}."_FLOE_ORDINAL" > ${b}."_FLOE_ORDINAL"))`;

const olderThan = (alias: string, p: Position): string =>
  `(${alias}."_FLOE_LSN" < ${p.lsn} OR (${alias}."_FLOE_LSN" = ${p.lsn} AND ${alias}."_FLOE_ORDINAL" < ${p.ordinal}))`;

/** Two statements: the window's shape (rows, unchanged rows, deletes) and its latest truncate. */
export function windowStatsStatements(journal: string, fromSeq: bigint, toSeq: bigint): [string, string] {
  return [
    `SELECT COUNT(*), COUNT(j."_FLOE_UNCHANGED"), SUM(IFF(j."_FLOE_OP" = 'd', 1, 0)) FROM ${journal} j WHERE ${seqWindow('j', fromSeq, toSeq)}`,
    `SELECT j."_FLOE_LSN", j."_FLOE_ORDINAL" FROM ${journal} j WHERE ${seqWindow('j', fromSeq, toSeq)} AND j."_FLOE_OP" = 't' ORDER BY j."_FLOE_LSN" DESC, j."_FLOE_ORDINAL" DESC LIMIT 1`,
  ];
}

export interface MergeSpec {
  readonly sourceTable: string;
  readonly journal: string;
  readonly target: string;
  /** The `_FLOE_TABLES` and `_FLOE_MERGES` tables. */
  readonly tables: string;
  readonly merges: string;
  /** Every journal data column (columns dropped at the source included: they keep their last values). */
  readonly columns: readonly SfColumn[];
  readonly deleteMode: DeleteMode;
  readonly fromSeq: bigint;
  readonly toSeq: bigint;
  readonly journalRows: number;
  /** The latest TRUNCATE in the window: every target row older than it goes. */
  readonly truncate?: Position;
  /**
   * Some row of the window lacks a value (unchanged TOAST), or (soft deletes) a delete must keep the
   * key's latest known image: values are taken column by column from the latest row that has them.
   */
  readonly perColumn: boolean;
  /** Key moves whose unchanged values come from the old key's target row (see moveSeedStatement). */
  readonly seeds?: readonly string[];
}

/**
 * One transaction: the truncate (if any), the MERGE of the window, and the bookkeeping update, so a
 * window is merged entirely or not at all. Sent as one multi-statement request with a requestId.
 */
export function mergeStatements(m: MergeSpec): string[] {
  const keys = m.columns.filter((c) => c.isKey);
  const data = m.columns.filter((c) => !c.isKey);
  const soft = m.deleteMode === 'soft';
  const out = ['BEGIN'];
  let where = seqWindow('j', m.fromSeq, m.toSeq);
  if (m.truncate) {
    out.push(
      soft
        ? `UPDATE ${m.target} t SET "_FLOE_DELETED" = TRUE, "_FLOE_SYNCED_AT" = SYSDATE() WHERE ${olderThan('t', m.truncate)} AND t."_FLOE_DELETED" = FALSE`
        : `DELETE FROM ${m.target} t WHERE ${olderThan('t', m.truncate)}`,
    );
    where += ` AND j."_FLOE_OP" <> 't' AND NOT ${olderThan('j', m.truncate)}`;
  }
  out.push(...(m.seeds ?? []));
  const partition = `PARTITION BY ${keys.map((k) => `j.${quoteSf(k.name)}`).join(', ')}`;
  const latestFirst = `ROW_NUMBER() OVER (${partition} ORDER BY j."_FLOE_LSN" DESC, j."_FLOE_ORDINAL" DESC) = 1`;
  const meta = 'w."_FLOE_OP", w."_FLOE_LSN", w."_FLOE_ORDINAL"';
  // w's key columns are the journal's text: the key's lossless text, matched against the target's.
  const sourceKey = `${keyText(keys.map((k) => `w.${quoteSf(k.name)}`))} AS "_FLOE_KEY"`;
  const has = (c: SfColumn) => quoteSf(`_FLOE_HAS_${c.name}`);
  let source: string;
  if (!m.perColumn) {
    // Every row carries every value: each key's latest row is its new state.
    const cols = m.columns.map((c) => `${c.cast(`w.${quoteSf(c.name)}`)} AS ${quoteSf(c.name)}`);
    source =
      `SELECT ${[...cols, sourceKey, meta].join(', ')} FROM (SELECT j.* FROM ${m.journal} j WHERE ${where} ` + `QUALIFY ${latestFirst}) w`;
  } else {
    // Per column, the latest image of the key that has the value (a JSON object, so a known NULL is
    // not mistaken for a missing value); none means the target keeps its value (invariant 4).
    const img = (c: SfColumn) => quoteSf(`_FLOE_IMG_${c.name}`);
    const images = data.map((c) => {
      const known = `j."_FLOE_OP" <> 'd' AND j."_FLOE_ALIVE" AND NOT ARRAY_CONTAINS(${literal(c.name)}::VARIANT, COALESCE(j."_FLOE_UNCHANGED", ARRAY_CONSTRUCT()))`;
      // Ordered known-last: the partition's last row is its latest row with the value, if it has one.
      return (
        `LAST_VALUE(IFF(${known}, OBJECT_CONSTRUCT('v', j.${quoteSf(c.name)}), NULL)) ` +
        `OVER (${partition} ORDER BY IFF(${known}, 1, 0), j."_FLOE_LSN", j."_FLOE_ORDINAL" ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS ${img(c)}`
      );
    });
    const cols = [
      ...keys.map((c) => `${c.cast(`w.${quoteSf(c.name)}`)} AS ${quoteSf(c.name)}`),
      ...data.flatMap((c) => [`${c.cast(`GET(w.${img(c)}, 'v')::VARCHAR`)} AS ${quoteSf(c.name)}`, `w.${img(c)} IS NOT NULL AS ${has(c)}`]),
    ];
    source =
      `SELECT ${[...cols, sourceKey, meta].join(', ')} FROM (SELECT ${['j."_FLOE_OP"', 'j."_FLOE_LSN"', 'j."_FLOE_ORDINAL"', ...keys.map((k) => `j.${quoteSf(k.name)}`), ...images].join(', ')} ` +
      `FROM (SELECT j.*, ${alive(partition)} AS "_FLOE_ALIVE" FROM ${m.journal} j WHERE ${where}) j QUALIFY ${latestFirst}) w`;
  }
  const on = 't."_FLOE_KEY" = s."_FLOE_KEY"';
  const value = (c: SfColumn) => (m.perColumn ? `IFF(s.${has(c)}, s.${quoteSf(c.name)}, t.${quoteSf(c.name)})` : `s.${quoteSf(c.name)}`);
  const set = (deleted: boolean) =>
    [
      ...data.map((c) => `${quoteSf(c.name)} = ${value(c)}`),
      `"_FLOE_LSN" = s."_FLOE_LSN"`,
      `"_FLOE_ORDINAL" = s."_FLOE_ORDINAL"`,
      `"_FLOE_DELETED" = ${deleted ? 'TRUE' : 'FALSE'}`,
      `"_FLOE_SYNCED_AT" = SYSDATE()`,
    ].join(', ');
  const insertCols = [
    ...m.columns.map((c) => quoteSf(c.name)),
    '"_FLOE_KEY"',
    '"_FLOE_LSN"',
    '"_FLOE_ORDINAL"',
    '"_FLOE_DELETED"',
    '"_FLOE_SYNCED_AT"',
  ];
  const insertValues = (deleted: boolean) =>
    [
      ...m.columns.map((c) => `s.${quoteSf(c.name)}`),
      's."_FLOE_KEY"',
      's."_FLOE_LSN"',
      's."_FLOE_ORDINAL"',
      deleted ? 'TRUE' : 'FALSE',
      'SYSDATE()',
    ].join(', ');
  const isNewer = newer('s', 't');
  const clauses = [
    soft
      ? `WHEN MATCHED AND s."_FLOE_OP" = 'd' AND ${isNewer} THEN UPDATE SET ${set(true)}`
      : `WHEN MATCHED AND s."_FLOE_OP" = 'd' AND ${isNewer} THEN DELETE`,
    `WHEN MATCHED AND s."_FLOE_OP" <> 'd' AND ${isNewer} THEN UPDATE SET ${set(false)}`,
    `WHEN NOT MATCHED AND s."_FLOE_OP" <> 'd' THEN INSERT (${insertCols.join(', ')}) VALUES (${insertValues(false)})`,
  ];
  if (soft) clauses.push(`WHEN NOT MATCHED AND s."_FLOE_OP" = 'd' THEN INSERT (${insertCols.join(', ')}) VALUES (${insertValues(true)})`);
  out.push(`MERGE INTO ${m.target} t USING (${source}) s ON ${on} ${clauses.join(' ')}`);
  out.push(...bookkeepingUpdate(m));
  out.push('COMMIT');
  return out;
}

/**
 * True for a journal row with no delete between it and its key's latest change (other than that change
 * itself): only such rows hold values of the key's current row. A value from before a delete belongs to a
 * row that is gone, e.g. when another row's key moves onto a key deleted in the same window.
 */
function alive(partition: string): string {
  const order = 'ORDER BY j."_FLOE_LSN", j."_FLOE_ORDINAL"';
  const deleted = `IFF(j."_FLOE_OP" = 'd', 1, 0)`;
  return (
    `(SUM(${deleted}) OVER (${partition} ${order} ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) - ${deleted} = ` +
    `IFF(LAST_VALUE(j."_FLOE_OP") OVER (${partition} ${order} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) = 'd', 1, 0))`
  );
}

export interface MoveSeed {
  readonly target: string;
  readonly columns: readonly SfColumn[];
  /** Key texts of the old and the new key, parallel to the key columns. */
  readonly oldKey: readonly (string | null)[];
  readonly newKey: readonly (string | null)[];
  /** Columns the new key's row did not receive (unchanged TOAST). */
  readonly unchanged: readonly string[];
  /** Position of the delete of the old key (just before the insert of the new one). */
  readonly position: Position;
}

/**
 * A primary-key change arrives as a delete of the old key and an insert of the new key; PostgreSQL does
 * not resend unchanged TOAST values, so the insert lacks them. When the old key's value is not in the
 * merge window it is the old key's target row's: this statement copies those columns to the new key's
 * row (created at the delete's position if missing) before the MERGE deletes the old row, so the
 * MERGE keeps them like any unchanged value.
 */
export function moveSeedStatement(m: MoveSeed): string {
  const keys = m.columns.filter((c) => c.isKey);
  const moved = m.columns.filter((c) => !c.isKey && m.unchanged.includes(c.name));
  const lit = (v: string | null) => (v === null ? 'NULL' : literal(v));
  const newKey = [
    ...keys.map((k, i) => `${k.cast(lit(m.newKey[i] ?? null))} AS ${quoteSf(k.name)}`),
    `${keyText(keys.map((_, i) => lit(m.newKey[i] ?? null)))} AS "_FLOE_KEY"`,
  ];
  const oldMatch = `o."_FLOE_KEY" = ${keyText(keys.map((_, i) => lit(m.oldKey[i] ?? null)))}`;
  const on = 't."_FLOE_KEY" = s."_FLOE_KEY"';
  const cols = [...keys.map((c) => quoteSf(c.name)), '"_FLOE_KEY"', ...moved.map((c) => quoteSf(c.name))];
  return (
    `MERGE INTO ${m.target} t USING (SELECT ${[...newKey, ...moved.map((c) => `o.${quoteSf(c.name)}`)].join(', ')}, ` +
    `${m.position.lsn} AS "_FLOE_LSN", ${m.position.ordinal} AS "_FLOE_ORDINAL" FROM ${m.target} o WHERE ${oldMatch}) s ON ${on} ` +
    `WHEN MATCHED AND ${newer('s', 't')} THEN UPDATE SET ${[...moved.map((c) => `${quoteSf(c.name)} = s.${quoteSf(c.name)}`), '"_FLOE_LSN" = s."_FLOE_LSN"', '"_FLOE_ORDINAL" = s."_FLOE_ORDINAL"'].join(', ')} ` +
    `WHEN NOT MATCHED THEN INSERT (${[...cols, '"_FLOE_LSN"', '"_FLOE_ORDINAL"', '"_FLOE_DELETED"'].join(', ')}) ` +
    `VALUES (${[...cols.map((c) => `s.${c}`), 's."_FLOE_LSN"', 's."_FLOE_ORDINAL"', 'FALSE'].join(', ')})`
  );
}

/**
 * The lossless text of a key: the PostgreSQL text of its columns as the journal holds them (the same from
 * the snapshot and the stream); several columns are length-prefixed so no two keys share a text. Keyed
 * targets keep it in `_FLOE_KEY` and merges match on it, never on the typed key columns, whose `TRY_`
 * casts make a key the type cannot hold (NaN, 'infinity', BC dates, years past 9999) NULL.
 */
export function keyText(columns: readonly string[]): string {
  if (columns.length === 1) return columns[0]!;
  return columns.map((c) => `LENGTH(${c})::VARCHAR || ':' || ${c}`).join(' || ');
}

/**
 * Fills `_FLOE_KEY` of a keyed target created before it, from the journal row each target row came from
 * (same position, same typed key).
 */
export function backfillKeyTextStatement(target: string, journal: string, keys: readonly SfColumn[]): string {
  const text = keyText(keys.map((k) => `j.${quoteSf(k.name)}`));
  const typed = keys.map((k) => `${k.cast(`j.${quoteSf(k.name)}`)} AS ${quoteSf(k.name)}`);
  const match = keys.map((k) => `t.${quoteSf(k.name)} = s.${quoteSf(k.name)}`).join(' AND ');
  return (
    `MERGE INTO ${target} t USING (SELECT ${[`${text} AS "_FLOE_KEY"`, 'j."_FLOE_LSN"', 'j."_FLOE_ORDINAL"', ...typed].join(', ')} FROM ${journal} j ` +
    `QUALIFY ROW_NUMBER() OVER (PARTITION BY j."_FLOE_LSN", j."_FLOE_ORDINAL", ${text} ORDER BY j."_FLOE_SEQ") = 1) s ` +
    `ON t."_FLOE_LSN" = s."_FLOE_LSN" AND t."_FLOE_ORDINAL" = s."_FLOE_ORDINAL" AND ${match} ` +
    `WHEN MATCHED THEN UPDATE SET "_FLOE_KEY" = s."_FLOE_KEY"`
  );
}

/** Keyless tables: the target is typed append-only history, so a merge copies the window. */
export function appendHistoryStatements(m: MergeSpec): string[] {
  const cols = m.columns.map((c) => quoteSf(c.name));
  const meta = ['"_FLOE_OP"', '"_FLOE_LSN"', '"_FLOE_ORDINAL"', '"_FLOE_COMMIT_TIME"', '"_FLOE_SEQ"'];
  return [
    'BEGIN',
    `INSERT INTO ${m.target} (${[...cols, ...meta].join(', ')}) SELECT ${[...m.columns.map((c) => c.cast(`j.${quoteSf(c.name)}`)), ...meta.map((x) => `j.${x}`)].join(', ')} FROM ${m.journal} j WHERE ${seqWindow('j', m.fromSeq, m.toSeq)} ORDER BY j."_FLOE_SEQ"`,
    ...bookkeepingUpdate(m),
    'COMMIT',
  ];
}

function bookkeepingUpdate(m: MergeSpec): string[] {
  return [
    `UPDATE ${m.tables} SET "MERGED_SEQ" = ${m.toSeq}, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = ${literal(m.sourceTable)}`,
    `INSERT INTO ${m.merges} ("SOURCE_TABLE", "MERGED_SEQ", "JOURNAL_ROWS", "MERGED_AT") VALUES (${literal(m.sourceTable)}, ${m.toSeq}, ${m.journalRows}, SYSDATE())`,
  ];
}

/** Journal retention: merged rows whose merge is older than `cutoffIso` (rows not merged always stay). */
export function retentionStatements(sourceTable: string, journal: string, merges: string, mergedSeq: bigint): string[] {
  return [
    `DELETE FROM ${journal} WHERE "_FLOE_SEQ" <= ${mergedSeq}`,
    `DELETE FROM ${merges} WHERE "SOURCE_TABLE" = ${literal(sourceTable)} AND "MERGED_SEQ" < ${mergedSeq}`,
  ];
}
