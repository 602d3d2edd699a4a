/**
 * State store in a `floe` schema of a PostgreSQL database (by default the
 * source itself). Every write is one statement guarded by the incarnation, so
 * a store write can never mix positions of two slot incarnations, and
 * GREATEST() keeps progress from moving backwards.
 */
import pg from 'pg';
import { createPool } from '../postgres/pool.js';
import type { PipelineProgress, StateStore, TablePhase, TablePlan, TableProgress } from './state-store.js';
import { staleFence, staleIncarnation, unknownTable } from './state-store.js';
import { coerceError, type FloeError } from '../errors.js';
import { formatLsn, parseLsn } from '../postgres/lsn.js';
import { redactUrl } from '../postgres/source.js';

const SCHEMA_SQL = `
CREATE SCHEMA IF NOT EXISTS floe;
CREATE TABLE IF NOT EXISTS floe.replication_progress (
  pipeline     text PRIMARY KEY,
  slot_name    text NOT NULL,
  incarnation  text NOT NULL,
  durable_lsn  pg_lsn NOT NULL,
  ack_lsn      pg_lsn NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS floe.table_progress (
  pipeline     text NOT NULL,
  incarnation  text NOT NULL,
  table_name   text NOT NULL,
  phase        text NOT NULL CHECK (phase IN ('snapshot', 'streaming')),
  snapshot_lsn pg_lsn NOT NULL,
  range_count  integer NOT NULL,
  pages_per_range integer NOT NULL,
  ranges_done  integer[] NOT NULL DEFAULT '{}',
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pipeline, table_name)
);
ALTER TABLE floe.replication_progress ADD COLUMN IF NOT EXISTS fence bigint NOT NULL DEFAULT 0;
ALTER TABLE floe.table_progress ADD COLUMN IF NOT EXISTS signature text;`;

/**
 * Locks the pipeline's progress row for this statement's transaction if it belongs to the incarnation
 * and no higher fencing token was recorded, and records the token ($T: NULL when unfenced).
 */
const FENCE_CTE = (t: string): string =>
  `f AS (UPDATE floe.replication_progress SET fence = GREATEST(fence, ${t}::bigint)
          WHERE pipeline = $1 AND incarnation = $2 AND (${t}::bigint IS NULL OR fence <= ${t}::bigint) RETURNING pipeline)`;

export class PostgresStateStore implements StateStore {
  readonly #pool: pg.Pool;
  readonly #url: string;
  readonly #token: bigint | undefined;
  readonly #view: boolean;

  /** `shared` is for fenced(): a view over the same pool with a fencing token. */
  constructor(url: string, shared?: { readonly pool: pg.Pool; readonly token: bigint }) {
    this.#url = url;
    this.#token = shared?.token;
    this.#view = shared !== undefined;
    if (shared) {
      this.#pool = shared.pool;
    } else {
      this.#pool = createPool({ connectionString: url, max: 2, application_name: 'floe-state', idleTimeoutMillis: 10_000 });
    }
  }

  async init(): Promise<void> {
    try {
      // Concurrent first starts race on CREATE ... IF NOT EXISTS; serialise them.
      const c = await this.#pool.connect();
      try {
        await c.query('SELECT pg_advisory_lock(hashtext($1))', ['floe.state-store.init']);
        await c.query(SCHEMA_SQL);
      } finally {
        await c.query('SELECT pg_advisory_unlock(hashtext($1))', ['floe.state-store.init']).catch(() => undefined);
        c.release();
      }
    } catch (err) {
      throw coerceError(err, `cannot prepare the state store in ${redactUrl(this.#url)}`);
    }
  }

