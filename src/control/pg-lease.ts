/**
 * Pipeline leases on PostgreSQL session advisory locks, in the control-plane database.
 *
 * One dedicated connection per worker holds every lock the worker has. A lock is held exactly as long
 * as that session lives, so a worker that dies loses its leases when the server ends its session:
 *
 * - process killed (kill -9, OOM): the kernel closes the socket, the server sees EOF and releases the
 *   locks at once; another worker takes over at its next reconciliation (the manager's poll interval);
 * - machine or network gone: the server's TCP keepalive (set per session below: 10 s idle, then 3 probes
 *   5 s apart) ends the session after about 25 s; the worker, meanwhile, pings its lock connection every
 *   `checkIntervalMs` and gives every lease up (its `lost` signal aborts) when a ping fails or takes
 *   longer than `checkTimeoutMs`, well before another worker can take over.
 *
 * Leases are keyed by pipeline name (unique, and immutable while the row exists). Fencing tokens come
 * from the sequence `floe.lease_token`, drawn in the statement that runs right after the lock was granted,
 * on the same connection, and recorded in `floe.pipeline.lease_token`: only the lock holder ever gets a
 * token, and each token is greater than every token handed out before, for every pipeline, including
 * an earlier pipeline of the same name (the state store keys progress by name).
 */
import pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import type { Lease, LeaseProvider } from './lease.js';
import type { Logger } from '../telemetry/logger.js';
import { silentLogger } from '../telemetry/logger.js';
import { redactUrl } from '../postgres/source.js';
import { withTls } from '../postgres/tls.js';

export interface PgLeaseOptions {
  /** The control-plane database. */
  readonly url: string;
  /** This worker's id (shown in `application_name`, which `holders()` reads). */
  readonly worker: string;
  /** How often the lock connection is pinged. (Default: 5000 ms) */
  readonly checkIntervalMs?: number;
  /** A ping slower than this counts as a dead connection. (Default: 5000 ms) */
  readonly checkTimeoutMs?: number;
  readonly log?: Logger;
}

/** Advisory lock key of a pipeline: a 64-bit hash of its id, computed by the server. */
const LOCK_KEY_SQL = `hashtextextended('floe.pipeline/' || $1::text, 0)`;

/** application_name of lock connections; `holders()` reads the worker id back from it. */
const APPLICATION_PREFIX = 'floe-lease ';

interface Held {
  readonly controller: AbortController;
  readonly session: Session;
}

/** One lock connection; replaced by a new one after it died. */
interface Session {
  readonly client: pg.Client;
  readonly dead: AbortController;
  /** Ends the session: every lease on it is lost. */
  end(reason: string): void;
}

export class PgLeaseProvider implements LeaseProvider {
  readonly #options: Required<Omit<PgLeaseOptions, 'log'>> & { log: Logger };
  readonly #held = new Map<string, Held>();
  #session: Promise<Session> | undefined;
  /** The session #session resolved to, while it lives. */
  #current: Session | undefined;
  #closed = false;

  constructor(options: PgLeaseOptions) {
    this.#options = { checkIntervalMs: 5000, checkTimeoutMs: 5000, log: silentLogger, ...options };
  }

