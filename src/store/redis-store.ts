/**
 * State store in Redis (single, Sentinel or Cluster). Keys of one pipeline share the Cluster hash tag
 * `{<pipeline>}`, so they live in one slot and every update is one Lua script, atomic like the Postgres
 * store's guarded statements:
 *
 * - `<prefix>:{<pipeline>}:progress`       hash: slot, inc (incarnation), durable, ack (LSNs as decimal
 *                                           strings), fence (highest fencing token that wrote);
 * - `<prefix>:{<pipeline>}:tables`         hash: table -> JSON plan (phase, snapshot LSN, range plan);
 * - `<prefix>:{<pipeline>}:ranges:<table>` set of finished snapshot range indexes.
 *
 * Pipeline and table names are URI-encoded in keys, so a name with `{`, `}` or `:` cannot move a key to
 * another slot or collide with another pipeline's keys. LSNs and tokens are compared as decimal strings
 * in Lua (its numbers are doubles and would round 64-bit LSNs).
 */
import type { PipelineProgress, StateStore, TablePhase, TablePlan, TableProgress } from './state-store.js';
import { staleFence, staleIncarnation, unknownTable } from './state-store.js';
import { FloeError } from '../errors.js';
import { RedisConnection, RedisScript } from './redis-connection.js';

export interface RedisStateStoreOptions {
  /** redis://, rediss://, redis+sentinel:// or redis-cluster:// (see redis-connection.ts). */
  readonly url: string;
  /** First part of every key; default `floe`. */
  readonly keyPrefix?: string;
  /**
   * After each write, wait until this many replicas acknowledged it (Redis WAIT), so a failover to a
   * replica cannot lose it. 0 (default) does not wait. Not available with Cluster.
   */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

/** `<prefix>:{<pipeline>}:<suffix>`: the hash tag keeps every key of a pipeline in one Cluster slot. */
export function pipelineKey(prefix: string, pipeline: string, suffix: string): string {
  return `${prefix}:{${encodeURIComponent(pipeline)}}:${suffix}`;
}

// Shared Lua: `gt` compares non-negative decimal strings exactly; `guard` refuses a stale fencing token
// (ARGV[1], '' when unfenced) or another incarnation (ARGV[2]) and records the token. It returns a
// refusal reply, or nil when the write may proceed. KEYS[1] is always the progress hash.
const PRELUDE = `
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function fence_ok()
  if ARGV[1] == '' then return true end
  local f = redis.call('HGET', KEYS[1], 'fence')
  return not (f and gt(f, ARGV[1]))
end
local function guard()
  if not fence_ok() then return {'fence'} end
  local inc = redis.call('HGET', KEYS[1], 'inc')
  if inc ~= ARGV[2] then return {'incarnation', inc or ''} end
  if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'fence', ARGV[1]) end
  return nil
end
`;

/** KEYS: progress, tables. ARGV: token, slot, incarnation, startLsn, ranges key prefix. */
const BEGIN = new RedisScript(`${PRELUDE}
if not fence_ok() then return {'fence'} end
for _, t in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('DEL', ARGV[5] .. t) end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'slot', ARGV[3], 'inc', ARGV[2], 'durable', ARGV[4], 'ack', ARGV[4])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'fence', ARGV[1]) end
return {'ok'}
`);

/** KEYS: progress. ARGV: token, incarnation, durableLsn, ackLsn. */
const RECORD = new RedisScript(`${PRELUDE}
local refused = guard()
if refused then return refused end
local cur = redis.call('HMGET', KEYS[1], 'durable', 'ack')
if gt(ARGV[3], cur[1]) then redis.call('HSET', KEYS[1], 'durable', ARGV[3]) end
if gt(ARGV[4], cur[2]) then redis.call('HSET', KEYS[1], 'ack', ARGV[4]) end
return {'ok'}
`);

/** KEYS: progress, tables. ARGV: token, incarnation, table, plan JSON. */
const SET_TABLE = new RedisScript(`${PRELUDE}
local refused = guard()
if refused then return refused end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return {'ok'}
`);

/** KEYS: progress, tables, ranges. ARGV: token, incarnation, table, range index. */
const MARK_RANGE = new RedisScript(`${PRELUDE}
local refused = guard()
if refused then return refused end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return {'table'} end
redis.call('SADD', KEYS[3], ARGV[4])
return {'ok'}
`);

/** KEYS: progress, tables, ranges. ARGV: token, incarnation, table. */
const REMOVE_TABLE = new RedisScript(`${PRELUDE}
local refused = guard()
if refused then return refused end
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return {'ok'}
`);

/** KEYS: progress, tables. ARGV: '', incarnation, ranges key prefix. Reads the tables as one consistent view. */
const GET_TABLES = new RedisScript(`
local inc = redis.call('HGET', KEYS[1], 'inc')
if inc ~= ARGV[2] then return {'incarnation', inc or ''} end
local out = {'ok'}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  table.insert(out, all[i])
  table.insert(out, all[i + 1])
  table.insert(out, redis.call('SMEMBERS', ARGV[3] .. all[i]))
end
return out
`);

interface StoredPlan {
  readonly phase: TablePhase;
  readonly snapshotLsn: string;
  readonly rangeCount: number;
  readonly pagesPerRange: number;
  readonly signature?: string;
}

export class RedisStateStore implements StateStore {
  readonly #conn: RedisConnection;
  readonly #prefix: string;
  readonly #token: bigint | undefined;
  readonly #view: boolean;
  readonly #waitReplicas: number;
  readonly #waitTimeoutMs: number;

