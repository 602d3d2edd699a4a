/**
 * Reads and writes of the control-plane tables, shared by the CLI, `floe status` and the manager.
 * Every function takes a `Queryable` (a pg Client, PoolClient or Pool) and runs one short statement,
 * or a few inside the caller's transaction: nothing here holds a lock across network I/O.
 */
import pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import { redactUrl } from '../postgres/source.js';
import type { DestinationRow, PipelineRow, PipelineState, PipelineTableRow, PipelineTableState, SourceRow, WorkerRow } from './config.js';
import { checkSchemaVersion, type Queryable } from './schema.js';
import { withTls } from '../postgres/tls.js';

export type { Queryable } from './schema.js';

/** Environment variable naming the control-plane database. */
export const DATABASE_URL_ENV = 'FLOE_DATABASE_URL';

/**
 * One connection to the control plane (what every CLI command uses). Unless `migrating`, refuses a
 * database whose schema is missing or from another floe version.
 */
export async function connectControlPlane(url: string | undefined, options: { migrating?: boolean } = {}): Promise<pg.Client> {
  if (!url) {
    throw new FloeError('config', 'no control-plane database given', { hint: `set ${DATABASE_URL_ENV} or pass --database-url` });
  }
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new FloeError('config', 'the control-plane database URL must start with postgres:// or postgresql://');
  }
  const client = new pg.Client({ connectionString: withTls(url), application_name: 'floe-cli', connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw coerceError(err, `cannot connect to the control-plane database ${redactUrl(url)}`);
  }
  try {
    // A CLI command must not hang on a lock held by a long transaction elsewhere.
    await client.query(`SET lock_timeout = '10s'; SET statement_timeout = '30s'`);
    if (!options.migrating) await checkSchemaVersion(client);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw controlPlaneError(err);
  }
  return client;
}

/** An error on the control plane; a missing privilege is the control-plane role's, not the replication user's. */
export function controlPlaneError(err: unknown): FloeError {
  if (!(err instanceof FloeError) && (err as { code?: string }).code === '42501') {
    return new FloeError('auth', (err as Error).message, {
      cause: err,
      hint: 'the control-plane role needs USAGE on schema floe and SELECT, INSERT, UPDATE, DELETE on its tables (GRANT ... ON ALL TABLES IN SCHEMA floe); see "who may write the control plane" in docs/operations.md',
    });
  }
  return coerceError(err);
}

// ---- row mapping ------------------------------------------------------------------------------

type Raw = Record<string, unknown>;

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const date = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));

const SOURCE_COLUMNS = `id::text, name, url, password, options`;
const DESTINATION_COLUMNS = `id::text, name, type, url, secrets, options`;
const PIPELINE_COLUMNS = `p.id::text, p.name, p.source_id::text, p.destination_id::text, p.publication, p.slot_name, p.options,
  p.status, p.state, p.last_error, p.last_error_at, p.lag_bytes::text, p.durable_lsn::text, p.owner_worker,
  p.config_version::text, p.delete_requested_at, p.drop_slot, p.created_at, p.updated_at, p.destination_breaker,
  p.slot_retained_bytes::text, p.slot_wal_status, p.lag_seconds, p.monitored_at`;
const TABLE_COLUMNS = `pipeline_id::text, table_name, skip, resync_requested_at, state, rows_snapshotted::text, last_error, updated_at`;

function toSource(r: Raw): SourceRow {
  return { id: String(r.id), name: String(r.name), url: String(r.url), password: str(r.password), options: r.options };
}

function toDestination(r: Raw): DestinationRow {
  return { id: String(r.id), name: String(r.name), type: String(r.type), url: String(r.url), secrets: r.secrets, options: r.options };
}

