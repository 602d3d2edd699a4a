/**
 * `floe run` workers (the real CLI: three with PostgreSQL leases, two with Redis leases) share one
 * control plane and its pipelines under continuous writes. Each pipeline runs on exactly one worker at all times (never two walsenders for its slot); a
 * worker killed with SIGKILL loses its pipelines to the others within the lease takeover time; a stale
 * fencing token is refused; SIGTERM drains every worker (exit 0) and every destination equals its source.
 */
import { describe, it, expect, beforeAll, afterAll, inject } from 'vitest';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { duck } from './helpers/duckdb.js';
import { runFloe, startFloe, type FloeProcess } from './helpers/cli.js';
import { migrate } from '../src/control/schema.js';
import { openStateStore, stateStoreConfig } from '../src/store/open-store.js';
import { parseLsn } from '../src/postgres/lsn.js';

const cluster = testClusters().at(-1)!;

interface Setup {
  readonly store: 'postgres' | 'redis';
  readonly workers: readonly string[];
  readonly pipelines: number;
}

/**
 * PostgreSQL leases and store (the default) with three workers and six pipelines; Redis leases and store
 * (FLOE_STATE_STORE=redis, a short lease TTL) with two workers and two pipelines.
 */
const SETUPS: Setup[] = [
  { store: 'postgres', workers: ['w1', 'w2', 'w3'], pipelines: 6 },
  { store: 'redis', workers: ['r1', 'r2'], pipelines: 2 },
];

