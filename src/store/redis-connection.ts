/**
 * Redis connections for the state store and the leases: one place that turns a URL (plus environment)
 * into an ioredis client for a single Redis, a Sentinel-managed primary or a Cluster, with the options
 * that make failures bounded, and that maps Redis failures to FloeError.
 *
 * URL forms:
 * - `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS): one Redis;
 * - `redis+sentinel://[user:password@]host:port[,host:port...]/<primary-name>[/db]`: Sentinels to ask for
 *   the primary (also: a redis:// URL plus FLOE_REDIS_SENTINELS=host:port,... and FLOE_REDIS_SENTINEL_NAME);
 * - `redis-cluster://[user:password@]host:port[,host:port...]`: seed nodes of a Cluster (also: a redis://
 *   URL plus FLOE_REDIS_CLUSTER=true).
 */
import { createHash } from 'node:crypto';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { FloeError } from '../errors.js';

export type RedisClient = Redis | Cluster;

export interface RedisConnectionOptions {
  readonly url: string;
  /** Defaults to process.env; tests pass their own. */
  readonly env?: NodeJS.ProcessEnv;
}

export interface RedisTarget {
  readonly mode: 'single' | 'sentinel' | 'cluster';
  /** host:port list, for messages (never the password). */
  readonly where: string;
  create(): RedisClient;
}

interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Options that keep a Redis outage from growing memory or hanging a pipeline:
 * - no offline queue: a command issued while disconnected fails at once instead of queueing without bound
 *   (the pipeline's retry loop backs off and tries again; every store write is idempotent);
 * - maxRetriesPerRequest 0: a command in flight when the connection drops fails instead of being replayed
 *   after an unbounded reconnect;
 * - commandTimeout: a command that gets no answer (a hung primary) fails after a bounded time;
 * - retryStrategy: the client itself keeps reconnecting in the background with a capped delay, so the
 *   next attempt after Redis is back finds a live connection.
 */
const BOUNDED: RedisOptions = {
  lazyConnect: true,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 10_000,
  connectTimeout: 5_000,
  retryStrategy: (times: number) => Math.min(100 * times, 2_000),
  enableReadyCheck: true,
};

export function redisTarget(options: RedisConnectionOptions): RedisTarget {
  const env = options.env ?? process.env;
  const hosts = hostList(options.url);
  let url: URL;
  try {
    // WHATWG URLs take one host: parse credentials and path with the host list swapped for a placeholder.
    url = new URL(options.url.replace(/^([^:]+:\/\/(?:[^@/]*@)?)[^/?#]*/, '$1placeholder'));
  } catch {
    throw new FloeError('config', 'the Redis URL is not a valid URL', {
      hint: 'use redis://[user:password@]host:port[/db], redis+sentinel://host:port[,host:port]/<name> or redis-cluster://host:port[,host:port]',
    });
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (!['redis', 'rediss', 'redis+sentinel', 'redis-cluster'].includes(scheme)) {
    throw new FloeError('config', `unsupported Redis URL scheme ${scheme}://`, {
      hint: 'use redis://, rediss://, redis+sentinel:// or redis-cluster://',
    });
  }
  const auth: RedisOptions = {
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(scheme === 'rediss' ? { tls: {} } : {}),
  };
  const path = url.pathname.split('/').filter(Boolean);
  const where = hosts.map((h) => `${h.host}:${h.port}`).join(',');

  if (scheme === 'redis+sentinel' || (env.FLOE_REDIS_SENTINELS && scheme !== 'redis-cluster')) {
    const sentinels = scheme === 'redis+sentinel' ? hosts : parseHosts(env.FLOE_REDIS_SENTINELS ?? '');
    const name = scheme === 'redis+sentinel' ? path[0] : env.FLOE_REDIS_SENTINEL_NAME;
    const db = Number(scheme === 'redis+sentinel' ? (path[1] ?? 0) : (path[0] ?? 0));
    if (!name) {
      throw new FloeError('config', 'Redis Sentinel needs the name of the monitored primary', {
        hint: 'write it as redis+sentinel://host:port,.../<name>, or set FLOE_REDIS_SENTINEL_NAME',
      });
    }
    const sentinelWhere = sentinels.map((h) => `${h.host}:${h.port}`).join(',');
    return {
      mode: 'sentinel',
      where: `sentinel ${sentinelWhere} (${name})`,
      create: () =>
        new Redis({
          ...BOUNDED,
          ...auth,
          db,
          sentinels,
          name,
          // Give up after a few rounds over the Sentinels (the connect fails, with the reason, instead of
          // hanging); the next use connects anew.
          sentinelRetryStrategy: (times: number) => (times > 5 ? null : Math.min(200 * times, 1_000)),
          ...(env.FLOE_REDIS_SENTINEL_PASSWORD ? { sentinelPassword: env.FLOE_REDIS_SENTINEL_PASSWORD } : {}),
        }),
    };
  }
  if (scheme === 'redis-cluster' || env.FLOE_REDIS_CLUSTER === 'true') {
    const clusterOptions: ClusterOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      // The Cluster client's ready check is itself a command, which it refuses to send before it is ready
      // when the offline queue is off; the slot map it fetches first is check enough.
      enableReadyCheck: false,
      maxRedirections: 16,
      clusterRetryStrategy: (times: number) => Math.min(100 * times, 2_000),
      redisOptions: { ...BOUNDED, ...auth },
    };
    return { mode: 'cluster', where: `cluster ${where}`, create: () => new Cluster(hosts, clusterOptions) };
  }
  const first = hosts[0]!;
  return {
    mode: 'single',
    where,
    create: () => new Redis({ ...BOUNDED, ...auth, host: first.host, port: first.port, db: Number(path[0] ?? 0) }),
  };
}

function hostList(raw: string): HostPort[] {
  const afterScheme = raw.slice(raw.indexOf('://') + 3);
  const authority = afterScheme.split(/[/?#]/)[0] ?? '';
  const hostsPart = authority.slice(authority.lastIndexOf('@') + 1);
  const hosts = parseHosts(hostsPart);
  if (hosts.length === 0) throw new FloeError('config', 'the Redis URL names no host', { hint: 'write it as redis://host:port' });
  return hosts;
}

function parseHosts(list: string): HostPort[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(s);
      if (!m) throw new FloeError('config', `invalid Redis host "${s}"`, { hint: 'write hosts as host:port' });
      return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2] ?? 6379) };
    });
}

/**
 * A Lua script run by EVALSHA, falling back to EVAL when the server does not know it (after a restart
 * or a failover the script cache is empty). All keys of one call share a hash tag, so it is legal in Cluster.
 */
export class RedisScript {
  readonly #lua: string;
  readonly #sha: string;

  constructor(lua: string) {
    this.#lua = lua;
    this.#sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(client: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.#sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return await client.eval(this.#lua, keys.length, ...keys, ...args);
    }
  }
}

