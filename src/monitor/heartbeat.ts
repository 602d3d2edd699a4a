/**
 * Heartbeat (design.md §3): on an interval, a transactional logical decoding message in the source
 * database, `pg_logical_emit_message(true, 'floe_heartbeat', <json>)`.
 *
 * Why: a slot's confirmed position only moves when the client acknowledges something, and its
 * restart_lsn only when decoding reaches a point it can restart from. floe acknowledges the server's
 * keepalive wal_end when it has nothing in flight, which keeps a slot moving on an idle publication
 * whenever the server sends keepalives with newer positions (measured bounded on PostgreSQL 15 and 18,
 * test/heartbeat.test.ts). The heartbeat does not depend on the server's keepalive pacing while it skips
 * long stretches of other databases' WAL, nor on tools in front of floe that only forward positions of
 * real messages: it puts a decodable transaction of this database into the WAL on a fixed cadence. It is a real,
 * decodable transaction in this database: it reaches floe as BEGIN/MESSAGE/COMMIT, and its commit is
 * acknowledged like any other, so the slot advances past everything written before it.
 *
 * Privileges: `pg_logical_emit_message` needs no role attribute — neither REPLICATION nor superuser;
 * EXECUTE on the function is granted to PUBLIC by default (an administrator may have revoked it, then:
 * `GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO <role>`). It writes WAL, so
 * it fails on a read-only standby or with default_transaction_read_only.
 *
 * Failures never stop replication: they are logged (once per distinct error until a success) and the
 * next beat tries again on a fresh connection.
 */
import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import { connectSource, type SourceConfig } from '../postgres/source.js';
import type { Logger } from '../telemetry/logger.js';
import type { FloeMetrics } from '../telemetry/metrics.js';

export const HEARTBEAT_PREFIX = 'floe_heartbeat';
export const HEARTBEAT_APPLICATION_NAME = 'floe-heartbeat';

export interface HeartbeatOptions {
  readonly source: SourceConfig;
  /** Name in the message, logs and the `source` metric label. */
  readonly sourceName: string;
  readonly pipeline: string;
  /** Time between messages. (Default: 60000 ms) */
  readonly intervalMs?: number;
  /** statement_timeout of the heartbeat statement. (Default: 5000 ms) */
  readonly statementTimeoutMs?: number;
  readonly log: Logger;
  readonly metrics?: FloeMetrics;
}

export class Heartbeat {
  readonly #o: HeartbeatOptions;
  #client: pg.Client | undefined;
  #lastError: string | undefined;
  #beats = 0;

  constructor(options: HeartbeatOptions) {
    this.#o = options;
  }

  /** Messages written so far. */
  get beats(): number {
    return this.#beats;
  }

  /** Writes one message now; resolves with its LSN, or undefined after logging a failure. */
  async beat(): Promise<string | undefined> {
    const { log, metrics, sourceName } = this.#o;
    try {
      this.#client ??= await connectSource(
        { ...this.#o.source, applicationName: HEARTBEAT_APPLICATION_NAME },
        { options: `-c statement_timeout=${this.#o.statementTimeoutMs ?? 5000}` },
      );
      const content = JSON.stringify({ pipeline: this.#o.pipeline, at: new Date().toISOString() });
      const r = await this.#client.query<{ lsn: string }>(`SELECT pg_logical_emit_message(true, $1, $2)::text AS lsn`, [
        HEARTBEAT_PREFIX,
        content,
      ]);
      this.#beats++;
      metrics?.heartbeat(sourceName, 'ok');
      if (this.#lastError !== undefined) log.info({ source: sourceName }, 'heartbeat works again');
      this.#lastError = undefined;
      return r.rows[0]!.lsn;
    } catch (err) {
      metrics?.heartbeat(sourceName, 'error');
      const e = coerceError(err, 'heartbeat failed');
      const denied = (err as { code?: string }).code === '42501';
      if (e.message !== this.#lastError) {
        log.warn(
          {
            source: sourceName,
            err: e.message,
            hint: denied
              ? 'GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO <floe role> (no REPLICATION or superuser needed), or turn the heartbeat off with --heartbeat-interval 0'
              : e.hint,
          },
          'heartbeat failed; replication continues, the slot may advance less often while published tables are idle',
        );
      }
      this.#lastError = e.message;
      await this.#dropClient();
      return undefined;
    }
  }

  /** Beats every interval until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const interval = this.#o.intervalMs ?? 60_000;
    try {
      while (!signal.aborted) {
        await sleep(interval, undefined, { signal }).catch(() => undefined);
        if (signal.aborted) break;
        await this.beat();
      }
    } finally {
      await this.#dropClient();
    }
  }

  async #dropClient(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    await c?.end().catch(() => undefined);
  }
}