describe.each(SETUPS)(`floe run workers ($workers) with the $store store on PostgreSQL ${cluster.major}`, (setup) => {
  const PIPELINES = setup.pipelines;
  const WORKERS = setup.workers;
  // The shared Redis serves other test files too: keys under a prefix of our own.
  const redisEnv: Record<string, string> =
    setup.store === 'redis'
      ? {
          FLOE_STATE_STORE: 'redis',
          FLOE_REDIS_URL: inject('redisUrl'),
          FLOE_REDIS_KEY_PREFIX: `floe-workers-${randomBytes(4).toString('hex')}`,
        }
      : {};
  let control: TestDatabase;
  let db: pg.Pool;
  let dir: ReturnType<typeof tempDir>;
  const sources: TestDatabase[] = [];
  const workers = new Map<string, FloeProcess>();

  beforeAll(async () => {
    control = await createTestDatabase(cluster, 'ctl');
    db = new pg.Pool({ connectionString: control.url, max: 3 });
    const c = await db.connect();
    await migrate(c);
    c.release();
    dir = tempDir();
    for (let i = 0; i < PIPELINES; i++) {
      const s = await createTestDatabase(cluster, 'src');
      sources.push(s);
      await s.sql(`CREATE TABLE items (id serial PRIMARY KEY, v int NOT NULL);
        INSERT INTO items (v) SELECT g FROM generate_series(1, 20) g;
        CREATE PUBLICATION pub FOR TABLE items;`);
      const name = `p${i}`;
      await db.query(
        `WITH s AS (INSERT INTO floe.source (name, url) VALUES ($1, $2) RETURNING id),
              d AS (INSERT INTO floe.destination (name, type, url) VALUES ($1, 'duckdb', $3) RETURNING id)
         INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options, status)
         SELECT $1, s.id, d.id, 'pub', $4, '{"batch_max_ms": 100, "merge_interval_ms": 500, "status_interval_ms": 1000}', 'START' FROM s, d`,
        [name, s.url, `duckdb:${join(dir.path, `${name}.duckdb`)}`, `floe_${name}`],
      );
    }
  });

  afterAll(async () => {
    for (const w of workers.values()) w.kill('SIGKILL');
    await Promise.all([...workers.values()].map((w) => w.exited));
    await db?.end();
    for (const [i, s] of sources.entries()) {
      await s.dropSlot(`floe_p${i}`);
      await s.drop();
    }
    await control?.drop();
    dir?.remove();
  });

  function startWorker(id: string): FloeProcess {
    const w = startFloe(['run', '--worker-id', id, '--poll-interval-ms', '500', '--lease-ttl-ms', '3000', '--metrics-port', '0'], {
      ...redisEnv,
      FLOE_DATABASE_URL: control.url,
      FLOE_LOG_LEVEL: process.env.FLOE_TEST_LOG ?? 'info',
    });
    workers.set(id, w);
    return w;
  }

  async function pipelines() {
    return (
      await db.query<{
        id: string;
        name: string;
        state: string;
        owner_worker: string | null;
        lease_token: string;
        durable_lsn: string | null;
      }>(`SELECT id::text, name, state, owner_worker, lease_token::text, durable_lsn::text FROM floe.pipeline ORDER BY name`)
    ).rows;
  }

  /** Walsenders streaming each pipeline's slot (at most one, ever). */
  async function walsenders(): Promise<number[]> {
    return Promise.all(
      sources.map(async (s) => {
        // A slot can only be active in one process anyway; counting the senders is stricter.
        const [r] = await s.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_replication r JOIN pg_stat_activity a USING (pid)
            WHERE a.datname = current_database() AND r.application_name NOT LIKE '%-snapshot'`,
        );
        return r!.n;
      }),
    );
  }

  it.runIf(setup.store === 'postgres')(
    'refuses to start on a database without the control-plane schema, and with a bad worker id',
    async () => {
      const empty = await createTestDatabase(cluster, 'empty');
      try {
        const r = await runFloe(['run', '--metrics-port', '0'], { FLOE_DATABASE_URL: empty.url });
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toMatch(/control-plane schema is missing \(run floe migrate\)/);
        const bad = await runFloe(['run', '--metrics-port', '0', '--worker-id', 'a b'], { FLOE_DATABASE_URL: control.url });
        expect(bad.code).toBe(2);
        expect(bad.stderr).toMatch(/invalid worker id/);
        expect((await db.query(`SELECT id FROM floe.worker`)).rows).toEqual([]);
      } finally {
        await empty.drop();
      }
    },
  );

  it('runs each pipeline on exactly one worker, survives kill -9 of a worker, and drains on SIGTERM', async () => {
    for (const id of WORKERS) startWorker(id);

    // Continuous writes on every source; the last LSN written inside each writer's last transaction.
    let writing = true;
    let writeError: unknown;
    const lastLsn: string[] = sources.map(() => '0/0');
    const writers = sources
      .map(async (s, i) => {
        let n = 0;
        while (writing && writeError === undefined) {
          const [r] = await s.sql<{ lsn: string }>(
            n % 3 === 2
              ? `UPDATE items SET v = v + 1 WHERE id = (SELECT max(id) FROM items) RETURNING pg_current_wal_insert_lsn()::text AS lsn`
              : `INSERT INTO items (v) VALUES (${n}) RETURNING pg_current_wal_insert_lsn()::text AS lsn`,
          );
          lastLsn[i] = r!.lsn;
          n++;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })
      .map((w) => w.catch((err) => (writeError = err)));

    // Never two walsenders for one pipeline, sampled all along.
    let sampling = true;
    let maxSenders = 0;
    let samples = 0;
    const sampler = (async () => {
      while (sampling && writeError === undefined) {
        const counts = await walsenders();
        maxSenders = Math.max(maxSenders, ...counts);
        samples++;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })().catch((err) => (writeError = err));

    // Every pipeline streams, spread over the three workers.
    await waitFor(
      'every pipeline streaming, on every worker',
      async () => {
        const rows = await pipelines();
        const owners = new Set(rows.map((r) => r.owner_worker));
        return rows.every((r) => r.state === 'streaming') && WORKERS.every((w) => owners.has(w));
      },
      60_000,
    );

    // kill -9 one worker: its pipelines resume on the others.
    const before = await pipelines();
    const victim = before.find((r) => r.owner_worker === WORKERS[0]) ? WORKERS[0]! : before[0]!.owner_worker!;
    const orphaned = before.filter((r) => r.owner_worker === victim);
    const killedAt = Date.now();
    workers.get(victim)!.kill('SIGKILL');
    await workers.get(victim)!.exited;
    workers.delete(victim);
    await waitFor(
      'the killed worker pipelines streaming elsewhere',
      async () => {
        const rows = await pipelines();
        return orphaned.every((o) => {
          const r = rows.find((x) => x.id === o.id)!;
          return r.state === 'streaming' && r.owner_worker !== victim && r.owner_worker !== null;
        });
      },
      60_000,
    );
    const takeoverMs = Date.now() - killedAt;
    console.log(`takeover after kill -9: ${takeoverMs} ms for ${orphaned.length} pipelines`);

    // The killed worker's fencing token is stale now: a progress write with it is refused.
    const store = await openStateStore(
      setup.store === 'redis'
        ? stateStoreConfig('source', control.url, { ...process.env, ...redisEnv })
        : { kind: 'postgres', postgresUrl: control.url },
    );
    try {
      const o = orphaned[0]!;
      const now = (await pipelines()).find((r) => r.id === o.id)!;
      expect(BigInt(now.lease_token)).toBeGreaterThan(BigInt(o.lease_token));
      const progress = await store.getProgress(o.name);
      expect(progress).toBeDefined();
      await expect(
        store.fenced(BigInt(o.lease_token)).recordDurable(o.name, progress!.incarnation, progress!.durableLsn, progress!.ackLsn),
      ).rejects.toThrow(/lease|fenc/i);
    } finally {
      await store.close();
    }

    // Stop writing; wait until every pipeline reported its last transaction durable.
    writing = false;
    await Promise.all(writers);
    expect(writeError).toBeUndefined();
    await waitFor(
      'every pipeline caught up',
      async () => {
        const rows = await pipelines();
        return rows.every((r) => r.durable_lsn !== null && parseLsn(r.durable_lsn) >= parseLsn(lastLsn[Number(r.name.slice(1))]!));
      },
      60_000,
    );
    sampling = false;
    await sampler;
    expect(samples).toBeGreaterThan(10);
    expect(maxSenders).toBe(1);

    // SIGTERM: every worker drains, releases its leases, removes its row and exits 0.
    const remaining = [...workers.entries()];
    for (const [, w] of remaining) w.kill('SIGTERM');
    for (const [id, w] of remaining) {
      const exit = await w.exited;
      expect(exit.code, `${id}: ${exit.stderr.slice(-2000)}`).toBe(0);
      if (process.env.DEBUG_WORKERS)
        console.log(
          id,
          exit.stderr
            .split('\n')
            .filter((l) => /handing|pipeline failed|lease|worker|reconcil/.test(l))
            .join('\n'),
        );
    }
    workers.clear();
    const left = await db.query(`SELECT id FROM floe.worker WHERE id <> $1`, [victim]);
    expect(left.rows).toEqual([]);

    // Every destination equals its source.
    for (let i = 0; i < PIPELINES; i++) {
      const [src] = await sources[i]!.sql<{ n: number; s: string; m: number }>(
        `SELECT count(*)::int AS n, sum(v)::text AS s, max(id) AS m FROM items`,
      );
      const [[n, s, m]] = (await duck(
        join(dir.path, `p${i}.duckdb`),
        `SELECT count(*)::INTEGER, sum(v)::VARCHAR, max(id) FROM public.items`,
      )) as [[number, string, number]];
      expect({ pipeline: `p${i}`, n, s, m }).toEqual({ pipeline: `p${i}`, n: src!.n, s: src!.s, m: src!.m });
    }
  });
});
