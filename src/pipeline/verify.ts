/**
 * `--verify`: compares every table of a publication with its DuckDB target.
 *
 * Method. All source tables are read in one REPEATABLE READ transaction with
 * `COPY (SELECT <columns>) TO STDOUT` on a connection with floe's session
 * settings (source.ts), so each value is the exact text the snapshot and the
 * stream deliver. The texts go to DuckDB (through a newline-delimited JSON
 * file, read as VARCHAR columns; array values rewritten by pgArrayToJson as
 * the journal does) and are converted by each column's `duckdbCast`, the same
 * expression that fills the target. Source and target are then compared as
 * multisets over the source's columns, with `EXCEPT ALL` in both directions:
 *
 * - missing: source rows the target lacks (or holds with another value);
 * - extra: target rows the source lacks;
 * - duplicateKeys: keys held by more than one target row (deleted ones
 *   included with soft deletes: the merge keeps one row per key).
 *
 * With soft deletes only rows where `NOT _floe_deleted` count as present.
 *
 * Keyless tables (REPLICA IDENTITY FULL without a key) have no current-state
 * target, only the journal's history (the target is a view of it). The
 * pipeline journals snapshot rows and inserts as 'r'/'i' with the whole row,
 * deletes as 'd' with the whole old row, and an UPDATE as a 'd' of the whole
 * old row followed (next ordinal) by a 'u' of the new row. So the current rows
 * are (r + i + u) - d as multisets, after the last TRUNCATE, and that is what
 * is compared. A history this cannot be derived from is reported as skipped
 * with the reason: an update without its old image (journaled by an older
 * floe), or a journaled image that lacks values (unchanged TOAST).
 *
 * The destination must be caught up and merged (stop the pipeline first).
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { TableSchema } from '../model.js';
import { qualifiedName } from '../model.js';
import { CopyOut } from '../postgres/copy-out.js';
import { CopyTextParser } from '../postgres/copy-text.js';
import { connectSource, publishedRowsSql, SchemaCache, type SourceConfig } from '../postgres/source.js';
import { pgArrayToJson } from '../schema/pg-array.js';
import { quoteIdent, quoteLiteral } from '../schema/sql-quote.js';
import type { DuckDbDestination } from '../destination/duckdb/duckdb-destination.js';
import { FloeError } from '../errors.js';

export interface TableVerifyResult {
  /** `schema.table` */
  readonly table: string;
  readonly hasKey: boolean;
  readonly sourceRows: number;
  /** Current rows of the target (for a keyless table: derived from its history). */
  readonly targetRows: number;
  readonly missing: number;
  readonly extra: number;
  readonly duplicateKeys: number;
  /** Keyless tables: journaled deletes that match no journaled row. */
  readonly orphanDeletes?: number;
  /**
   * Keyed tables with differences: the keys of up to three missing and three extra rows, as `(v1, v2)`
   * (keys only, never other column values), so a difference can be looked up without a manual diff.
   */
  readonly sampleKeys?: { readonly missing: string[]; readonly extra: string[] };
  /** Set when the table was not compared: why. */
  readonly skipped?: string;
  /** Set when the target cannot be compared column by column (e.g. it lacks a column). */
  readonly problem?: string;
}

export interface VerifyReport {
  readonly tables: TableVerifyResult[];
  /** Source rows of the tables that were compared. */
  readonly rowsCompared: number;
  /** missing + extra + duplicateKeys + orphanDeletes over all tables. */
  readonly mismatches: number;
  readonly skippedTables: number;
  readonly ok: boolean;
}

export interface VerifyOptions {
  /** Directory for the temporary row files. (Default: the OS temp directory) */
  readonly tempDir?: string;
}

const JOURNAL = '_floe_journal';
const SRC = '_floe_verify_src';
const SRC_TEXT = '_floe_verify_text';
const DST = '_floe_verify_dst';

export async function verifyDuckDb(
  source: SourceConfig,
  publication: string,
  destination: DuckDbDestination,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const client = await connectSource({ ...source, applicationName: source.applicationName ?? 'floe-verify' });
  const dir = await mkdtemp(join(options.tempDir ?? tmpdir(), 'floe-verify-'));
  const results: TableVerifyResult[] = [];
  try {
    const tables = await new SchemaCache(client).publishedTables(publication);
    // One snapshot for every table.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    for (const table of tables) {
      results.push(await verifyTable(client, table, destination, dir));
    }
    await client.query('COMMIT');
  } finally {
    await client.query('ROLLBACK').catch(() => undefined);
    await client.end().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    await destination
      .query(`DROP TABLE IF EXISTS ${SRC}; DROP TABLE IF EXISTS ${SRC_TEXT}; DROP TABLE IF EXISTS ${DST}`)
      .catch(() => undefined);
  }
  const compared = results.filter((r) => r.skipped === undefined);
  const mismatches = compared.reduce((n, r) => n + r.missing + r.extra + r.duplicateKeys + (r.orphanDeletes ?? 0), 0);
  return {
    tables: results,
    rowsCompared: compared.reduce((n, r) => n + r.sourceRows, 0),
    mismatches,
    skippedTables: results.length - compared.length,
    ok: mismatches === 0,
  };
}

