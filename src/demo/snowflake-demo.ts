/**
 * `floe demo --destination snowflake`: the Snowflake path without an account. The emulator runs in this
 * process (its data in a DuckDB file, so it can be looked at afterwards) with a key pair generated for
 * the run; floe talks to it over HTTP exactly as to Snowflake (JWT, Snowpipe Streaming into the journals,
 * SQL API MERGE into the targets). Verification compares every published table of the source with its
 * target through the emulator's SQL.
 */
import { generateKeyPairSync } from 'node:crypto';
import type pg from 'pg';
import { startEmulator, type RunningEmulator } from '../emulator/emulator.js';
import { parseSnowflakeUrl } from '../destination/snowflake/config.js';
import { createSnowflakeDestination, type SnowflakeDestination } from '../destination/snowflake/snowflake-destination.js';
import type { TableVerifyResult, VerifyReport } from '../pipeline/verify.js';
import type { Logger } from '../telemetry/logger.js';
import { DEMO_SCHEMA } from './workload.js';

export const DEMO_SF_DATABASE = 'DEMO';
export const DEMO_SF_SCHEMA = 'PUBLIC';

export interface DemoSnowflake {
  readonly emulator: RunningEmulator;
  readonly destination: SnowflakeDestination;
  close(): Promise<void>;
}

export async function startDemoSnowflake(dataPath: string, log: Logger): Promise<DemoSnowflake> {
  const emulator = await startEmulator({ dataPath, commitDelayMs: 100 });
  try {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    emulator.addUser('FLOE', publicKey.export({ type: 'spki', format: 'pem' }).toString());
    // The key goes in as the control plane's resolved secret would: never written to disk.
    const url = `snowflake://floe@${emulator.account}/${DEMO_SF_DATABASE}/${DEMO_SF_SCHEMA}?warehouse=COMPUTE_WH&merge_interval=1s&base_url=${emulator.url}`;
    const config = parseSnowflakeUrl(url, {}, { private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() });
    const destination = createSnowflakeDestination(config, { log });
    return { emulator, destination, close: () => emulator.close() };
  } catch (err) {
    await emulator.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Columns compared per demo table: the ones whose text is the same on both sides (ids, text, enums,
 * uuids); numbers, times, JSON and binary go through type mappings tested value by value elsewhere.
 */
const COMPARED: Record<string, { key: boolean; columns: string[] }> = {
  customers: { key: true, columns: ['id', 'name', 'email', 'tier'] },
  orders: { key: true, columns: ['id', 'customer_id', 'ref', 'status'] },
  events: { key: false, columns: ['event_no', 'kind', 'customer_id'] },
};

/** Source rows vs target rows as multisets of the compared columns' text. */
export async function verifySnowflakeDemo(source: pg.Client, emulator: RunningEmulator): Promise<VerifyReport> {
  const tables: TableVerifyResult[] = [];
  await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    for (const [name, spec] of Object.entries(COMPARED)) {
      const cols = spec.columns;
      const src = await source.query<Record<string, string | null>>(
        `SELECT ${cols.map((c) => `${c}::text AS ${c}`).join(', ')} FROM ${DEMO_SCHEMA}.${name}`,
      );
      const target = `"${DEMO_SF_DATABASE}"."${DEMO_SF_SCHEMA}"."${DEMO_SCHEMA.toUpperCase()}_${name.toUpperCase()}"`;
      const list = cols.map((c) => `"${c.toUpperCase()}"`).join(', ');
      const rows = spec.key
        ? (await emulator.query(`SELECT ${list} FROM ${target}`)).rows
        : currentFromHistory((await emulator.query(`SELECT "_FLOE_OP", ${list} FROM ${target} ORDER BY "_FLOE_SEQ"`)).rows);
      const dst = { rows };
      const counts = new Map<string, number>();
      for (const r of src.rows) {
        const k = JSON.stringify(cols.map((c) => r[c] ?? null));
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      let extra = 0;
      for (const r of dst.rows) {
        const k = JSON.stringify(r.map((v) => v ?? null));
        const n = counts.get(k) ?? 0;
        if (n > 0) counts.set(k, n - 1);
        else extra++;
      }
      const missing = [...counts.values()].reduce((a, b) => a + b, 0);
      const keys = new Set(dst.rows.map((r) => r[0]));
      tables.push({
        table: `${DEMO_SCHEMA}.${name}`,
        hasKey: spec.key,
        sourceRows: src.rows.length,
        targetRows: dst.rows.length,
        missing,
        extra,
        duplicateKeys: spec.key ? dst.rows.length - keys.size : 0,
      });
    }
  } finally {
    await source.query('COMMIT').catch(() => undefined);
  }
  const mismatches = tables.reduce((n, t) => n + t.missing + t.extra + t.duplicateKeys, 0);
  return {
    tables,
    rowsCompared: tables.reduce((n, t) => n + t.sourceRows, 0),
    mismatches,
    skippedTables: 0,
    ok: mismatches === 0,
  };
}

/**
 * A keyless table's target is its typed history in load order (t: truncate marker, r/i/u: a row image that
 * now exists, d: an image that no longer does); replaying it gives the current rows.
 */
function currentFromHistory(history: (string | null)[][]): (string | null)[][] {
  let rows: (string | null)[][] = [];
  for (const [op, ...image] of history) {
    if (op === 't') rows = [];
    else if (op === 'd') {
      const k = JSON.stringify(image);
      const i = rows.findIndex((r) => JSON.stringify(r) === k);
      if (i >= 0) rows.splice(i, 1);
    } else rows.push(image);
  }
  return rows;
}

/** A one-line command that queries a DuckDB file with the DuckDB library floe already has. */
export function duckDbQueryCommand(file: string, sql: string): string {
  const js = `import {DuckDBInstance} from "@duckdb/node-api"; const c = await (await DuckDBInstance.create(${JSON.stringify(file)})).connect(); console.table((await c.runAndReadAll(\`${sql}\`)).getRowObjectsJS())`;
  return `node --input-type=module -e '${js}'`;
}

/** What the demo prints at its end: how to look at the data it replicated. */
export function lookAtTheData(kind: 'duckdb' | 'snowflake', file: string, consoleUrl: string | undefined): string {
  const table =
    kind === 'snowflake' ? `"${DEMO_SF_DATABASE}.${DEMO_SF_SCHEMA}"."${DEMO_SCHEMA.toUpperCase()}_ORDERS"` : `${DEMO_SCHEMA}.orders`;
  const lines = [
    'look at the data:',
    ...(consoleUrl ? [`  console:  ${consoleUrl} (while the demo runs)`] : []),
    `  query:    ${duckDbQueryCommand(file, `SELECT * FROM ${table} ORDER BY 1 DESC LIMIT 5`)}`,
  ];
  if (kind === 'snowflake') lines.push(`  or serve it as Snowflake again: npx floe emulator --data ${file}`);
  return lines.join('\n') + '\n';
}
