/**
 * Picks and opens the state store: PostgreSQL (default), Redis, or memory. The Redis store connects here,
 * so a missing URL or an unreachable Redis is reported at once in one line, before any pipeline starts;
 * the PostgreSQL store keeps connecting lazily (its default URL is the source, checked by the pipeline).
 */
import { FloeError } from '../errors.js';
import { MemoryStateStore } from './memory-store.js';
import { PostgresStateStore } from './postgres-store.js';
import { RedisStateStore } from './redis-store.js';
import type { StateStore } from './state-store.js';
import type { Logger } from '../telemetry/logger.js';

export type StateStoreKind = 'postgres' | 'redis' | 'memory';

export interface StateStoreConfig {
  readonly kind: StateStoreKind;
  readonly postgresUrl?: string;
  readonly redisUrl?: string;
  /** Redis key prefix (FLOE_REDIS_KEY_PREFIX); default `floe`. */
  readonly redisKeyPrefix?: string;
  /** Replicas each Redis write must reach (FLOE_REDIS_WAIT_REPLICAS); default 0. */
  readonly redisWaitReplicas?: number;
  readonly env?: NodeJS.ProcessEnv;
}

const REDIS_SCHEMES = /^(redis|rediss|redis\+sentinel|redis-cluster):\/\//;

/**
 * The store `floe replicate` uses, from `--state` (`source`, `memory`, a PostgreSQL URL or a Redis URL)
 * and the environment: FLOE_STATE_STORE=postgres|redis, FLOE_REDIS_URL, FLOE_REDIS_KEY_PREFIX,
 * FLOE_REDIS_WAIT_REPLICAS.
 */
export function stateStoreConfig(state: string, sourceUrl: string, env: NodeJS.ProcessEnv = process.env): StateStoreConfig {
  const chosen = env.FLOE_STATE_STORE?.trim();
  if (chosen && chosen !== 'postgres' && chosen !== 'redis') {
    throw new FloeError('config', `FLOE_STATE_STORE must be postgres or redis, not "${chosen}"`);
  }
  const redisExtras = {
    env,
    ...(env.FLOE_REDIS_KEY_PREFIX ? { redisKeyPrefix: env.FLOE_REDIS_KEY_PREFIX } : {}),
    ...(env.FLOE_REDIS_WAIT_REPLICAS ? { redisWaitReplicas: waitReplicas(env.FLOE_REDIS_WAIT_REPLICAS) } : {}),
  };
  if (REDIS_SCHEMES.test(state)) return { kind: 'redis', redisUrl: state, ...redisExtras };
  if (chosen === 'redis') {
    if (state !== 'source') {
      throw new FloeError('config', 'FLOE_STATE_STORE=redis conflicts with --state', {
        hint: 'drop --state (the Redis URL comes from FLOE_REDIS_URL), or unset FLOE_STATE_STORE',
      });
    }
    if (!env.FLOE_REDIS_URL) {
      throw new FloeError('config', 'FLOE_STATE_STORE=redis but FLOE_REDIS_URL is not set', {
        hint: 'set FLOE_REDIS_URL=redis://host:6379 (or redis+sentinel://..., redis-cluster://...)',
      });
    }
    return { kind: 'redis', redisUrl: env.FLOE_REDIS_URL, ...redisExtras };
  }
  if (state === 'memory') return { kind: 'memory' };
  if (state !== 'source' && !/^postgres(ql)?:\/\//i.test(state)) {
    // Not retried forever as a PostgreSQL URL: say what --state takes.
    throw new FloeError('config', `unsupported state store "${state.split(':')[0]!.slice(0, 40)}"`, {
      hint: "--state takes 'source', 'memory', a postgres:// URL or a redis:// URL",
    });
  }
  return { kind: 'postgres', postgresUrl: state === 'source' ? sourceUrl : state };
}

/** `log` hears warnings about the store's setup (e.g. a Redis without persistence). */
export async function openStateStore(config: StateStoreConfig, log?: Logger): Promise<StateStore> {
  switch (config.kind) {
    case 'memory':
      return new MemoryStateStore();
    case 'postgres':
      if (!config.postgresUrl) throw new FloeError('config', 'the PostgreSQL state store needs a URL');
      return new PostgresStateStore(config.postgresUrl);
    case 'redis': {
      if (!config.redisUrl) {
        throw new FloeError('config', 'the Redis state store needs a URL', { hint: 'set FLOE_REDIS_URL=redis://host:6379' });
      }
      const store = new RedisStateStore({
        url: config.redisUrl,
        ...(config.redisKeyPrefix ? { keyPrefix: config.redisKeyPrefix } : {}),
        ...(config.redisWaitReplicas ? { waitReplicas: config.redisWaitReplicas } : {}),
        ...(config.env ? { env: config.env } : {}),
      });
      try {
        await store.connect();
        const warning = await store.persistenceWarning();
        if (warning) log?.warn({ store: store.where }, warning);
      } catch (err) {
        await store.close().catch(() => undefined);
        throw err;
      }
      return store;
    }
  }
}

function waitReplicas(raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new FloeError('config', `FLOE_REDIS_WAIT_REPLICAS must be a whole number, not "${raw}"`);
  return n;
}
