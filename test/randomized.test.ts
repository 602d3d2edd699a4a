/**
 * A randomized workload over the table shapes floe must get right — a keyed table with an EXTERNAL
 * (TOASTed) column and key changes, a keyless REPLICA IDENTITY FULL history, a column-listed and
 * row-filtered table (PostgreSQL 15+), a partitioned table published via its root — while two
 * `floe replicate` processes, one into DuckDB and one into the Snowflake emulator (each its own slot),
 * are killed with SIGKILL and restarted at random moments.
 * At the end both catch up and stop, and every table is compared with the source value by value: the
 * DuckDB file with verifyDuckDb (the check `floe demo --verify` uses), the emulator's targets by reading
 * them back (a keyless table's current rows derived from its journal).
 *
 * `npm test` runs a short version. `npm run test:random` runs a long one (FLOE_RANDOM_ROUNDS); a failure
 * prints its seed, and FLOE_RANDOM_SEED replays it.
 */
import { describe, it, expect, beforeEach, afterEach, onTestFailed } from 'vitest';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { startFloe, type FloeProcess } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { parseLsn } from '../src/postgres/lsn.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';

const ROUNDS = Number(process.env.FLOE_RANDOM_ROUNDS ?? 4);
const STATEMENTS_PER_ROUND = Number(process.env.FLOE_RANDOM_STATEMENTS ?? 40);