  /** `shared` is for fenced(): a view over the same connection with a fencing token. */
  constructor(options: RedisStateStoreOptions, shared?: { readonly store: RedisStateStore; readonly token: bigint }) {
    this.#prefix = options.keyPrefix ?? 'floe';
    this.#waitReplicas = options.waitReplicas ?? 0;
    this.#waitTimeoutMs = options.waitTimeoutMs ?? 1_000;
    this.#token = shared?.token;
    this.#view = shared !== undefined;
    if (shared) {
      this.#conn = shared.store.#conn;
    } else {
      const conn = new RedisConnection({ url: options.url, ...(options.env ? { env: options.env } : {}) });
      if (this.#waitReplicas > 0 && conn.target.mode === 'cluster') {
        conn.client.disconnect();
        throw new FloeError('config', 'waiting for Redis replicas (FLOE_REDIS_WAIT_REPLICAS) is not available with Cluster', {
          hint: 'unset FLOE_REDIS_WAIT_REPLICAS, or use a single Redis or Sentinel',
        });
      }
      this.#conn = conn;
    }
  }

  /** host:port (or Sentinel/Cluster nodes) of the store, without credentials. */
  get where(): string {
    return this.#conn.where;
  }

  /** Connects (fails at once, with host:port, when Redis is unreachable). Called by init(). */
  async connect(): Promise<void> {
    await this.#conn.ready();
  }

  async init(): Promise<void> {
    await this.connect();
  }

  /**
   * Why progress kept here could move backwards after a Redis crash, or undefined when Redis persists
   * every write within a second (append-only file on, fsync always or everysec). Reads INFO persistence,
   * which managed services allow where CONFIG GET is often disabled; unknown answers give no warning.
   */
  async persistenceWarning(): Promise<string | undefined> {
    const info = await this.#call('reading persistence settings', () => this.#conn.client.info('persistence'));
    const text = Array.isArray(info) ? String(info[0]) : String(info);
    const aof = /^aof_enabled:(\d)/m.exec(text)?.[1];
    if (aof === '0') {
      return 'Redis runs without its append-only file: after a Redis crash or restart the recorded progress can move backwards (floe then replays changes, which is safe but slow) or vanish (floe then refuses to resume the slot); turn on appendonly yes with appendfsync everysec';
    }
    return undefined;
  }

  async getProgress(pipeline: string): Promise<PipelineProgress | undefined> {
    const [slot, inc, durable, ack] = await this.#call('reading progress', () =>
      this.#conn.client.hmget(this.#key(pipeline, 'progress'), 'slot', 'inc', 'durable', 'ack'),
    );
    if (!slot || !inc || !durable || !ack) return undefined;
    return { slotName: slot, incarnation: inc, durableLsn: BigInt(durable), ackLsn: BigInt(ack) };
  }

  async beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void> {
    await this.#write(
      pipeline,
      incarnation,
      'starting an incarnation',
      BEGIN,
      ['progress', 'tables'],
      [slotName, startLsn.toString(), this.#key(pipeline, 'ranges:')],
    );
  }

