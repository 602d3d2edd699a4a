/**
 * A worker's row in `floe.worker`: registered at start, heartbeated while running, removed at a graceful
 * stop. Managers count live workers (fresh heartbeat) to spread pipelines; `floe status` lists them.
 * Leases, not this row, decide who runs a pipeline: a stale row only skews the spreading for one TTL.
 */
import { hostname } from 'node:os';
import type pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { Queryable } from './schema.js';

/** `<host>-<pid>`: unique among the processes of one machine, readable in `floe status`. */
export function defaultWorkerId(): string {
  return `${hostname()}-${process.pid}`;
}

/** Ids of the workers whose heartbeat is younger than `ttlMs`. */
export async function liveWorkers(db: Queryable, ttlMs: number): Promise<string[]> {
  const r = await db.query<{ id: string }>(`SELECT id FROM floe.worker WHERE heartbeat_at > now() - $1 * interval '1 millisecond'`, [
    ttlMs,
  ]);
  return r.rows.map((row) => row.id);
}

export interface WorkerRegistrationOptions {
  readonly id: string;
  readonly maxPipelines: number;
  /** (Default: 5000 ms) */
  readonly heartbeatIntervalMs?: number;
  /** A row this old is another worker's, alive; a start with its id is refused. (Default: 15000 ms) */
  readonly ttlMs?: number;
  readonly log: Logger;
}

export class WorkerRegistration {
  readonly #db: pg.Pool;
  readonly #o: Required<WorkerRegistrationOptions>;
  #timer: NodeJS.Timeout | undefined;

  constructor(db: pg.Pool, options: WorkerRegistrationOptions) {
    this.#db = db;
    this.#o = { heartbeatIntervalMs: 5000, ttlMs: 15_000, ...options };
  }

  /** Inserts this worker's row; refuses an id whose row is heartbeated by a live process. */
  async register(): Promise<void> {
    const { id, ttlMs, maxPipelines } = this.#o;
    const r = await this.#db.query<{ live: boolean }>(
      `SELECT heartbeat_at > now() - $2 * interval '1 millisecond' AS live FROM floe.worker WHERE id = $1`,
      [id, ttlMs],
    );
    if (r.rows[0]?.live) {
      throw new FloeError('config', `worker id "${id}" is in use by a running worker`, {
        hint: `choose another --worker-id, or wait ${Math.ceil(ttlMs / 1000)} s if that worker just died`,
      });
    }
    await this.#db.query(
      `INSERT INTO floe.worker (id, host, pid, max_pipelines) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, max_pipelines = EXCLUDED.max_pipelines,
         started_at = now(), heartbeat_at = now()`,
      [id, hostname(), process.pid, maxPipelines],
    );
    this.#timer = setInterval(() => {
      this.#beating ??= this.#beat().finally(() => (this.#beating = undefined));
    }, this.#o.heartbeatIntervalMs);
    this.#timer.unref();
  }

  /** Removes the row (graceful stop): other workers count one worker less at once. */
  async unregister(): Promise<void> {
    clearInterval(this.#timer);
    // A heartbeat still running re-inserts the row (its upsert may land after the DELETE otherwise).
    await this.#beating;
    await this.#db.query(`DELETE FROM floe.worker WHERE id = $1`, [this.#o.id]).catch((err) => {
      this.#o.log.warn({ err: coerceError(err).message }, 'could not remove the worker row');
    });
  }

  /** The heartbeat running now, if any. */
  #beating: Promise<void> | undefined;

  async #beat(): Promise<void> {
    const { id, maxPipelines, log } = this.#o;
    try {
      // Re-inserted if someone removed it (a cleanup of rows that looked dead).
      await this.#db.query(
        `INSERT INTO floe.worker (id, host, pid, max_pipelines) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
        [id, hostname(), process.pid, maxPipelines],
      );
      // Rows of workers dead for an hour are noise in `floe status`.
      await this.#db.query(`DELETE FROM floe.worker WHERE heartbeat_at < now() - interval '1 hour'`);
    } catch (err) {
      log.warn({ err: coerceError(err).message }, 'worker heartbeat failed');
    }
  }
}