  async getProgress(pipeline: string): Promise<PipelineProgress | undefined> {
    const r = await this.#q<{ slot_name: string; incarnation: string; durable_lsn: string; ack_lsn: string }>(
      `SELECT slot_name, incarnation, durable_lsn::text, ack_lsn::text FROM floe.replication_progress WHERE pipeline = $1`,
      [pipeline],
    );
    const row = r[0];
    if (!row) return undefined;
    return { slotName: row.slot_name, incarnation: row.incarnation, durableLsn: parseLsn(row.durable_lsn), ackLsn: parseLsn(row.ack_lsn) };
  }

  async beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void> {
    const c = await this.#connect();
    try {
      await c.query('BEGIN');
      const r = await c.query(
        `INSERT INTO floe.replication_progress (pipeline, slot_name, incarnation, durable_lsn, ack_lsn, fence)
         VALUES ($1, $2, $3, $4, $4, COALESCE($5::bigint, 0))
         ON CONFLICT (pipeline) DO UPDATE SET slot_name = $2, incarnation = $3, durable_lsn = $4, ack_lsn = $4,
           fence = GREATEST(floe.replication_progress.fence, $5::bigint), updated_at = now()
         WHERE $5::bigint IS NULL OR floe.replication_progress.fence <= $5::bigint
         RETURNING 1`,
        [pipeline, slotName, incarnation, formatLsn(startLsn), this.#tokenParam()],
      );
      if (r.rowCount === 0) throw staleFence(pipeline, this.#token!);
      // A separate statement (READ COMMITTED: a fresh snapshot, taken after the row lock above) so it also
      // sees table rows a writer of the old incarnation committed while this transaction waited.
      await c.query(`DELETE FROM floe.table_progress WHERE pipeline = $1`, [pipeline]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw coerceError(err, 'state store');
    } finally {
      c.release();
    }
  }

  async recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    const r = await this.#q(
      `UPDATE floe.replication_progress SET durable_lsn = GREATEST(durable_lsn, $3::pg_lsn), ack_lsn = GREATEST(ack_lsn, $4::pg_lsn),
         fence = GREATEST(fence, $5::bigint), updated_at = now()
        WHERE pipeline = $1 AND incarnation = $2 AND ($5::bigint IS NULL OR fence <= $5::bigint) RETURNING 1`,
      [pipeline, incarnation, formatLsn(durableLsn), formatLsn(ackLsn), this.#tokenParam()],
    );
    if (r.length === 0) throw await this.#refusal(pipeline, incarnation);
  }

  async getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    const r = await this.#q<{
      table_name: string;
      phase: TablePhase;
      snapshot_lsn: string;
      range_count: number;
      pages_per_range: number;
      ranges_done: number[];
      signature: string | null;
    }>(
      `SELECT table_name, phase, snapshot_lsn::text, range_count, pages_per_range, ranges_done, signature FROM floe.table_progress WHERE pipeline = $1 AND incarnation = $2`,
      [pipeline, incarnation],
    );
    return new Map(
      r.map((row) => [
        row.table_name,
        {
          table: row.table_name,
          phase: row.phase,
          snapshotLsn: parseLsn(row.snapshot_lsn),
          rangeCount: row.range_count,
          pagesPerRange: row.pages_per_range,
          rangesDone: new Set(row.ranges_done),
          ...(row.signature === null ? {} : { signature: row.signature }),
        },
      ]),
    );
  }

  async setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    const r = await this.#q(
      `WITH ${FENCE_CTE('$8')}
       INSERT INTO floe.table_progress (pipeline, incarnation, table_name, phase, snapshot_lsn, range_count, pages_per_range, signature)
       SELECT $1, $2, $3, $4::text, $5::pg_lsn, $6::integer, $7::integer, $9::text FROM f
       ON CONFLICT (pipeline, table_name) DO UPDATE SET phase = $4, snapshot_lsn = $5, range_count = $6, pages_per_range = $7, signature = $9,
         updated_at = now()
       WHERE floe.table_progress.incarnation = $2 RETURNING 1`,
      [
        pipeline,
        incarnation,
        table,
        plan.phase,
        formatLsn(plan.snapshotLsn),
        plan.rangeCount,
        plan.pagesPerRange,
        this.#tokenParam(),
        plan.signature ?? null,
      ],
    );
    if (r.length === 0) throw await this.#refusal(pipeline, incarnation);
  }

  async markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    const r = await this.#q<{ locked: boolean; updated: boolean }>(
      `WITH ${FENCE_CTE('$5')},
       u AS (UPDATE floe.table_progress t
                SET ranges_done = CASE WHEN $4 = ANY (t.ranges_done) THEN t.ranges_done ELSE t.ranges_done || $4::integer END, updated_at = now()
               FROM f WHERE t.pipeline = $1 AND t.incarnation = $2 AND t.table_name = $3 RETURNING 1)
       SELECT EXISTS (SELECT 1 FROM f) AS locked, EXISTS (SELECT 1 FROM u) AS updated`,
      [pipeline, incarnation, table, rangeIndex, this.#tokenParam()],
    );
    if (!r[0]?.locked) throw await this.#refusal(pipeline, incarnation);
    if (!r[0].updated) throw unknownTable(pipeline, table);
  }

  async removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    const r = await this.#q(
      `WITH ${FENCE_CTE('$4')},
       d AS (DELETE FROM floe.table_progress WHERE pipeline = $1 AND incarnation = $2 AND table_name = $3 AND EXISTS (SELECT 1 FROM f))
       SELECT 1 FROM f`,
      [pipeline, incarnation, table, this.#tokenParam()],
    );
    if (r.length === 0) throw await this.#refusal(pipeline, incarnation);
  }

  fenced(token: bigint): StateStore {
    return new PostgresStateStore(this.#url, { pool: this.#pool, token });
  }

  async close(): Promise<void> {
    if (!this.#view) await this.#pool.end();
  }

  #tokenParam(): string | null {
    return this.#token === undefined ? null : this.#token.toString();
  }

  /** Why a guarded write matched no row: a higher fencing token, or another (or no) incarnation. */
  async #refusal(pipeline: string, incarnation: string): Promise<FloeError> {
    const r = await this.#q<{ incarnation: string; fence: string }>(
      `SELECT incarnation, fence::text FROM floe.replication_progress WHERE pipeline = $1`,
      [pipeline],
    );
    const row = r[0];
    if (this.#token !== undefined && row && BigInt(row.fence) > this.#token) return staleFence(pipeline, this.#token);
    return staleIncarnation(pipeline, row?.incarnation, incarnation);
  }

  async #connect(): Promise<pg.PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (err) {
      throw coerceError(err, 'state store');
    }
  }

  async #q<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values: unknown[]): Promise<R[]> {
    try {
      return (await this.#pool.query<R>(sql, values)).rows;
    } catch (err) {
      throw coerceError(err, 'state store');
    }
  }
}