/** mulberry32: small, seedable, good enough to pick statements. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe.each(testClusters())('randomized workload with kill -9 on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let dir: ReturnType<typeof tempDir>;
  let file: string;
  let sf: SnowflakeFixture;
  beforeEach(async () => {
    db = await createTestDatabase(cluster, 'rnd');
    dir = tempDir();
    file = join(dir.path, 'r.duckdb');
    sf = await snowflakeFixture();
  });
  afterEach(async () => {
    await db.dropSlot('rndslot');
    await db.dropSlot('rndsf');
    await db.drop();
    dir.remove();
    await sf.emulator.close();
    sf.dir.remove();
  });

  /** The two pipelines: the same source and publication, each its own slot and destination. */
  const legs = [
    { name: 'DuckDB', slot: 'rndslot', destination: () => `duckdb:${file}` },
    { name: 'Snowflake', slot: 'rndsf', destination: () => sf.url() },
  ] as const;
  type Leg = (typeof legs)[number];
  const args = (leg: Leg) =>
    ['replicate', '--metrics-port', '0', '--source', db.url, '--publication', 'rnd', '--slot', leg.slot, '--destination', leg.destination()]
      .concat(['--status-interval-ms', '200', '--batch-max-ms', '50', '--merge-interval-ms', '300'])
      .concat(['--snapshot-range-pages', '1', '--snapshot-parallelism', '2']);

  // Two pipelines restarted every round: a loaded 2-core machine once took more than 2 minutes.
  const timeout = 60_000 * (ROUNDS + 2);
  it('keeps every table equal to the source through random statements and SIGKILL restarts', { timeout }, async () => {
    const seed = Number(process.env.FLOE_RANDOM_SEED ?? Math.floor(Math.random() * 2 ** 31));
    // Every failure names its seed, a timeout included (its error does not).
    onTestFailed(() => console.error(`randomized test failed: replay with FLOE_RANDOM_SEED=${seed}`));
    const random = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const int = (n: number) => Math.floor(random() * n);
    const filtered = cluster.major >= 15;
    await db.sql(`CREATE TABLE k (id int PRIMARY KEY, v int, body text);
      ALTER TABLE k ALTER body SET STORAGE EXTERNAL;
      INSERT INTO k SELECT g, g, repeat(md5(g::text), 100) FROM generate_series(1, 200) g;
      CREATE TABLE h (at int, what text); ALTER TABLE h REPLICA IDENTITY FULL;
      INSERT INTO h SELECT g % 20, 'e' || g FROM generate_series(1, 100) g;
      CREATE TABLE f (id int PRIMARY KEY, x int, secret text);
      INSERT INTO f SELECT g, g % 7 - 3, 's' FROM generate_series(1, 100) g;
      -- A row filter may only use replica identity columns when updates and deletes are published.
      CREATE TABLE g (id int PRIMARY KEY, x int); ALTER TABLE g REPLICA IDENTITY FULL;
      INSERT INTO g SELECT n, n % 7 - 3 FROM generate_series(1, 100) n;
      CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE m_a PARTITION OF m FOR VALUES IN ('a');
      CREATE TABLE m_b PARTITION OF m FOR VALUES IN ('b');
      INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 100) g;
      -- Keyed by its replica identity index, not by its primary key.
      CREATE TABLE ri (id int PRIMARY KEY, email text NOT NULL, v int);
      CREATE UNIQUE INDEX ri_email ON ri (email); ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_email;
      INSERT INTO ri SELECT g, 'm' || g, g FROM generate_series(1, 100) g;
      CREATE PUBLICATION rnd FOR TABLE k, h, ${filtered ? 'f (id, x), g WHERE (x > 0)' : 'f, g'}, m, ri WITH (publish_via_partition_root = true)`);
    let kHasN = false;
    let nextId = 10_000;
    const statements: (() => string)[] = [
      () => `INSERT INTO k VALUES (${nextId++}, ${int(100)}, repeat(md5('${int(1e6)}'), ${pick([1, 200])}))`,
      () => `UPDATE k SET v = v + 1 WHERE id % 17 = ${int(17)}`,
      // Key changes with the TOASTed column unchanged.
      () => `UPDATE k SET id = id + 100000 WHERE id = (SELECT min(id) FROM k WHERE id < 100000 AND id % 5 = ${int(5)})`,
      () => `DELETE FROM k WHERE id % 23 = ${int(23)}`,
      () => `INSERT INTO h VALUES (${int(20)}, 'n${int(1e6)}')`,
      () => `UPDATE h SET what = what || '+' WHERE at = ${int(20)}`,
      () => `DELETE FROM h WHERE ctid = (SELECT min(ctid) FROM h WHERE at = ${int(20)})`,
      () => `INSERT INTO f VALUES (${nextId++}, ${int(7) - 3}, 's${int(1e6)}')`,
      () => `UPDATE f SET x = x + 1, secret = 's${int(1e6)}' WHERE id % 11 = ${int(11)}`,
      () => `DELETE FROM f WHERE id % 13 = ${int(13)}`,
      () => `INSERT INTO g VALUES (${nextId++}, ${int(7) - 3})`,
      // In and out of the row filter: PostgreSQL turns those updates into inserts and deletes.
      () => `UPDATE g SET x = ${int(7) - 3} WHERE id % 11 = ${int(11)}`,
      () => `DELETE FROM g WHERE id % 13 = ${int(13)}`,
      () => `INSERT INTO m VALUES (${nextId++}, '${pick(['a', 'b'])}', ${int(100)})`,
      () => `UPDATE m SET v = v + 1 WHERE id % 9 = ${int(9)}`,
      () => `DELETE FROM m WHERE id % 19 = ${int(19)}`,
      () => `INSERT INTO ri VALUES (${nextId}, 'm${nextId++}', ${int(100)})`,
      // Identity key changes, and changes that keep it.
      () => `UPDATE ri SET email = 'm' || id || '-' || ${int(1e6)} WHERE id % 7 = ${int(7)}`,
      () => `UPDATE ri SET v = v + 1 WHERE id % 5 = ${int(5)}`,
      () => `DELETE FROM ri WHERE id % 11 = ${int(11)}`,
      // Rarely: truncates (keyless history and a partitioned root), and a column added mid-stream.
      () => (random() < 0.3 ? 'TRUNCATE h' : 'SELECT 1'),
      () => (random() < 0.3 ? 'TRUNCATE m' : 'SELECT 1'),
      () => (kHasN ? `UPDATE k SET n = ${int(100)} WHERE id % 13 = ${int(13)}` : ((kHasN = true), 'ALTER TABLE k ADD COLUMN n int')),
    ];
    // The Snowflake pipeline's kill phases come from their own generator, so a seed found before it
    // existed still replays the same statements and DuckDB kills.
    const sfRandom = prng(seed ^ 0x5eed);
    const running = new Map<Leg, FloeProcess>();
    try {
      for (let round = 0; round < ROUNDS; round++) {
        for (const leg of legs) running.set(leg, startFloe(args(leg)));
        // Statements in transactions of 1-4, some while floe snapshots or catches up.
        for (let i = 0; i < STATEMENTS_PER_ROUND;) {
          const n = 1 + int(4);
          const batch = Array.from({ length: n }, () => pick(statements)());
          i += n;
          await db.sql(`BEGIN; ${batch.join('; ')}; COMMIT`);
        }
        // Each kill lands in a random phase: while connecting, snapshotting (first round) or streaming.
        const phases = ['connecting', 'snapshotting', 'streaming'] as const;
        for (const leg of legs) {
          const phase = leg.name === 'DuckDB' ? pick(phases) : phases[Math.floor(sfRandom() * phases.length)]!;
          await killIn(running.get(leg)!, phase, `${leg.name}, seed ${seed}`);
          running.delete(leg);
        }
      }
      await Promise.all(legs.map((leg) => catchUpAndStop(leg, seed)));
      await expectTablesEqual(seed);
      await expectSnowflakeTablesEqual(seed, cluster.major >= 15, kHasN);
    } finally {
      for (const p of running.values()) p.kill('SIGKILL');
      await Promise.all([...running.values()].map((p) => p.exited));
    }
  });

  async function killIn(p: FloeProcess, phase: string, what: string): Promise<void> {
    let exited = false;
    void p.exited.then(() => (exited = true));
    await waitFor(
      `floe ${phase} (${what})`,
      () => exited || p.stderr().includes(`"phase":"${phase}"`) || p.stderr().includes('"phase":"streaming"'),
      90_000,
    );
    p.kill('SIGKILL');
    const exit = await p.exited;
    expect(exit.signal ?? exit.code, `${what}: ${exit.stderr.slice(-2000)}`).toBe('SIGKILL');
  }

  async function catchUpAndStop(leg: Leg, seed: number): Promise<void> {
    const [cur] = await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`);
    const target = parseLsn(cur!.lsn);
    const p = startFloe(args(leg));
    const what = `${leg.name}, seed ${seed}`;
    await waitFor(`streaming (${what})`, () => p.stderr().includes('"phase":"streaming"'), 90_000);
    await waitFor(
      `slot caught up (${what})`,
      async () => {
        const r = await db.sql<{ lsn: string | null }>(
          `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
          [leg.slot],
        );
        return r[0]?.lsn ? parseLsn(r[0].lsn) >= target : false;
      },
      90_000,
    );
    p.kill('SIGTERM');
    const exit = await p.exited;
    expect({ code: exit.code, signal: exit.signal }, `${what}: ${exit.stderr.slice(-2000)}`).toEqual({ code: 0, signal: null });
  }

  /**
   * The emulator's targets read back as text and compared with the source's published rows as
   * multisets; the keyless table's current rows are its journal's inserts minus its deletes after its
   * latest truncate marker.
   */
  async function expectSnowflakeTablesEqual(seed: number, filtered: boolean, kHasN: boolean): Promise<void> {
    const sorted = (rows: unknown[][]) => rows.map((r) => JSON.stringify(r.map((v) => (v === null ? null : String(v))))).sort();
    const keyed: [string, string[], string][] = [
      ['k', ['id', 'v', 'body', ...(kHasN ? ['n'] : [])], ''],
      ['f', filtered ? ['id', 'x'] : ['id', 'x', 'secret'], ''],
      ['g', ['id', 'x'], filtered ? 'WHERE x > 0' : ''],
      ['m', ['id', 'region', 'v'], ''],
      ['ri', ['id', 'email', 'v'], ''],
    ];
    for (const [table, cols, where] of keyed) {
      const source = (await db.sql(`SELECT ${cols.map((c) => `${c}::text`).join(', ')} FROM ${table} ${where}`)).map(Object.values);
      const target = await sf.rows(
        `SELECT ${cols.map((c) => `"${c.toUpperCase()}"`).join(', ')} FROM "ANALYTICS"."PUBLIC"."PUBLIC_${table.toUpperCase()}"`,
      );
      expect({ table, rows: sorted(target) }, `seed ${seed}`).toEqual({ table, rows: sorted(source) });
    }
    // The keyless table: its latest snapshot after its last truncate (or reset) marker, plus the i/u
    // images minus the d images of changes after both (docs/architecture.md, as verifyDuckDb does).
    const journal = await sf.rows(
      `SELECT "_FLOE_OP", "_FLOE_LSN", "_FLOE_ORDINAL", "AT", "WHAT" FROM "ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_H"`,
    );
    const position = (r: (string | null)[]) => (BigInt(r[1]!) << 32n) + BigInt(Number(r[2]) + 2);
    const latest = (op: string, after: bigint) =>
      journal.filter((r) => r[0] === op && position(r) > after).reduce((max, r) => (position(r) > max ? position(r) : max), -1n);
    const truncated = latest('t', -1n);
    const snapshot = latest('r', truncated);
    const base = snapshot > truncated ? snapshot : truncated;
    const current = new Map<string, number>();
    for (const r of journal) {
      const counts = (r[0] === 'r' && position(r) === snapshot) || (['i', 'u', 'd'].includes(r[0]!) && position(r) > base);
      if (!counts) continue;
      const key = JSON.stringify([r[3], r[4]]);
      current.set(key, (current.get(key) ?? 0) + (r[0] === 'd' ? -1 : 1));
    }
    const derived = [...current].flatMap(([key, n]) => Array<string>(Math.max(n, 0)).fill(key)).sort();
    const source = sorted((await db.sql(`SELECT at::text, what FROM h`)).map(Object.values));
    expect({ orphanDeletes: [...current].filter(([, n]) => n < 0), rows: derived }, `seed ${seed}: h`).toEqual({
      orphanDeletes: [],
      rows: source,
    });
  }

  async function expectTablesEqual(seed: number): Promise<void> {
    const dest = new DuckDbDestination({ path: file });
    await dest.open('verify', 'verify');
    try {
      const report = await verifyDuckDb({ url: db.url }, 'rnd', dest);
      expect(report.tables.map((t) => [t.table, t.skipped ?? 'compared'])).toEqual([
        ['public.f', 'compared'],
        ['public.g', 'compared'],
        ['public.h', 'compared'],
        ['public.k', 'compared'],
        ['public.m', 'compared'],
        ['public.ri', 'compared'],
      ]);
      expect(report.mismatches, `seed ${seed}: ${JSON.stringify(report.tables)}`).toBe(0);
      const partitions = await dest.query(`SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'm\\_%' ESCAPE '\\'`);
      expect(partitions, `seed ${seed}`).toEqual([]);
    } finally {
      await dest.close();
    }
  }
});