  async recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    await this.#write(pipeline, incarnation, 'recording progress', RECORD, ['progress'], [durableLsn.toString(), ackLsn.toString()]);
  }

  async getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    const reply = (await this.#call('reading tables', () =>
      GET_TABLES.run(
        this.#conn.client,
        [this.#key(pipeline, 'progress'), this.#key(pipeline, 'tables')],
        ['', incarnation, this.#key(pipeline, 'ranges:')],
      ),
    )) as unknown[];
    if (reply[0] !== 'ok') throw staleIncarnation(pipeline, (reply[1] as string) || undefined, incarnation);
    const out = new Map<string, TableProgress>();
    for (let i = 1; i < reply.length; i += 3) {
      const table = decodeURIComponent(reply[i] as string);
      const plan = JSON.parse(reply[i + 1] as string) as StoredPlan;
      out.set(table, {
        table,
        phase: plan.phase,
        snapshotLsn: BigInt(plan.snapshotLsn),
        rangeCount: plan.rangeCount,
        pagesPerRange: plan.pagesPerRange,
        rangesDone: new Set((reply[i + 2] as string[]).map(Number)),
        ...(plan.signature === undefined ? {} : { signature: plan.signature }),
      });
    }
    return out;
  }

  async setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    const stored: StoredPlan = {
      phase: plan.phase,
      snapshotLsn: plan.snapshotLsn.toString(),
      rangeCount: plan.rangeCount,
      pagesPerRange: plan.pagesPerRange,
      ...(plan.signature === undefined ? {} : { signature: plan.signature }),
    };
    await this.#write(
      pipeline,
      incarnation,
      'recording a table',
      SET_TABLE,
      ['progress', 'tables'],
      [encodeURIComponent(table), JSON.stringify(stored)],
    );
  }

  async markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    const t = encodeURIComponent(table);
    await this.#write(
      pipeline,
      incarnation,
      'recording a snapshot range',
      MARK_RANGE,
      ['progress', 'tables', `ranges:${t}`],
      [t, rangeIndex],
      table,
    );
  }

  async removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    const t = encodeURIComponent(table);
    await this.#write(pipeline, incarnation, 'removing a table', REMOVE_TABLE, ['progress', 'tables', `ranges:${t}`], [t]);
  }

  fenced(token: bigint): StateStore {
    return new RedisStateStore(
      { url: '', keyPrefix: this.#prefix, waitReplicas: this.#waitReplicas, waitTimeoutMs: this.#waitTimeoutMs },
      {
        store: this,
        token,
      },
    );
  }

  async close(): Promise<void> {
    if (!this.#view) await this.#conn.close();
  }

  #key(pipeline: string, suffix: string): string {
    return pipelineKey(this.#prefix, pipeline, suffix);
  }

  async #write(
    pipeline: string,
    incarnation: string,
    what: string,
    script: RedisScript,
    keySuffixes: readonly string[],
    args: readonly (string | number)[],
    table?: string,
  ): Promise<void> {
    const keys = keySuffixes.map((s) => this.#key(pipeline, s));
    const token = this.#token === undefined ? '' : this.#token.toString();
    const reply = (await this.#call(what, () => script.run(this.#conn.client, keys, [token, incarnation, ...args]))) as string[];
    switch (reply[0]) {
      case 'ok':
        break;
      case 'fence':
        throw staleFence(pipeline, this.#token!);
      case 'incarnation':
        throw staleIncarnation(pipeline, reply[1] || undefined, incarnation);
      case 'table':
        throw unknownTable(pipeline, table ?? '');
      default:
        throw new FloeError('state', `Redis at ${this.where}: ${what}: unexpected reply`, { retry: 'manual' });
    }
    if (this.#waitReplicas > 0) await this.#waitForReplicas(what);
  }

  async #waitForReplicas(what: string): Promise<void> {
    const acked = await this.#call(what, () => this.#conn.client.wait(this.#waitReplicas, this.#waitTimeoutMs));
    if (acked < this.#waitReplicas) {
      throw new FloeError(
        'state',
        `Redis at ${this.where}: ${what}: only ${acked} of ${this.#waitReplicas} replicas acknowledged the write`,
        {
          retry: 'timed',
          hint: 'check the Redis replicas (or lower FLOE_REDIS_WAIT_REPLICAS); floe retries the write',
        },
      );
    }
  }

  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.#conn.run(what, fn);
  }
}