/** Redis failures as FloeError kind 'state': connection trouble is retried, the rest needs an operator. */
export function redisError(err: unknown, where: string, what: string): FloeError {
  if (err instanceof FloeError) return err;
  const e = err as { code?: string; message?: string } | undefined;
  const base = (e?.message ?? String(err)).split('\n')[0]!;
  const message = `Redis at ${where}: ${what}: ${base}`;
  if (/^(WRONGPASS|NOAUTH|NOPERM)/.test(base)) {
    return new FloeError('state', message, {
      cause: err,
      retry: 'manual',
      hint: 'check the user name and password in FLOE_REDIS_URL and the user’s ACL (it needs EVALSHA, EVAL and the key commands)',
    });
  }
  if (/^(WRONGTYPE|ERR)/.test(base) && !/timeout|connect/i.test(base)) {
    return new FloeError('state', message, {
      cause: err,
      retry: 'manual',
      hint: 'another program writes to floe’s keys: give floe its own key prefix (FLOE_REDIS_KEY_PREFIX) or database',
    });
  }
  return new FloeError('state', message, {
    cause: err,
    retry: 'timed',
    hint: 'check that Redis is running and reachable; floe retries with backoff',
  });
}

/** Connects a lazily created client; an unreachable Redis is one line naming host:port, never the password. */
export async function connectRedis(client: RedisClient, where: string): Promise<void> {
  if (client.status === 'ready') return;
  if (client.status !== 'wait' && client.status !== 'end') {
    // Reconnecting in the background (retryStrategy): fail this attempt; the caller's retry comes back.
    throw new FloeError('state', `Redis at ${where}: not connected (${client.status})`, {
      retry: 'timed',
      hint: 'check that Redis is running and reachable; floe retries with backoff',
    });
  }
  // connect() itself rejects with a bare "Connection is closed"; the socket's error says why.
  let socketError: unknown;
  const onError = (err: unknown): void => {
    socketError ??= err;
  };
  client.on('error', onError);
  try {
    await client.connect();
  } catch (err) {
    // Stop the background reconnects of a client that never connected: the next attempt connects anew.
    client.disconnect();
    const e = (socketError ?? err) as { code?: string };
    if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' || e.code === 'ETIMEDOUT') {
      throw new FloeError('connection', `cannot connect to Redis at ${where}: ${e.code}`, {
        cause: err,
        hint: 'check FLOE_REDIS_URL and that Redis is running',
      });
    }
    throw redisError(socketError ?? err, where, 'connecting');
  } finally {
    client.off('error', onError);
  }
}

/** One client with its target: connects on first use (concurrent first users share the attempt). */
export class RedisConnection {
  readonly client: RedisClient;
  readonly target: RedisTarget;
  #connecting: Promise<void> | undefined;

  constructor(options: RedisConnectionOptions) {
    this.target = redisTarget(options);
    this.client = this.target.create();
    // Failures reach the callers of each command; the event only keeps ioredis from logging them.
    this.client.on('error', () => undefined);
  }

  get where(): string {
    return this.target.where;
  }

  async ready(): Promise<void> {
    if (this.client.status === 'ready') return;
    if (!this.#connecting) {
      this.#connecting = connectRedis(this.client, this.where).finally(() => {
        this.#connecting = undefined;
      });
    }
    await this.#connecting;
  }

  /** Runs commands, with failures as FloeError (kind 'state'; connection trouble retryable). */
  async run<T>(what: string, fn: (client: RedisClient) => Promise<T>): Promise<T> {
    if (this.client.status !== 'ready') await this.ready();
    try {
      return await fn(this.client);
    } catch (err) {
      throw redisError(err, this.where, what);
    }
  }

  async close(): Promise<void> {
    if (this.client.status === 'ready') await this.client.quit().catch(() => this.client.disconnect());
    else this.client.disconnect();
  }
}
