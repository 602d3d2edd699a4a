/**
 * What only the Redis store has: its key layout (one Cluster hash tag per pipeline), bounded failure
 * while Redis is down and recovery after it is back (scripts reloaded), the persistence warning, and
 * the connection URL forms.
 */
import { describe, it, expect } from 'vitest';
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startRedis } from './harness/redis.js';
import { RedisStateStore } from '../src/store/redis-store.js';
import { redisTarget } from '../src/store/redis-connection.js';
import { FloeError } from '../src/errors.js';
import { waitFor } from './helpers/wait.js';

describe('Redis state store', () => {
  it('keeps every key of a pipeline under one hash tag and the configured prefix', async () => {
    const keyPrefix = `floe-keys-${randomBytes(4).toString('hex')}`;
    const store = new RedisStateStore({ url: inject('redisUrl'), keyPrefix });
    const raw = new Redis(inject('redisUrl'));
    try {
      await store.init();
      await store.beginIncarnation('orders{eu}:1', 'slot', 'inc', 1n);
      await store.setTable('orders{eu}:1', 'inc', 'public.a:b', { phase: 'snapshot', snapshotLsn: 1n, rangeCount: 2, pagesPerRange: 1 });
      await store.markRangeDone('orders{eu}:1', 'inc', 'public.a:b', 1);
      const keys = (await raw.keys(`${keyPrefix}:*`)).sort();
      expect(keys).toEqual([
        `${keyPrefix}:{orders%7Beu%7D%3A1}:progress`,
        `${keyPrefix}:{orders%7Beu%7D%3A1}:ranges:public.a%3Ab`,
        `${keyPrefix}:{orders%7Beu%7D%3A1}:tables`,
      ]);
    } finally {
      await store.close();
      await raw.quit();
    }
  });

  it('fails writes at once while Redis is down (retryable), and works again once it is back', async () => {
    const redis = await startRedis();
    const store = new RedisStateStore({ url: redis.url });
    try {
      await store.init();
      await store.beginIncarnation('p', 'slot', 'inc', 10n);
      await redis.stopServer();
      // Not queued in memory until Redis returns: the caller hears of the outage and backs off.
      const err = await store.recordDurable('p', 'inc', 20n, 20n).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FloeError);
      expect((err as FloeError).kind).toBe('state');
      expect((err as FloeError).retry).toBe('timed');
      expect((err as FloeError).message).toContain(`127.0.0.1:${redis.port}`);
      await redis.startServer();
      // The restarted server has an empty script cache: EVALSHA falls back to EVAL.
      await waitFor('a write to succeed after the restart', () => store.recordDurable('p', 'inc', 30n, 30n).then(() => true));
      // The append-only file kept what was written before the restart.
      expect(await store.getProgress('p')).toEqual({ slotName: 'slot', incarnation: 'inc', durableLsn: 30n, ackLsn: 30n });
    } finally {
      await store.close();
      await redis.stop();
    }
  });

  it('warns when Redis runs without its append-only file', async () => {
    const redis = await startRedis();
    const store = new RedisStateStore({ url: redis.url });
    const raw = new Redis(redis.url);
    try {
      await store.init();
      expect(await store.persistenceWarning()).toBeUndefined();
      await raw.config('SET', 'appendonly', 'no');
      expect(await store.persistenceWarning()).toMatch(/append-only file.*appendonly yes/);
    } finally {
      await raw.quit();
      await store.close();
      await redis.stop();
    }
  });

  it('reads single, Sentinel and Cluster URLs without ever showing the password', () => {
    const single = redisTarget({ url: 'redis://floe:pw-123@cache.internal:6380/2', env: {} });
    expect(single).toMatchObject({ mode: 'single', where: 'cache.internal:6380' });
    const sentinel = redisTarget({ url: 'redis+sentinel://:pw-123@s1:26379,s2:26380/mymaster/1', env: {} });
    expect(sentinel).toMatchObject({ mode: 'sentinel', where: 'sentinel s1:26379,s2:26380 (mymaster)' });
    const sentinelEnv = redisTarget({
      url: 'redis://:pw-123@ignored:6379',
      env: { FLOE_REDIS_SENTINELS: 's1:26379,s2', FLOE_REDIS_SENTINEL_NAME: 'primary' },
    });
    expect(sentinelEnv).toMatchObject({ mode: 'sentinel', where: 'sentinel s1:26379,s2:6379 (primary)' });
    const cluster = redisTarget({ url: 'redis-cluster://u:pw-123@n1:7000,n2:7001', env: {} });
    expect(cluster).toMatchObject({ mode: 'cluster', where: 'cluster n1:7000,n2:7001' });
    expect(redisTarget({ url: 'redis://n1:7000', env: { FLOE_REDIS_CLUSTER: 'true' } }).mode).toBe('cluster');
    for (const t of [single, sentinel, sentinelEnv, cluster]) expect(t.where).not.toContain('pw-123');

    for (const [url, message] of [
      ['http://host:6379', /unsupported Redis URL scheme/],
      ['redis+sentinel://s1:26379', /name of the monitored primary/],
      ['redis://', /names no host/],
    ] as const) {
      let err: unknown;
      try {
        redisTarget({ url, env: {} });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FloeError);
      expect((err as FloeError).kind).toBe('config');
      expect((err as FloeError).message).toMatch(message);
    }
  });
});