  async tryAcquire(pipeline: string, worker: string): Promise<Lease | undefined> {
    if (this.#closed) throw new FloeError('internal', 'the lease provider is closed');
    if (worker !== this.#options.worker) {
      throw new FloeError('internal', `this lease provider belongs to worker ${this.#options.worker}, not ${worker}`);
    }
    // Advisory locks are re-entrant within a session: a second acquire would "succeed" and a single
    // unlock would then leave the lock held. The manager never asks twice, but the provider refuses too.
    if (this.#held.has(pipeline)) return undefined;
    const session = await this.#connect();
    const { client } = session;
    const locked = await query<{ ok: boolean }>(client, `SELECT pg_try_advisory_lock(${LOCK_KEY_SQL}) AS ok`, [pipeline]);
    if (!locked[0]?.ok) return undefined;
    let token: bigint;
    try {
      const r = await query<{ token: string }>(
        client,
        `UPDATE floe.pipeline SET lease_token = nextval('floe.lease_token') WHERE name = $1 RETURNING lease_token::text AS token`,
        [pipeline],
      );
      if (r.length === 0) {
        // The pipeline was deleted meanwhile.
        await query(client, `SELECT pg_advisory_unlock(${LOCK_KEY_SQL})`, [pipeline]).catch(() => undefined);
        return undefined;
      }
      token = BigInt(r[0]!.token);
    } catch (err) {
      await query(client, `SELECT pg_advisory_unlock(${LOCK_KEY_SQL})`, [pipeline]).catch(() => undefined);
      throw err;
    }
    if (session.dead.signal.aborted) return undefined; // the session died between the two statements
    const controller = new AbortController();
    const held: Held = { controller, session };
    this.#held.set(pipeline, held);
    const onDead = () => controller.abort(session.dead.signal.reason);
    session.dead.signal.addEventListener('abort', onDead, { once: true });
    let released = false;
    return {
      pipeline,
      token,
      lost: controller.signal,
      release: async () => {
        if (released) return;
        released = true;
        session.dead.signal.removeEventListener('abort', onDead);
        if (this.#held.get(pipeline) === held) this.#held.delete(pipeline);
        if (!session.dead.signal.aborted) {
          // A failed unlock leaves the lock to the session's end; nothing else can be done here.
          await query(client, `SELECT pg_advisory_unlock(${LOCK_KEY_SQL})`, [pipeline]).catch((err) =>
            this.#options.log.warn({ err: coerceError(err).message, pipeline }, 'could not release a pipeline lease'),
          );
        }
        if (!controller.signal.aborted) controller.abort(new FloeError('state', 'lease released'));
      },
    };
  }

  async holders(): Promise<Map<string, string>> {
    const session = await this.#connect();
    // A 64-bit advisory lock shows in pg_locks as classid (high half) and objid (low half), objsubid 1.
    const rows = await query<{ pipeline: string; app: string }>(
      session.client,
      `SELECT p.name AS pipeline, a.application_name AS app
         FROM floe.pipeline p
         JOIN pg_locks l ON l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('floe.pipeline/' || p.name, 0)
         JOIN pg_stat_activity a ON a.pid = l.pid`,
      [],
    );
    return new Map(
      rows.filter((r) => r.app.startsWith(APPLICATION_PREFIX)).map((r) => [r.pipeline, r.app.slice(APPLICATION_PREFIX.length)]),
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#session;
    this.#session = undefined;
    if (!pending) return;
    const session = await pending.catch(() => undefined);
    if (!session) return;
    // Ending the session releases every lock it holds.
    session.end('the lease provider was closed');
    await session.client.end().catch(() => undefined);
  }

  /** The live lock session, connecting a new one if there is none (or the last one died). */
  #connect(): Promise<Session> {
    const existing = this.#session;
    if (existing) return existing;
    const connecting = this.#open();
    this.#session = connecting;
    connecting.catch(() => {
      if (this.#session === connecting) this.#session = undefined;
    });
    return connecting;
  }

  async #open(): Promise<Session> {
    const { url, worker, log } = this.#options;
    const client = new pg.Client({
      connectionString: withTls(url),
      // application_name is truncated at 63 bytes by the server; holders() reads the worker id from it.
      application_name: (APPLICATION_PREFIX + worker).slice(0, 63),
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    const dead = new AbortController();
    const timers: { ping?: NodeJS.Timeout } = {};
    const die = (reason: string) => {
      if (dead.signal.aborted) return;
      dead.abort(
        new FloeError('state', `lost every pipeline lease: ${reason}`, { hint: 'the lock connection to the control plane ended' }),
      );
      if (this.#current === session) {
        this.#current = undefined;
        this.#session = undefined;
      }
      for (const [pipeline, held] of this.#held) if (held.session === session) this.#held.delete(pipeline);
      if (!this.#closed) log.warn({ reason }, 'pipeline lease connection lost; every lease of this worker is given up');
      clearInterval(timers.ping);
      // A connection that stopped answering may never emit 'end': drop its socket.
      client.end().catch(() => undefined);
    };
    const session: Session = { client, dead, end: die };
    client.on('error', (err) => die(coerceError(err).message));
    client.on('end', () => die('connection closed'));
    try {
      await client.connect();
      // Locks must outlive idle periods: no server-side idle timeouts on this session, and the server
      // notices a vanished worker through TCP keepalive. idle_session_timeout exists from PostgreSQL 14.
      await client.query(`SET idle_in_transaction_session_timeout = 0; SET statement_timeout = '30s'`);
      await client.query(`SET idle_session_timeout = 0`).catch(() => undefined);
      await client.query(`SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3`);
    } catch (err) {
      dead.abort();
      await client.end().catch(() => undefined);
      throw coerceError(err, `cannot open the lease connection to ${redactUrl(url)}`);
    }
    let pinging = false;
    const ping = setInterval(() => {
      if (pinging) return;
      pinging = true;
      const timeout = setTimeout(() => die(`no answer to a ping within ${this.#options.checkTimeoutMs} ms`), this.#options.checkTimeoutMs);
      client
        .query('SELECT 1')
        .catch((err) => die(coerceError(err).message))
        .finally(() => {
          clearTimeout(timeout);
          pinging = false;
        });
    }, this.#options.checkIntervalMs);
    ping.unref();
    timers.ping = ping;
    this.#current = session;
    return session;
  }
}

async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(client: pg.Client, sql: string, values: unknown[]): Promise<R[]> {
  try {
    return (await client.query<R>(sql, values)).rows;
  } catch (err) {
    throw coerceError(err, 'lease');
  }
}