function toPipeline(r: Raw): PipelineRow {
  return {
    id: String(r.id),
    name: String(r.name),
    sourceId: String(r.source_id),
    destinationId: String(r.destination_id),
    publication: String(r.publication),
    slotName: String(r.slot_name),
    options: r.options,
    status: String(r.status),
    state: String(r.state),
    lastError: str(r.last_error),
    lastErrorAt: date(r.last_error_at),
    lagBytes: num(r.lag_bytes),
    destinationBreaker: str(r.destination_breaker),
    slotRetainedBytes: num(r.slot_retained_bytes),
    slotWalStatus: str(r.slot_wal_status),
    lagSeconds: num(r.lag_seconds),
    monitoredAt: date(r.monitored_at),
    durableLsn: str(r.durable_lsn),
    ownerWorker: str(r.owner_worker),
    configVersion: Number(r.config_version),
    deleteRequestedAt: date(r.delete_requested_at),
    dropSlot: r.drop_slot === true,
    createdAt: new Date(r.created_at as string),
    updatedAt: new Date(r.updated_at as string),
  };
}

function toPipelineTable(r: Raw): PipelineTableRow {
  return {
    pipelineId: String(r.pipeline_id),
    tableName: String(r.table_name),
    skip: r.skip === true,
    resyncRequestedAt: date(r.resync_requested_at),
    state: str(r.state),
    rowsSnapshotted: num(r.rows_snapshotted),
    lastError: str(r.last_error),
    updatedAt: new Date(r.updated_at as string),
  };
}

function toWorker(r: Raw): WorkerRow {
  return {
    id: String(r.id),
    host: str(r.host),
    pid: num(r.pid),
    startedAt: date(r.started_at),
    heartbeatAt: date(r.heartbeat_at),
    maxPipelines: num(r.max_pipelines),
  };
}

// ---- reads ------------------------------------------------------------------------------------

export async function listSources(db: Queryable): Promise<SourceRow[]> {
  return (await db.query(`SELECT ${SOURCE_COLUMNS} FROM floe.source ORDER BY name`)).rows.map(toSource);
}

export async function findSource(db: Queryable, name: string): Promise<SourceRow | undefined> {
  const r = await db.query(`SELECT ${SOURCE_COLUMNS} FROM floe.source WHERE name = $1`, [name]);
  return r.rows[0] ? toSource(r.rows[0]) : undefined;
}

export async function listDestinations(db: Queryable): Promise<DestinationRow[]> {
  return (await db.query(`SELECT ${DESTINATION_COLUMNS} FROM floe.destination ORDER BY name`)).rows.map(toDestination);
}

export async function findDestination(db: Queryable, name: string): Promise<DestinationRow | undefined> {
  const r = await db.query(`SELECT ${DESTINATION_COLUMNS} FROM floe.destination WHERE name = $1`, [name]);
  return r.rows[0] ? toDestination(r.rows[0]) : undefined;
}

export async function listPipelines(db: Queryable): Promise<PipelineRow[]> {
  return (await db.query(`SELECT ${PIPELINE_COLUMNS} FROM floe.pipeline p ORDER BY p.name`)).rows.map(toPipeline);
}

export async function findPipeline(db: Queryable, name: string): Promise<PipelineRow | undefined> {
  const r = await db.query(`SELECT ${PIPELINE_COLUMNS} FROM floe.pipeline p WHERE p.name = $1`, [name]);
  return r.rows[0] ? toPipeline(r.rows[0]) : undefined;
}

export interface PipelineRows {
  readonly pipeline: PipelineRow;
  readonly source?: SourceRow;
  readonly destination?: DestinationRow;
}

/**
 * Every pipeline with the source and destination rows it references: the input of
 * `resolvePipelineConfig`. One consistent snapshot (a single statement).
 */
export async function loadPipelineRows(db: Queryable): Promise<PipelineRows[]> {
  const r = await db.query<{ p: Raw; s: Raw | null; d: Raw | null }>(
    `SELECT to_jsonb(x) AS p,
            (SELECT to_jsonb(s) FROM (SELECT ${SOURCE_COLUMNS} FROM floe.source WHERE id = x.source_id::bigint) s) AS s,
            (SELECT to_jsonb(d) FROM (SELECT ${DESTINATION_COLUMNS} FROM floe.destination WHERE id = x.destination_id::bigint) d) AS d
       FROM (SELECT ${PIPELINE_COLUMNS} FROM floe.pipeline p) x
      ORDER BY x.name`,
  );
  return r.rows.map((row) => ({
    pipeline: toPipeline(row.p),
    ...(row.s ? { source: toSource(row.s) } : {}),
    ...(row.d ? { destination: toDestination(row.d) } : {}),
  }));
}

