/**
 * Per-test-file isolation: each file gets fresh databases on every cluster,
 * dropped afterwards, with a leak check for connections and replication slots.
 */
import pg from 'pg';
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';

export interface TestCluster {
  readonly major: number;
  readonly port: number;
  readonly binDir: string;
  url(database?: string): string;
}

/**
 * The clusters a suite runs on. The global setup starts every major of FLOE_TEST_PG_MAJORS (default 14
 * to 18) whose binaries are installed; most suites run on the oldest and the newest of them, and the
 * suites where the server version changes what floe sees (types, crash recovery, change semantics,
 * acknowledgement) run on `'every'` one, which keeps `npm test` short on two cores.
 */
export function testClusters(which: 'oldest-and-newest' | 'every' = 'oldest-and-newest'): TestCluster[] {
  const all = [...inject('clusters')].sort((a, b) => a.major - b.major);
  const chosen = which === 'every' || all.length <= 2 ? all : [all[0]!, all.at(-1)!];
  return chosen.map((c) => ({
    ...c,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${c.port}/${database}`,
  }));
}

export async function withAdmin<T>(cluster: TestCluster, fn: (c: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
  const client = new pg.Client({ connectionString: cluster.url(database) });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  readonly cluster: TestCluster;
  sql<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]>;
  /** Drops a replication slot once its walsender has released it (that takes a moment after a stop). */
  dropSlot(slot: string): Promise<void>;
  /** Fails if anything other than our own admin client is still connected or a slot remains. */
  drop(): Promise<void>;
}

export async function createTestDatabase(cluster: TestCluster, prefix = 't'): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  await withAdmin(cluster, (c) => c.query(`CREATE DATABASE ${name}`));
  const client = new pg.Client({ connectionString: cluster.url(name) });
  await client.connect();
  return {
    name,
    url: cluster.url(name),
    cluster,
    async sql(text, values) {
      return (await client.query(text, values)).rows;
    },
    async dropSlot(slot) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = await client.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
        if (r.rowCount === 0) return;
        if (!r.rows[0].active || Date.now() > deadline) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await client.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
    },
    async drop() {
      await client.end();
      const leaks = await withAdmin(cluster, async (c) => {
        const deadline = Date.now() + 10_000;
        // Backends of a closed client need a moment to exit; wait for them rather than sleeping blindly.
        for (;;) {
          const conns = await c.query(
            `SELECT pid, application_name, backend_type, state, query FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
            [name],
          );
          const slots = await c.query(`SELECT slot_name, active FROM pg_replication_slots WHERE database = $1`, [name]);
          if ((conns.rowCount === 0 && slots.rowCount === 0) || Date.now() > deadline) {
            return { conns: conns.rows, slots: slots.rows };
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      });
      await withAdmin(cluster, async (c) => {
        await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [name]);
        await c.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, [
          name,
        ]);
        for (const s of leaks.slots) {
          // A terminated walsender releases its slot a moment later.
          for (let i = 0; i < 100; i++) {
            const ok = await c.query(`SELECT pg_drop_replication_slot($1)`, [s.slot_name]).then(
              () => true,
              () => false,
            );
            if (ok) break;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
      if (leaks.conns.length > 0 || leaks.slots.length > 0) {
        throw new Error(`leaked in ${name}: connections ${JSON.stringify(leaks.conns)} slots ${JSON.stringify(leaks.slots)}`);
      }
    },
  };
}