async function count(destination: DuckDbDestination, sql: string): Promise<number> {
  const rows = await destination.query(sql);
  return Number(rows[0]?.[0] ?? 0);
}

async function verifyTable(client: pg.Client, table: TableSchema, destination: DuckDbDestination, dir: string): Promise<TableVerifyResult> {
  const name = qualifiedName(table);
  const target = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  const cols = table.columns.map((c) => quoteIdent(c.name)).join(', ');
  const base = { table: name, hasKey: table.hasKey };

  // The target and its columns.
  const targetTypes = new Map(
    (
      await destination.query(
        `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ${quoteLiteral(table.schema)} AND table_name = ${quoteLiteral(table.name)}`,
      )
    ).map((r) => [String(r[0]), String(r[1])] as const),
  );
  const targetCols = new Set(targetTypes.keys());
  const absent = table.columns.filter((c) => !targetCols.has(c.name)).map((c) => c.name);
  // A target column whose type had to change (retyped at the source, see the destination's schema
  // evolution) may differ from the type map's: the source side is cast to the target's type.
  let srcCols = cols;
  if (table.columns.length > 0 && absent.length === 0) {
    const [expected] = await destination.query(`SELECT [${table.columns.map((c) => `typeof(CAST(NULL AS ${c.type.duckdb}))`).join(', ')}]`);
    const canonical = (expected?.[0] ?? []) as string[];
    srcCols = table.columns
      .map((c, i) => {
        const actual = targetTypes.get(c.name)!;
        return actual === canonical[i] ? quoteIdent(c.name) : `CAST(${quoteIdent(c.name)} AS ${actual}) AS ${quoteIdent(c.name)}`;
      })
      .join(', ');
  }

  if (!table.hasKey && targetCols.size > 0) {
    // Keyless: is the current state derivable from the history?
    const journal = `${JOURNAL}.${quoteIdent(name)}`;
    const [facts] = await destination.query(
      `SELECT count(*) FILTER (WHERE _floe_op IN ('u', 'd') AND _floe_unchanged IS NOT NULL),
              count(*) FILTER (WHERE _floe_op = 'u' AND NOT EXISTS (
                SELECT 1 FROM ${journal} o WHERE o._floe_op = 'd' AND o._floe_lsn = j._floe_lsn AND o._floe_ordinal = j._floe_ordinal - 1))
         FROM ${journal} j`,
    );
    const partial = Number(facts?.[0] ?? 0);
    const updatesWithoutOld = Number(facts?.[1] ?? 0);
    const reason =
      updatesWithoutOld > 0
        ? `keyless table (no primary key, REPLICA IDENTITY FULL): ${updatesWithoutOld} journaled UPDATE(s) lack the old row image, so the current rows cannot be derived from the append-only history`
        : partial > 0
          ? `keyless table (no primary key, REPLICA IDENTITY FULL): ${partial} journaled update/delete image(s) lack values (unchanged TOAST), so rows cannot be matched`
          : undefined;
    if (reason) {
      const [r] = (await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${target}`)).rows;
      return { ...base, sourceRows: Number(r?.n ?? 0), targetRows: 0, missing: 0, extra: 0, duplicateKeys: 0, skipped: reason };
    }
  }

  const sourceRows = await loadSource(client, table, destination, dir);

  if (targetCols.size === 0 || absent.length > 0) {
    const problem = targetCols.size === 0 ? 'the target table does not exist' : `the target lacks column(s) ${absent.join(', ')}`;
    const targetRows = targetCols.size === 0 ? 0 : await count(destination, `SELECT count(*) FROM ${target}`);
    return { ...base, sourceRows, targetRows, missing: sourceRows, extra: targetRows, duplicateKeys: 0, problem };
  }

  let targetRel: string;
  let duplicateKeys = 0;
  let orphanDeletes: number | undefined;
  const keys = table.columns
    .filter((c) => c.isKey)
    .map((c) => quoteIdent(c.name))
    .join(', ');
  if (table.hasKey) {
    targetRel = `(SELECT ${cols} FROM ${target} WHERE NOT _floe_deleted)`;
    duplicateKeys = await count(destination, `SELECT count(*) FROM (SELECT ${keys} FROM ${target} GROUP BY ${keys} HAVING count(*) > 1)`);
  } else {
    // Current rows of an append-only history (docs/architecture.md): the latest snapshot after the
    // last truncate (or reset marker), plus i/u images minus d images of changes after that base.
    const pos = `((_floe_lsn::HUGEINT << 32) + (_floe_ordinal + 1))`;
    const truncated = `coalesce((SELECT max(${pos}) FROM ${target} WHERE _floe_op = 't'), -1)`;
    const snapshot = `coalesce((SELECT max(${pos}) FROM ${target} WHERE _floe_op = 'r' AND ${pos} > ${truncated}), -1)`;
    const base = `greatest(${truncated}, ${snapshot})`;
    const rows = `SELECT ${cols} FROM ${target} WHERE (_floe_op = 'r' AND ${pos} = ${snapshot}) OR (_floe_op IN ('i', 'u') AND ${pos} > ${base})`;
    const deletes = `SELECT ${cols} FROM ${target} WHERE _floe_op = 'd' AND ${pos} > ${base}`;
    await destination.query(`CREATE OR REPLACE TEMP TABLE ${DST} AS ${rows} EXCEPT ALL ${deletes}`);
    orphanDeletes = await count(destination, `SELECT count(*) FROM (${deletes} EXCEPT ALL ${rows})`);
    targetRel = DST;
  }
  const targetRows = await count(destination, `SELECT count(*) FROM ${targetRel}`);
  const missingRows = `SELECT ${srcCols} FROM ${SRC} EXCEPT ALL SELECT ${cols} FROM ${targetRel}`;
  const extraRows = `SELECT ${cols} FROM ${targetRel} EXCEPT ALL SELECT ${srcCols} FROM ${SRC}`;
  const missing = await count(destination, `SELECT count(*) FROM (${missingRows})`);
  const extra = await count(destination, `SELECT count(*) FROM (${extraRows})`);
  const sampleKeys =
    table.hasKey && missing + extra > 0
      ? { missing: await keysOf(destination, keys, missingRows), extra: await keysOf(destination, keys, extraRows) }
      : undefined;
  return {
    ...base,
    sourceRows,
    targetRows,
    missing,
    extra,
    duplicateKeys,
    ...(orphanDeletes !== undefined ? { orphanDeletes } : {}),
    ...(sampleKeys ? { sampleKeys } : {}),
  };
}

/** The keys of the first three rows of `rows` in key order, as `(v1, v2)`; strings quoted. */
async function keysOf(destination: DuckDbDestination, keys: string, rows: string): Promise<string[]> {
  const found = await destination.query(`SELECT ${keys} FROM (${rows}) ORDER BY ALL LIMIT 3`);
  return found.map((r) => `(${r.map((v) => (v === null ? 'NULL' : typeof v === 'string' ? JSON.stringify(v) : String(v))).join(', ')})`);
}

/**
 * Copies the source table into the DuckDB temp table `_floe_verify_src`,
 * typed like the target. Returns the row count.
 */
async function loadSource(client: pg.Client, table: TableSchema, destination: DuckDbDestination, dir: string): Promise<number> {
  const file = join(dir, 'rows.ndjson');
  const out = createWriteStream(file);
  const parser = new CopyTextParser(table.columns.length);
  const arrays = table.columns.map((c) => c.type.isArray);
  let rows = 0;
  let longest = 0;
  const stream = client.query(new CopyOut(`COPY (${publishedRowsSql(table)}) TO STDOUT`));
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let text = '';
      for (const cells of parser.push(chunk)) {
        let line = '{';
        for (let i = 0; i < cells.length; i++) {
          const v = cells[i];
          const json = v === null || v === undefined ? 'null' : JSON.stringify(arrays[i] ? pgArrayToJson(v) : v);
          line += `${i === 0 ? '' : ','}"c${i}":${json}`;
        }
        line += '}\n';
        if (line.length > longest) longest = line.length;
        text += line;
        rows++;
      }
      if (text && !out.write(text)) await once(out, 'drain');
    }
    parser.end();
  } finally {
    out.end();
    await finished(out).catch(() => undefined);
  }
  const textCols = table.columns.map((_, i) => `c${i} VARCHAR`).join(', ');
  await destination.query(`CREATE OR REPLACE TEMP TABLE ${SRC_TEXT} (${textCols})`);
  if (rows > 0) {
    const spec = table.columns.map((_, i) => `'c${i}': 'VARCHAR'`).join(', ');
    // JSON escapes may make a line up to 6 bytes per UTF-16 unit; give read_json room for the longest.
    const maxObject = Math.max(16 << 20, longest * 4 + 1024);
    await destination.query(
      `INSERT INTO ${SRC_TEXT} SELECT * FROM read_json(${quoteLiteral(file)}, format = 'newline_delimited', columns = {${spec}}, maximum_object_size = ${maxObject})`,
    );
  }
  const typed = table.columns.map((c, i) => `${c.type.duckdbCast(`c${i}`)} AS ${quoteIdent(c.name)}`).join(', ');
  try {
    await destination.query(`CREATE OR REPLACE TEMP TABLE ${SRC} AS SELECT ${typed} FROM ${SRC_TEXT}`);
  } catch (err) {
    throw new FloeError('destination', `verify: cannot convert the source rows of ${qualifiedName(table)}: ${(err as Error).message}`, {
      cause: err,
      retry: 'none',
    });
  }
  await destination.query(`DROP TABLE ${SRC_TEXT}`);
  const loaded = await count(destination, `SELECT count(*) FROM ${SRC}`);
  if (loaded !== rows) {
    throw new FloeError('internal', `verify: ${rows} source rows of ${qualifiedName(table)} were read but ${loaded} loaded`, {
      retry: 'none',
    });
  }
  return rows;
}
