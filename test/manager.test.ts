/**
 * The PipelineManager against a real control plane: every change is made with plain SQL on the floe
 * tables, and the test awaits what the manager writes back (row state) and what reaches the DuckDB
 * destinations.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { duck } from './helpers/duckdb.js';
import { migrate } from '../src/control/schema.js';
import { PipelineManager } from '../src/control/manager.js';
import { PgLeaseProvider } from '../src/control/pg-lease.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { FloeError } from '../src/errors.js';
import { createLogger, silentLogger } from '../src/telemetry/logger.js';
import type { ResolvedDestination } from '../src/control/config.js';

const cluster = testClusters().at(-1)!;
const WORKER = 'w1';

describe(`PipelineManager on PostgreSQL ${cluster.major}`, () => {
  let control: TestDatabase;
  let db: pg.Pool;
  let dir: ReturnType<typeof tempDir>;
  let store: PostgresStateStore;
  let leases: PgLeaseProvider;
  let stop: AbortController;
  let running: Promise<void>;
  const sources: TestDatabase[] = [];
  /** The live destination of each destination row, by name (replaced when a pipeline restarts). */
  const destinations = new Map<string, DuckDbDestination>();
  /** Destination names whose writes fail (a crash the pipeline cannot retry by itself). */
  const failing = new Set<string>();
  const opened = new Map<string, number>();

  function openDestination(d: ResolvedDestination): DuckDbDestination {
    const dest = new DuckDbDestination({ path: d.url.replace(/^duckdb:/, ''), deleteMode: d.deleteMode });
    const write = dest.writeChanges.bind(dest);
    dest.writeChanges = async (changes) => {
      if (failing.has(d.name)) throw new FloeError('destination', 'injected write failure', { retry: 'none' });
      return write(changes);
    };
    destinations.set(d.name, dest);
    opened.set(d.name, (opened.get(d.name) ?? 0) + 1);
    return dest;
  }

  beforeAll(async () => {
    control = await createTestDatabase(cluster, 'ctl');
    const c = new pg.Client({ connectionString: control.url });
    await c.connect();
    await migrate(c);
    await c.end();
    db = new pg.Pool({ connectionString: control.url, max: 4 });
    dir = tempDir();
    store = new PostgresStateStore(control.url);
    leases = new PgLeaseProvider({ url: control.url, worker: WORKER, checkIntervalMs: 1000 });
    stop = new AbortController();
    const manager = new PipelineManager({
      url: control.url,
      db,
      worker: WORKER,
      leases,
      store,
      log: process.env.FLOE_TEST_LOG ? createLogger({ level: process.env.FLOE_TEST_LOG }) : silentLogger,
      pollIntervalMs: 500,
      reportIntervalMs: 200,
      restartBackoff: { initialMs: 100, maxMs: 1500, healthyMs: 60_000 },
      runtimeDefaults: { batchMaxMs: 100, mergeIntervalMs: 200, statusIntervalMs: 500 },
      openDestination,
    });
    running = manager.run(stop.signal);
  });

  afterAll(async () => {
    stop?.abort();
    await running;
    await leases?.close();
    await store?.close();
    await db?.end();
    for (const d of destinations.values()) await d.close().catch(() => undefined);
    for (const s of sources) await s.drop();
    await control?.drop();
    dir?.remove();
  });

  async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    return (await db.query<R>(text, values)).rows;
  }

  /** A source database with `items` (n rows) in publication `pub`. */
  async function newSource(rows = 50): Promise<TestDatabase> {
    const s = await createTestDatabase(cluster, 'src');
    sources.push(s);
    await s.sql(`CREATE TABLE items (id int PRIMARY KEY, v text);
      INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, ${rows}) g;
      CREATE PUBLICATION pub FOR TABLE items;`);
    return s;
  }

  /** Inserts source, destination and pipeline rows by hand, as an operator could. */
  async function addPipeline(name: string, sourceUrl: string, options: object = {}, status = 'START'): Promise<string> {
    const [src] = await sql<{ id: string }>(`INSERT INTO floe.source (name, url) VALUES ($1, $2) RETURNING id::text`, [name, sourceUrl]);
    const [dst] = await sql<{ id: string }>(`INSERT INTO floe.destination (name, type, url) VALUES ($1, 'duckdb', $2) RETURNING id::text`, [
      name,
      `duckdb:${join(dir.path, `${name}.duckdb`)}`,
    ]);
    const [p] = await sql<{ id: string }>(
      `INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options, status)
       VALUES ($1, $2, $3, 'pub', $4, $5, $6) RETURNING id::text`,
      [name, src!.id, dst!.id, `floe_${name}`, JSON.stringify(options), status],
    );
    return p!.id;
  }

  async function row(name: string) {
    const [r] = await sql<{
      state: string;
      last_error: string | null;
      owner_worker: string | null;
      lease_token: string;
      durable_lsn: string | null;
    }>(`SELECT state, last_error, owner_worker, lease_token::text, durable_lsn::text FROM floe.pipeline WHERE name = $1`, [name]);
    return r;
  }

  const stateIs = (name: string, state: string) => waitFor(`${name} ${state}`, async () => (await row(name))?.state === state);

  async function targetCount(name: string, table = 'items'): Promise<number> {
    const d = destinations.get(name);
    if (!d) return -1;
    return Number((await d.query(`SELECT count(*) FROM public.${table}`))[0]![0]);
  }

  const countIs = (name: string, n: number, table = 'items') =>
    waitFor(`${n} rows of ${table} in ${name}`, async () => (await targetCount(name, table)) === n);

  async function slot(s: TestDatabase, name: string) {
    const [r] = await s.sql<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [name]);
    return r;
  }

  it('starts, pauses, resumes, follows a configuration change and deletes, all by SQL', async () => {
    const s = await newSource(50);
    const id = await addPipeline('life', s.url);
    await stateIs('life', 'streaming');
    await countIs('life', 50);
    const first = await row('life');
    expect(first?.owner_worker).toBe(WORKER);
    expect((await leases.holders()).get('life')).toBe(WORKER);
    await s.sql(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(51, 60) g`);
    await countIs('life', 60);
    await waitFor('durable_lsn reported', async () => (await row('life'))?.durable_lsn != null);

    // Pause: the pipeline drains and lets its slot and lease go.
    await sql(`UPDATE floe.pipeline SET status = 'PAUSE' WHERE id = $1`, [id]);
    await stateIs('life', 'paused');
    expect((await row('life'))?.owner_worker).toBeNull();
    await waitFor('slot released', async () => (await slot(s, 'floe_life'))?.active === false);
    expect((await leases.holders()).has('life')).toBe(false);
    await s.sql(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(61, 70) g`);

    // Resume: changes made while paused arrive; a new lease means a higher fencing token.
    await sql(`UPDATE floe.pipeline SET status = 'START' WHERE id = $1`, [id]);
    await stateIs('life', 'streaming');
    await countIs('life', 70);
    expect(BigInt((await row('life'))!.lease_token)).toBeGreaterThan(BigInt(first!.lease_token));

    // A configuration change (another publication with one more table) restarts the pipeline with it.
    await s.sql(`CREATE TABLE extra (k int PRIMARY KEY); INSERT INTO extra SELECT generate_series(1, 5);
      CREATE PUBLICATION pub2 FOR TABLE items, extra;`);
    const openedBefore = opened.get('life')!;
    await sql(`UPDATE floe.pipeline SET publication = 'pub2' WHERE id = $1`, [id]);
    await countIs('life', 5, 'extra');
    expect(opened.get('life')).toBeGreaterThan(openedBefore);
    await s.sql(`INSERT INTO extra VALUES (6)`);
    await countIs('life', 6, 'extra');

    // Delete with drop_slot: stopped, slot dropped, row removed; the destination keeps its data.
    await sql(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true WHERE id = $1`, [id]);
    await waitFor('row deleted', async () => (await row('life')) === undefined);
    expect(await slot(s, 'floe_life')).toBeUndefined();
    expect((await leases.holders()).has('life')).toBe(false);
    await destinations.get('life')!.close();
    expect(await duck(join(dir.path, 'life.duckdb'), `SELECT count(*)::INTEGER FROM public.items`)).toEqual([[70]]);
  });

  it('follows skip and resync set in floe.pipeline_table and reports each table state there', async () => {
    const s = await newSource(10);
    await s.sql(`CREATE TABLE other (k int PRIMARY KEY); INSERT INTO other SELECT generate_series(1, 5);
      ALTER PUBLICATION pub ADD TABLE other;`);
    const id = await addPipeline('tables', s.url, {}, 'PAUSE');
    await sql(`INSERT INTO floe.pipeline_table (pipeline_id, table_name, skip) VALUES ($1, 'public.other', true)`, [id]);
    await sql(`UPDATE floe.pipeline SET status = 'START' WHERE id = $1`, [id]);
    const tableState = async (table: string) =>
      (
        await sql<{ state: string | null }>(`SELECT state FROM floe.pipeline_table WHERE pipeline_id = $1 AND table_name = $2`, [id, table])
      )[0]?.state;
    await waitFor('items streaming', async () => (await tableState('public.items')) === 'streaming');
    await waitFor('other skipped', async () => (await tableState('public.other')) === 'skipped');
    await countIs('tables', 10);
    expect(await targetCount('tables', 'other').catch(() => 0)).toBeLessThanOrEqual(0); // never snapshotted

    // Unskipped: snapshotted and streamed, without a restart.
    const openedBefore = opened.get('tables');
    await sql(`UPDATE floe.pipeline_table SET skip = false WHERE pipeline_id = $1`, [id]);
    await countIs('tables', 5, 'other');
    await waitFor('other streaming', async () => (await tableState('public.other')) === 'streaming');

    // Resync repairs a damaged target: the table is snapshotted again, the request cleared.
    await destinations.get('tables')!.query(`DELETE FROM public.items WHERE id <= 4`);
    await countIs('tables', 6);
    await sql(`UPDATE floe.pipeline_table SET resync_requested_at = now() WHERE pipeline_id = $1 AND table_name = 'public.items'`, [id]);
    await countIs('tables', 10);
    const [req] = await sql(`SELECT resync_requested_at FROM floe.pipeline_table WHERE pipeline_id = $1 AND table_name = 'public.items'`, [
      id,
    ]);
    expect(req).toEqual({ resync_requested_at: null });
    expect(opened.get('tables')).toBe(openedBefore);
    await sql(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true WHERE id = $1`, [id]);
    await waitFor('row deleted', async () => (await row('tables')) === undefined);
  });

  it('puts an invalid row and an unreachable source in failed with last_error, while another pipeline keeps streaming', async () => {
    const good = await newSource(20);
    const other = await newSource(5);
    await addPipeline('healthy', good.url);
    await stateIs('healthy', 'streaming');
    const badId = await addPipeline('badopts', other.url, { batch_max_ms: 'soon' });
    await addPipeline('unreachable', 'postgres://postgres@127.0.0.1:1/nowhere', { batch_max_ms: 100 });

    await stateIs('badopts', 'failed');
    expect((await row('badopts'))?.last_error).toMatch(/batch_max_ms must be an integer/);
    await stateIs('unreachable', 'failed');
    expect((await row('unreachable'))?.last_error).toMatch(/cannot connect to the source .*ECONNREFUSED|cannot connect to the source/);

    // The healthy pipeline never noticed.
    expect((await row('healthy'))?.state).toBe('streaming');
    await good.sql(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(21, 40) g`);
    await countIs('healthy', 40);

    // Fixing the row is a configuration change: it retries at once instead of waiting out the backoff.
    await sql(`UPDATE floe.pipeline SET options = '{}' WHERE id = $1`, [badId]);
    await stateIs('badopts', 'streaming');
    await countIs('badopts', 5);

    // A row deleted by hand: stopped and released, its slot kept (nothing said to drop it).
    await sql(`DELETE FROM floe.pipeline WHERE name = 'badopts'`);
    await waitFor('slot released', async () => (await slot(other, 'floe_badopts'))?.active === false);
    await waitFor('lease released', async () => !(await leases.holders()).has('badopts'));
    await other.dropSlot('floe_badopts');

    await sql(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true WHERE name IN ('healthy', 'unreachable')`);
    await waitFor('healthy deleted', async () => (await row('healthy')) === undefined);
    expect(await slot(good, 'floe_healthy')).toBeUndefined();
    // The unreachable source's slot cannot be dropped: the row stays, failed, saying why.
    await waitFor('unreachable delete reported', async () =>
      /cannot drop the slot|cannot connect/.test((await row('unreachable'))?.last_error ?? ''),
    );
    await sql(`UPDATE floe.pipeline SET drop_slot = false WHERE name = 'unreachable'`);
    await waitFor('unreachable deleted', async () => (await row('unreachable')) === undefined, 60_000);
  });

  it('restarts a crashed pipeline with backoff and writes the error', async () => {
    const s = await newSource(10);
    await addPipeline('crashy', s.url);
    await stateIs('crashy', 'streaming');
    await countIs('crashy', 10);
    const openedBefore = opened.get('crashy')!;

    failing.add('crashy');
    await s.sql(`INSERT INTO items VALUES (11, 'x')`);
    await stateIs('crashy', 'failed');
    expect((await row('crashy'))?.last_error).toMatch(/injected write failure/);
    // It keeps being restarted (each attempt opens the destination again) and keeps failing.
    await waitFor('restarted after the crash', () => opened.get('crashy')! >= openedBefore + 2);
    expect((await row('crashy'))?.owner_worker).toBe(WORKER);

    failing.delete('crashy');
    await stateIs('crashy', 'streaming');
    await countIs('crashy', 11);
    await s.sql(`INSERT INTO items VALUES (12, 'y')`);
    await countIs('crashy', 12);

    // The lease connection dies (as in a network failure): the lease is lost, the pipeline stops, and the
    // worker takes the lease again with a higher fencing token and resumes.
    const token = BigInt((await row('crashy'))!.lease_token);
    const killed = await sql<{ ok: boolean }>(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
      [`floe-lease ${WORKER}`],
    );
    expect(killed).toEqual([{ ok: true }]);
    await waitFor('lease taken again', async () => BigInt((await row('crashy'))!.lease_token) > token);
    await stateIs('crashy', 'streaming');
    await s.sql(`INSERT INTO items VALUES (13, 'z')`);
    await countIs('crashy', 13);
    await sql(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true WHERE name = 'crashy'`);
    await waitFor('crashy deleted', async () => (await row('crashy')) === undefined);
  });
});

describe.each(testClusters())('PostgreSQL pipeline leases on PostgreSQL $major', (cluster) => {
  it('grants a lease to one worker at a time, with increasing tokens, and loses it with the connection', async () => {
    const control = await createTestDatabase(cluster, 'ctl');
    const c = new pg.Client({ connectionString: control.url });
    await c.connect();
    const a = new PgLeaseProvider({ url: control.url, worker: 'wa', checkIntervalMs: 200 });
    const b = new PgLeaseProvider({ url: control.url, worker: 'wb', checkIntervalMs: 200 });
    try {
      await migrate(c);
      await c.query(`INSERT INTO floe.source (name, url) VALUES ('s', 'postgres://u@h/d');
        INSERT INTO floe.destination (name, type, url) VALUES ('d', 'duckdb', 'duckdb:/tmp/x.duckdb');
        INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name)
        SELECT n, 1, 1, 'pub', 'floe_' || n FROM unnest(ARRAY['one', 'two']) n`);

      const one = await a.tryAcquire('one', 'wa');
      expect(one).toBeDefined();
      expect(await b.tryAcquire('one', 'wb')).toBeUndefined();
      expect(await a.tryAcquire('one', 'wa')).toBeUndefined(); // not re-entrant
      const two = await b.tryAcquire('two', 'wb');
      expect(two!.token).toBeGreaterThan(one!.token);
      expect(await a.holders()).toEqual(
        new Map([
          ['one', 'wa'],
          ['two', 'wb'],
        ]),
      );
      expect(await a.tryAcquire('missing', 'wa')).toBeUndefined(); // no such pipeline: no token, no lock

      await one!.release();
      await one!.release();
      const again = await b.tryAcquire('one', 'wb');
      expect(again!.token).toBeGreaterThan(two!.token);

      // The lock session of worker b dies: both its leases are lost, and a's next acquire gets a higher token.
      await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'floe-lease wb'`);
      await waitFor('leases lost', () => again!.lost.aborted && two!.lost.aborted);
      const taken = await waitFor('lock free', () => a.tryAcquire('two', 'wa'));
      expect(taken.token).toBeGreaterThan(again!.token);
      expect((await a.holders()).get('two')).toBe('wa');
    } finally {
      await a.close();
      await b.close();
      await c.end();
      await control.drop();
    }
  });
});
