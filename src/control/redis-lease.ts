/**
 * Pipeline leases in Redis (design.md invariant 6). Per pipeline, in the same hash-tagged slot as the
 * Redis state store's keys:
 * - `<prefix>:{<pipeline>}:lease`: `<worker>#<token>` with a TTL; present while someone holds it;
 * - `<prefix>:{<pipeline>}:fence`: a counter; every acquisition takes the next value as its fencing
 *   token, in the same Lua script that sets the lease, so tokens strictly increase across holders.
 *
 * The holder renews every ttl/3 with a compare-and-pexpire. A renewal that fails or finds another value
 * aborts `lost` at once: the holder cannot know whether its lease is still valid, and the fencing token
 * makes sure a holder that has not noticed yet cannot write progress anyway.
 */
import { Cluster } from 'ioredis';
import type { Lease, LeaseProvider } from './lease.js';
import { pipelineKey } from '../store/redis-store.js';
import { RedisConnection, redisError, RedisScript, type RedisClient } from '../store/redis-connection.js';

export interface RedisLeaseOptions {
  readonly url: string;
  /** Same prefix as the Redis state store's (default `floe`). */
  readonly keyPrefix?: string;
  /** How long a lease outlives its holder's last renewal; default 15 s. */
  readonly ttlMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

/** KEYS: lease, fence. ARGV: worker, ttl. Returns the token, or false when someone holds the lease. */
const ACQUIRE = new RedisScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
return token
`);

/** KEYS: lease. ARGV: holder value, ttl. 1 when renewed, 0 when the lease is gone or someone else's. */
const RENEW = new RedisScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

/** KEYS: lease. ARGV: holder value. Deletes the lease only if it is still ours. */
const RELEASE = new RedisScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

export class RedisLeaseProvider implements LeaseProvider {
  readonly #conn: RedisConnection;
  readonly #prefix: string;
  readonly #ttlMs: number;
  readonly #held = new Set<RedisLease>();

  constructor(options: RedisLeaseOptions) {
    this.#conn = new RedisConnection({ url: options.url, ...(options.env ? { env: options.env } : {}) });
    this.#prefix = options.keyPrefix ?? 'floe';
    this.#ttlMs = options.ttlMs ?? 15_000;
  }

  async tryAcquire(pipeline: string, worker: string): Promise<Lease | undefined> {
    const leaseKey = pipelineKey(this.#prefix, pipeline, 'lease');
    const reply = await this.#conn.run('taking a lease', (client) =>
      ACQUIRE.run(client, [leaseKey, pipelineKey(this.#prefix, pipeline, 'fence')], [worker, this.#ttlMs]),
    );
    if (reply === null || reply === undefined) return undefined;
    const token = BigInt(reply as number);
    const lease = new RedisLease({
      pipeline,
      token,
      value: `${worker}#${token}`,
      key: leaseKey,
      ttlMs: this.#ttlMs,
      client: this.#conn.client,
      where: this.#conn.where,
      forget: () => this.#held.delete(lease),
    });
    this.#held.add(lease);
    return lease;
  }

  async holders(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const pattern = `${globEscape(this.#prefix)}:{*}:lease`;
    await this.#conn.run('listing leases', async (client) => {
      const nodes = client instanceof Cluster ? client.nodes('master') : [client];
      for (const node of nodes) {
        let cursor = '0';
        do {
          const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
          cursor = next;
          const values = keys.length > 0 ? await Promise.all(keys.map((k) => node.get(k))) : [];
          keys.forEach((key, i) => {
            const value = values[i];
            const tag = /\{([^}]*)\}/.exec(key)?.[1];
            if (value && tag !== undefined) out.set(decodeURIComponent(tag), value.slice(0, value.lastIndexOf('#')));
          });
        } while (cursor !== '0');
      }
    });
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#held].map((l) => l.release().catch(() => undefined)));
    await this.#conn.close();
  }
}

class RedisLease implements Lease {
  readonly pipeline: string;
  readonly token: bigint;
  readonly #controller = new AbortController();
  readonly #value: string;
  readonly #key: string;
  readonly #client: RedisClient;
  readonly #where: string;
  readonly #forget: () => void;
  readonly #timer: NodeJS.Timeout;
  #released = false;

  constructor(o: {
    pipeline: string;
    token: bigint;
    value: string;
    key: string;
    ttlMs: number;
    client: RedisClient;
    where: string;
    forget: () => void;
  }) {
    const { key, value, ttlMs, client } = o;
    this.pipeline = o.pipeline;
    this.token = o.token;
    this.#value = value;
    this.#key = key;
    this.#client = client;
    this.#where = o.where;
    this.#forget = o.forget;
    let renewing = false;
    this.#timer = setInterval(
      () => {
        if (renewing) return; // a renewal still waiting on Redis: the next tick decides
        renewing = true;
        RENEW.run(client, [key], [value, ttlMs])
          .then(
            (renewed) => {
              if (renewed !== 1) this.#lose();
            },
            () => this.#lose(),
          )
          .finally(() => (renewing = false));
      },
      Math.max(1, Math.floor(ttlMs / 3)),
    );
    // Renewal alone must not keep a process alive that has nothing else to do.
    this.#timer.unref();
  }

  get lost(): AbortSignal {
    return this.#controller.signal;
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    this.#forget();
    if (this.#controller.signal.aborted) return;
    try {
      await RELEASE.run(this.#client, [this.#key], [this.#value]);
    } catch (err) {
      // The lease then expires after its TTL; the caller decides whether that matters.
      throw redisError(err, this.#where, 'releasing a lease');
    }
  }

  #lose(): void {
    if (this.#released) return;
    clearInterval(this.#timer);
    this.#forget();
    this.#controller.abort(new Error(`lease of pipeline ${this.pipeline} lost`));
  }
}

function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}
