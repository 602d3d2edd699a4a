/**
 * State store in a `floe` schema of a PostgreSQL database (by default the
 * source itself). Every write is one statement guarded by the incarnation, so
 * a store write can never mix positions of two slot incarnations, and
 * GREATEST() keeps progress from moving backwards.
 */
import pg from 'pg';
import type { PipelineProgress, StateStore, TablePhase, TablePlan, TableProgress } from './state-store.js';
import { staleIncarnation } from './state-store.js';
import { coerceError } from '../errors.js';
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
);`;

export class PostgresStateStore implements StateStore {
  readonly #pool: pg.Pool;
  readonly #url: string;

  constructor(url: string) {
    this.#url = url;
    this.#pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'floe-state', idleTimeoutMillis: 10_000 });
    this.#pool.on('error', () => undefined);
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
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(
        `INSERT INTO floe.replication_progress (pipeline, slot_name, incarnation, durable_lsn, ack_lsn) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (pipeline) DO UPDATE SET slot_name = $2, incarnation = $3, durable_lsn = $4, ack_lsn = $4, updated_at = now()`,
        [pipeline, slotName, incarnation, formatLsn(startLsn)],
      );
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
      `UPDATE floe.replication_progress SET durable_lsn = GREATEST(durable_lsn, $3::pg_lsn), ack_lsn = GREATEST(ack_lsn, $4::pg_lsn), updated_at = now()
        WHERE pipeline = $1 AND incarnation = $2 RETURNING 1`,
      [pipeline, incarnation, formatLsn(durableLsn), formatLsn(ackLsn)],
    );
    if (r.length === 0) throw staleIncarnation(pipeline, (await this.getProgress(pipeline))?.incarnation, incarnation);
  }

  async getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    const r = await this.#q<{
      table_name: string;
      phase: TablePhase;
      snapshot_lsn: string;
      range_count: number;
      pages_per_range: number;
      ranges_done: number[];
    }>(
      `SELECT table_name, phase, snapshot_lsn::text, range_count, pages_per_range, ranges_done FROM floe.table_progress WHERE pipeline = $1 AND incarnation = $2`,
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
        },
      ]),
    );
  }

  async setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    const r = await this.#q(
      `INSERT INTO floe.table_progress (pipeline, incarnation, table_name, phase, snapshot_lsn, range_count, pages_per_range)
       SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM floe.replication_progress WHERE pipeline = $1 AND incarnation = $2)
       ON CONFLICT (pipeline, table_name) DO UPDATE SET phase = $4, snapshot_lsn = $5, range_count = $6, pages_per_range = $7, updated_at = now()
       WHERE floe.table_progress.incarnation = $2 RETURNING 1`,
      [pipeline, incarnation, table, plan.phase, formatLsn(plan.snapshotLsn), plan.rangeCount, plan.pagesPerRange],
    );
    if (r.length === 0) throw staleIncarnation(pipeline, (await this.getProgress(pipeline))?.incarnation, incarnation);
  }

  async markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    const r = await this.#q(
      `UPDATE floe.table_progress SET ranges_done = CASE WHEN $4 = ANY (ranges_done) THEN ranges_done ELSE ranges_done || $4 END, updated_at = now()
        WHERE pipeline = $1 AND incarnation = $2 AND table_name = $3 RETURNING 1`,
      [pipeline, incarnation, table, rangeIndex],
    );
    if (r.length === 0) throw staleIncarnation(pipeline, (await this.getProgress(pipeline))?.incarnation, incarnation);
  }

  async removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    await this.#q(`DELETE FROM floe.table_progress WHERE pipeline = $1 AND incarnation = $2 AND table_name = $3`, [
      pipeline,
      incarnation,
      table,
    ]);
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #q<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values: unknown[]): Promise<R[]> {
    try {
      return (await this.#pool.query<R>(sql, values)).rows;
    } catch (err) {
      throw coerceError(err, 'state store');
    }
  }
}
