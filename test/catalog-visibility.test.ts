/**
 * The walsender may send a transaction once its commit record is flushed, a moment before the committing
 * backend makes it visible to other sessions. floe reads the catalog when a Relation message arrives
 * (which columns are the key); read in that moment, it saw the catalog from before the transaction's
 * DDL. A keys test failed so about once in twenty loaded runs: a primary key dropped by the same
 * transaction was still there, and the target stayed keyed for good.
 *
 * Here the moment is made long: the cluster names a synchronous standby that never connects, and the
 * DDL transaction's session waits for it after writing its commit, invisible to others, until it is
 * cancelled (its commit then completes locally).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { testClusters } from './harness/database.js';
import { memoryLog, startPipeline, tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';

const major = testClusters()[0]!.major;

/**
 * An admin session, and `hold(sql)`: runs `sql` in a second session with synchronous_commit on, so its
 * commit is written but stays invisible to others until `release()` cancels the wait.
 */
async function sessions(url: string) {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const committer = new pg.Client({ connectionString: url });
  await committer.connect();
  const pid = (await committer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return {
    admin,
    hold(sql: string) {
      const stuck = committer.query(`SET synchronous_commit = on; ${sql}`).then(
        () => undefined,
        (err: unknown) => err,
      );
      return {
        /** Ends the wait; the commit then completes locally (undefined: no error). */
        async release(): Promise<unknown> {
          await admin.query('SELECT pg_cancel_backend($1)', [pid]);
          return stuck;
        },
      };
    },
    async end() {
      await admin.end();
      await committer.end();
    },
  };
}

describe(`a Relation message read before its transaction is visible (PostgreSQL ${major})`, () => {
  let cluster: RunningCluster;
  beforeAll(async () => {
    // Every session commits locally except the one that asks for synchronous_commit = on.
    cluster = await startCluster({ major, config: { synchronous_standby_names: 'floe_never_connects', synchronous_commit: 'local' } });
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('takes its key from the catalog as that transaction left it: a dropped primary key is gone', async () => {
    const { admin, hold, end } = await sessions(cluster.url());
    await admin.query(`CREATE TABLE kl (a int PRIMARY KEY, b text); ALTER TABLE kl REPLICA IDENTITY FULL;
      INSERT INTO kl VALUES (1, 'one'); CREATE PUBLICATION vp FOR TABLE kl`);
    const log = memoryLog();
    const duck = new DuckDbDestination({ path: ':memory:', log: log.log });
    const pipeline = startPipeline({ source: { url: cluster.url() }, publication: 'vp', slotName: 'vs', destination: duck, log: log.log });
    const rows = async (sql: string) => (await duck.query(sql)).map((r) => r.map(String));
    try {
      await waitFor(
        'the keyed target',
        async () => JSON.stringify(await rows(`SELECT a, b FROM public.kl`).catch(() => [])) === '[["1","one"]]',
        60_000,
      );
      const held = hold(`ALTER TABLE kl DROP CONSTRAINT kl_pkey; UPDATE kl SET b = 'uno' WHERE a = 1`);
      // floe has the transaction and must wait for it before reading the catalog.
      await waitFor(
        'floe to wait for the transaction',
        async () => log.tail().includes('waiting for the transaction to become visible'),
        30_000,
      );
      const [invisible] = (
        await admin.query<{ n: string }>(`SELECT count(*) AS n FROM pg_index WHERE indrelid = 'kl'::regclass AND indisprimary`)
      ).rows;
      expect(invisible!.n, 'the primary key is still visible to other sessions').toBe('1');
      expect(await held.release()).toBeUndefined();
      // Keyless now: the target became history, resynced from a snapshot taken after the change.
      // History restarts at the resync's truncate marker, which is there only if the journal held
      // anything before (the keyed table's snapshot rows went straight into its target).
      const resynced = `SELECT a, b FROM public.kl WHERE _floe_op = 'r' AND _floe_lsn >= coalesce((SELECT max(_floe_lsn) FROM public.kl WHERE _floe_op = 't'), 0)`;
      await waitFor('the history target', async () => JSON.stringify(await rows(resynced).catch(() => [])) === '[["1","uno"]]', 60_000);
      expect(log.tail()).toMatch(/"keys":\[\],"msg":"relation message"|"msg":"relation message".*"keys":\[\]/);
    } finally {
      await pipeline.stop().catch(() => undefined);
      await duck.close();
      await admin.query(`SELECT pg_drop_replication_slot('vs')`).catch(() => undefined);
      await end();
    }
  }, 180_000);

  it('a stop ends the wait promptly and cleanly; the transaction it waited for arrives at the next start', async () => {
    const { admin, hold, end } = await sessions(cluster.url());
    await admin.query(`CREATE TABLE ks (a int PRIMARY KEY, b text); ALTER TABLE ks REPLICA IDENTITY FULL;
      INSERT INTO ks VALUES (1, 'one'); CREATE PUBLICATION sp FOR TABLE ks`);
    const dir = tempDir();
    const store = new MemoryStateStore();
    const start = () => {
      const log = memoryLog();
      const duck = new DuckDbDestination({ path: `${dir.path}/ks.duckdb`, log: log.log });
      return {
        log,
        pipeline: startPipeline({
          source: { url: cluster.url() },
          publication: 'sp',
          slotName: 'ss',
          destination: duck,
          store,
          log: log.log,
        }),
      };
    };
    let run = start();
    try {
      const rows = async () =>
        (
          await (run.pipeline.destination as DuckDbDestination)
            .query(`SELECT * EXCLUDE (_floe_key, _floe_lsn, _floe_ordinal, _floe_deleted, _floe_synced_at) FROM public.ks`)
            .catch(() => [])
        ).map((r) => r.map(String));
      await waitFor('the snapshot', async () => JSON.stringify(await rows()) === '[["1","one"]]', 60_000);
      const held = hold(`ALTER TABLE ks ADD COLUMN c int; UPDATE ks SET b = 'uno', c = 7 WHERE a = 1`);
      await waitFor('floe to wait', async () => run.log.tail().includes('waiting for the transaction to become visible'), 30_000);
      // The wait would last 60 s and then fail the run; a stop ends it at once, without an error.
      const stopping = Date.now();
      await run.pipeline.stop();
      expect(Date.now() - stopping, 'stop took as long as the wait').toBeLessThan(30_000);
      expect(await held.release()).toBeUndefined();
      // Nothing of the transaction was acknowledged: the next start receives it whole.
      run = start();
      await waitFor('the update', async () => JSON.stringify(await rows()) === '[["1","uno","7"]]', 60_000);
    } finally {
      await run.pipeline.stop().catch(() => undefined);
      await admin.query(`SELECT pg_drop_replication_slot('ss')`).catch(() => undefined);
      await end();
      dir.remove();
    }
  }, 180_000);
});