export async function listPipelineTables(db: Queryable, pipelineId?: string): Promise<PipelineTableRow[]> {
  const r =
    pipelineId === undefined
      ? await db.query(`SELECT ${TABLE_COLUMNS} FROM floe.pipeline_table ORDER BY pipeline_id, table_name`)
      : await db.query(`SELECT ${TABLE_COLUMNS} FROM floe.pipeline_table WHERE pipeline_id = $1 ORDER BY table_name`, [pipelineId]);
  return r.rows.map(toPipelineTable);
}

export async function listWorkers(db: Queryable): Promise<WorkerRow[]> {
  const r = await db.query(`SELECT id, host, pid, started_at, heartbeat_at, max_pipelines FROM floe.worker ORDER BY id`);
  return r.rows.map(toWorker);
}

// ---- what workers report ------------------------------------------------------------------------

export interface PipelineReport {
  readonly state: PipelineState;
  /** undefined: leave as is; null: clear. Must not contain secrets (see redactSecrets). */
  readonly lastError?: string | null;
  readonly lagBytes?: number | null;
  /** `X/Y`. */
  readonly durableLsn?: string | null;
  readonly ownerWorker?: string | null;
}

/**
 * Writes what a worker observed to the pipeline row. Touches no user-controlled column, so it neither
 * bumps config_version nor sends a notification.
 */
export async function reportPipelineState(db: Queryable, pipelineId: string, report: PipelineReport): Promise<void> {
  await db.query(
    `UPDATE floe.pipeline SET
       state = $2,
       last_error = CASE WHEN $3::boolean THEN $4 ELSE last_error END,
       last_error_at = CASE WHEN $3::boolean THEN (CASE WHEN $4::text IS NULL THEN NULL ELSE now() END) ELSE last_error_at END,
       lag_bytes = CASE WHEN $5::boolean THEN $6::bigint ELSE lag_bytes END,
       durable_lsn = CASE WHEN $7::boolean THEN $8::pg_lsn ELSE durable_lsn END,
       owner_worker = CASE WHEN $9::boolean THEN $10 ELSE owner_worker END
     WHERE id = $1`,
    [
      pipelineId,
      report.state,
      report.lastError !== undefined,
      report.lastError ?? null,
      report.lagBytes !== undefined,
      report.lagBytes ?? null,
      report.durableLsn !== undefined,
      report.durableLsn ?? null,
      report.ownerWorker !== undefined,
      report.ownerWorker ?? null,
    ],
  );
}

/** Records a table's replication state (creating its pipeline_table row if needed); no notification. */
export async function reportTableState(
  db: Queryable,
  pipelineId: string,
  table: string,
  state: PipelineTableState,
  detail: { rows?: number; error?: string | null } = {},
): Promise<void> {
  await db.query(
    `INSERT INTO floe.pipeline_table (pipeline_id, table_name, state, rows_snapshotted, last_error) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (pipeline_id, table_name) DO UPDATE SET state = EXCLUDED.state,
       rows_snapshotted = coalesce(EXCLUDED.rows_snapshotted, floe.pipeline_table.rows_snapshotted),
       last_error = EXCLUDED.last_error, updated_at = now()`,
    [pipelineId, table, state, detail.rows ?? null, detail.error ?? null],
  );
}

/**
 * Marks resync requests up to `before` as handled (the pipeline took them). `before` came back through a
 * JavaScript Date (milliseconds) while the column holds microseconds, hence the truncation.
 */
export async function clearResyncRequest(db: Queryable, pipelineId: string, table: string, before: Date): Promise<void> {
  await db.query(
    `UPDATE floe.pipeline_table SET resync_requested_at = NULL, updated_at = now()
      WHERE pipeline_id = $1 AND table_name = $2 AND date_trunc('milliseconds', resync_requested_at) <= $3`,
    [pipelineId, table, before],
  );
}
