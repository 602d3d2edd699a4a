/**
 * `floe replicate` with the Redis state store: FLOE_STATE_STORE=redis and FLOE_REDIS_URL select it,
 * progress lands under the pipeline's namespaced keys, and a missing URL or an unreachable Redis is one
 * clear line (host:port, never the password) before anything starts.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { runFloe, startFloe } from './helpers/cli.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from '../src/postgres/local-cluster.js';
import { pipelineKey } from '../src/store/redis-store.js';
import { parseLsn } from '../src/postgres/lsn.js';

const cluster = testClusters()[0]!;

describe('floe replicate with FLOE_STATE_STORE=redis', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'rcli');
  });
  afterAll(async () => {
    await db.drop();
  });

  const args = (dir: string): string[] => [
    'replicate',
    '--source',
    db.url,
    '--publication',
    'pub',
    '--slot',
    'redis_cli',
    '--destination',
    `duckdb:${join(dir, 'w.duckdb')}`,
    '--metrics-port',
    '0',
  ];

  it('refuses to start without FLOE_REDIS_URL, or with an unreachable Redis, in one line', async () => {
    const dir = tempDir();
    try {
      const missing = await runFloe(args(dir.path), { FLOE_STATE_STORE: 'redis', FLOE_REDIS_URL: '' });
      expect(missing.code).toBe(2);
      expect(missing.stderr.trim().split('\n')).toHaveLength(1);
      expect(missing.stderr).toMatch(/FLOE_STATE_STORE=redis but FLOE_REDIS_URL is not set/);

      const port = await freePort(); // nothing listens there
      const down = await runFloe(args(dir.path), { FLOE_STATE_STORE: 'redis', FLOE_REDIS_URL: `redis://floe:s3cr3t-pw@127.0.0.1:${port}` });
      expect(down.code).toBe(1);
      expect(down.stderr.trim().split('\n')).toHaveLength(1);
      expect(down.stderr).toContain(`cannot connect to Redis at 127.0.0.1:${port}`);
      expect(down.stderr).not.toContain('s3cr3t-pw');

      const bogus = await runFloe(args(dir.path), { FLOE_STATE_STORE: 'mongo' });
      expect(bogus.code).toBe(2);
      expect(bogus.stderr).toMatch(/FLOE_STATE_STORE must be postgres or redis/);
      // Nothing was started: no slot exists.
      expect(await db.sql(`SELECT 1 FROM pg_replication_slots WHERE database = current_database()`)).toEqual([]);
    } finally {
      dir.remove();
    }
  });

  it('keeps progress in Redis under the pipeline’s keys, not in the source', async () => {
    await db.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;
      CREATE PUBLICATION pub FOR TABLE t;`);
    const keyPrefix = `floe-cli-${randomBytes(4).toString('hex')}`;
    const redis = new Redis(inject('redisUrl'));
    const dir = tempDir();
    const floe = startFloe(args(dir.path), {
      FLOE_STATE_STORE: 'redis',
      FLOE_REDIS_URL: inject('redisUrl'),
      FLOE_REDIS_KEY_PREFIX: keyPrefix,
    });
    try {
      const key = pipelineKey(keyPrefix, 'redis_cli', 'progress');
      await waitFor(
        'progress in Redis',
        async () => (await redis.hget(key, 'ack')) !== null && (await redis.hget(key, 'ack')) !== '0',
        60_000,
      );
      const [{ lsn }] = (await db.sql<{ lsn: string }>(
        `INSERT INTO t VALUES (51, 'new') RETURNING pg_current_wal_insert_lsn()::text AS lsn`,
      )) as [{ lsn: string }];
      await waitFor(
        'the insert recorded as durable in Redis',
        async () => BigInt((await redis.hget(key, 'durable')) ?? '0') >= parseLsn(lsn),
      );
      await waitFor('the table streaming in Redis', async () => {
        const plan = await redis.hget(pipelineKey(keyPrefix, 'redis_cli', 'tables'), 'public.t');
        return plan !== null && (JSON.parse(plan) as { phase: string }).phase === 'streaming';
      });
      // The default PostgreSQL store was not used.
      expect(await db.sql(`SELECT 1 FROM pg_namespace WHERE nspname = 'floe'`)).toEqual([]);
      floe.kill('SIGTERM');
      expect((await floe.exited).code).toBe(0);
    } finally {
      floe.kill('SIGKILL');
      await redis.quit();
      await db.dropSlot('redis_cli');
      dir.remove();
    }
  });
});
