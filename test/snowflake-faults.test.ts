/**
 * The Snowflake destination under the emulator's faults: reopen-class errors, invalidated channels, a
 * 429 storm, 5xx, connections dropped after the server applied an append (ambiguous outcome), an
 * outage, stalled commits. Afterwards the target equals the source, no key is there twice, the journal
 * holds every change exactly once, and at no moment did the slot's confirmed_flush_lsn cover a
 * transaction the emulator had not committed (invariants 1 and 3). Then: a row error stops the
 * pipeline with the table and position, and a wrong key names the fingerprints.
 *
 * FLOE_CHAOS=1 (npm run test:chaos) makes the outage last two minutes.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { parseSnowflakeUrl } from '../src/destination/snowflake/config.js';
import { createSnowflakeDestination, type SnowflakeDestination } from '../src/destination/snowflake/snowflake-destination.js';
import type { FaultConfig } from '../src/emulator/faults.js';
import { parseLsn } from '../src/postgres/lsn.js';
import { connectSource, SchemaCache } from '../src/postgres/source.js';
import { FloeError } from '../src/errors.js';
import { createLogger, silentLogger } from '../src/telemetry/logger.js';

const cluster = testClusters()[0]!;
const OUTAGE_MS = process.env.FLOE_CHAOS ? 120_000 : 3_000;

describe('Snowflake destination under faults', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  let p: RunningPipeline | undefined;
  let dest: SnowflakeDestination | undefined;
  const T = '"ANALYTICS"."PUBLIC"."PUBLIC_F"';
  const J = '"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_F"';
  /** Every source transaction: its ids and a WAL position at or after its commit's end. */
  const txns: { lo: number; hi: number; after: bigint }[] = [];
  const violations: string[] = [];
  let sampling = true;
  let sampler: Promise<void> | undefined;
  let nextId = 1;

  const slotAck = async (slot: string): Promise<bigint> => {
    const [row] = await db.sql<{ lsn: string | null }>(
      `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
      [slot],
    );
    return row?.lsn ? parseLsn(row.lsn) : 0n;
  };

  /** Invariant 1/3: whatever the slot confirmed is committed in the emulator's journal. */
  const sample = async () => {
    const ack = await slotAck('sf_faults');
    for (const t of txns.filter((x) => x.after <= ack)) {
      const [[n]] = (await sf.rows(
        `SELECT COUNT(*) FROM ${J} WHERE TRY_TO_NUMBER("ID") >= ${t.lo} AND TRY_TO_NUMBER("ID") <= ${t.hi} AND "_FLOE_OP" IN ('r', 'i')`,
      )) as [[string]];
      if (Number(n) < t.hi - t.lo + 1 && !violations.length)
        violations.push(`slot confirmed ${ack} but ids ${t.lo}..${t.hi} are not all committed`);
    }
  };

  /** One transaction inserting `rows` rows; returns after recording its position. */
  const insert = async (rows: number) => {
    const lo = nextId;
    nextId += rows;
    await db.sql(`INSERT INTO f SELECT g, 'v' || g FROM generate_series(${lo}, ${lo + rows - 1}) g`);
    const [{ lsn }] = (await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)) as [{ lsn: string }];
    txns.push({ lo, hi: lo + rows - 1, after: parseLsn(lsn) });
  };

  /** Positions the journal holds more than once (each change must be there exactly once). */
  const duplicates = async () =>
    sf.rows(
      `SELECT "_FLOE_LSN", "_FLOE_ORDINAL", COUNT(*) FROM ${J} WHERE "_FLOE_OP" <> 'r' GROUP BY "_FLOE_LSN", "_FLOE_ORDINAL" HAVING COUNT(*) > 1`,
    );

  const converged = async () => {
    const [[n]] = (await sf.rows(`SELECT COUNT(*) FROM ${T}`)) as [[string]];
    return Number(n) === nextId - 1;
  };

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sffaults');
    // Commits lag appends by only 20 ms, so reopens after an ambiguous append often meet a commit in
    // progress: the emulator must order the reopen after it, and the client must not replay what commits.
    sf = await snowflakeFixture({ commitDelayMs: 20 });
    await db.sql(`CREATE TABLE f (id int PRIMARY KEY, v text); CREATE PUBLICATION f_pub FOR TABLE f`);
    await insert(20);
    // The breaker half-opens quickly so a short outage ends quickly; channels_per_table=2 spreads keys.
    dest = createSnowflakeDestination(parseSnowflakeUrl(sf.url('&channels_per_table=2')), {
      log: process.env.FLOE_TEST_LOG ? createLogger({ level: process.env.FLOE_TEST_LOG }) : silentLogger,
      breaker: { halfOpenAfterMs: 500 },
    });
    p = startPipeline({ source: { url: db.url }, publication: 'f_pub', slotName: 'sf_faults', destination: dest });
    await waitFor('snapshot', converged, 60_000);
    sampler = (async () => {
      while (sampling) {
        await sample().catch((err: unknown) => violations.push(`sampler: ${(err as Error).message}`));
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  }, 90_000);

  afterAll(async () => {
    sampling = false;
    await sampler;
    sf?.emulator.faults.clear();
    await p?.stop().catch(() => undefined);
    await dest?.close();
    await db?.dropSlot('sf_faults');
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  const faults: [string, FaultConfig][] = [
    [
      'stale continuation tokens (reopen and replay)',
      { routes: { append: { errorRate: 1, status: 400, code: 'STALE_CONTINUATION_TOKEN_SEQUENCER', count: 3 } } },
    ],
    ['channels invalidated (must be reopened)', { invalidateChannels: { code: 'ERR_CHANNEL_MUST_BE_REOPENED' } }],
    [
      'a 429 storm on appends and statements',
      { routes: { append: { errorRate: 1, status: 429, count: 15 }, sql: { errorRate: 1, status: 429, count: 10 } } },
    ],
    ['5xx on every route', { routes: { '*': { errorRate: 1, status: 503, count: 12 } } }],
    ['connections dropped after the append was applied', { routes: { append: { drop: 'after', count: 4 } } }],
    ['connections dropped before the append', { routes: { append: { drop: 'before', count: 4 } } }],
  ];
  it.each(faults)(
    '%s: target equals the source afterwards',
    async (_name, fault) => {
      sf.emulator.faults.set(fault);
      for (let i = 0; i < 5; i++) await insert(10);
      await db.sql(`UPDATE f SET v = v || '!' WHERE id % 7 = 0`);
      await waitFor('converged', converged, 60_000);
      sf.emulator.faults.clear();
      expect(await duplicates()).toEqual([]);
    },
    90_000,
  );

  it(
    `an outage of ${OUTAGE_MS / 1000} s: backpressure, then everything arrives`,
    async () => {
      sf.emulator.faults.set({ outage: { mode: 'http503' } });
      const end = setTimeout(() => sf.emulator.faults.clear(), OUTAGE_MS);
      for (let i = 0; i < 5; i++) await insert(10);
      // Nothing written during the outage is acknowledged (the sampler checks it all along).
      expect(await converged()).toBe(false);
      await waitFor('converged after the outage', converged, OUTAGE_MS + 90_000);
      clearTimeout(end);
    },
    OUTAGE_MS + 120_000,
  );

  it('stalled commits: the slot is not acknowledged beyond what committed, then catches up', async () => {
    await waitFor('idle', converged, 30_000);
    sf.emulator.faults.set({ stallCommits: true });
    const before = txns.length;
    await insert(10);
    const stalled = txns[before]!;
    // The rows are appended (pending in the emulator) but not committed: nothing may be acknowledged.
    await waitFor('appended, pending', async () =>
      (await sf.emulator.state()).channels.some((c) => (c as { pending?: number }).pending !== 0),
    );
    const [[inJournal]] = (await sf.rows(`SELECT COUNT(*) FROM ${J} WHERE TRY_TO_NUMBER("ID") >= ${stalled.lo}`)) as [[string]];
    expect(Number(inJournal)).toBe(0);
    expect(await slotAck('sf_faults')).toBeLessThan(stalled.after);
    sf.emulator.faults.clear();
    await waitFor('converged', converged, 60_000);
    await waitFor('acknowledged', async () => (await slotAck('sf_faults')) >= stalled.after, 30_000);
  }, 90_000);

  it('the journal holds every change once, no key is there twice, and the slot never ran ahead', async () => {
    await waitFor('converged', converged, 30_000);
    expect(await sf.rows(`SELECT "ID" FROM ${T} GROUP BY "ID" HAVING COUNT(*) > 1`)).toEqual([]);
    expect(
      await sf.rows(
        `SELECT "_FLOE_LSN", "_FLOE_ORDINAL" FROM ${J} WHERE "_FLOE_OP" <> 'r' GROUP BY "_FLOE_LSN", "_FLOE_ORDINAL" HAVING COUNT(*) > 1`,
      ),
    ).toEqual([]);
    const [[ins]] = (await sf.rows(`SELECT COUNT(*) FROM ${J} WHERE "_FLOE_OP" = 'i'`)) as [[string]];
    expect(Number(ins)).toBe(nextId - 1 - 20);
    const [[bad]] = (await sf.rows(`SELECT COUNT(*) FROM ${T} WHERE "V" IS NULL`)) as [[string]];
    expect(Number(bad)).toBe(0);
    const src = await db.sql<{ n: string }>(`SELECT count(*)::text AS n FROM f WHERE v LIKE '%!'`);
    const [[marked]] = (await sf.rows(`SELECT COUNT(*) FROM ${T} WHERE "V" LIKE '%!'`)) as [[string]];
    expect(marked).toBe(src[0]!.n);
    sampling = false;
    await sampler;
    expect(violations).toEqual([]);
  }, 60_000);
});

describe('terminal Snowflake failures', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfterm');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('a row error stops acknowledgement and names the table and the position', async () => {
    await db.sql(`CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r VALUES (1, '1'); CREATE PUBLICATION r_pub FOR TABLE r`);
    const dest = sf.destination();
    const store = new MemoryStateStore();
    const p = startPipeline({ source: { url: db.url }, publication: 'r_pub', slotName: 'sf_rowerr', destination: dest, store });
    let again: ReturnType<typeof startPipeline> | undefined;
    try {
      await waitFor('snapshot', async () => (await sf.rows(`SELECT COUNT(*) FROM "ANALYTICS"."PUBLIC"."PUBLIC_R"`))[0]![0] === '1', 60_000);
      // The journal column now refuses text that is not a number (as if someone changed it by hand).
      const journal = '"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_R"';
      const cols = (await sf.rows(`DESCRIBE TABLE ${journal}`)).map((r) => `"${r[0]}" ${r[0] === 'V' ? 'NUMBER(10,0)' : r[1]}`);
      await sf.rows(`DROP TABLE IF EXISTS ${journal}`);
      await sf.rows(`CREATE TABLE ${journal} (${cols.join(', ')})`);
      const ackBefore = await db.sql<{ lsn: string }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'sf_rowerr'`,
      );
      await db.sql(`INSERT INTO r VALUES (2, 'not a number')`);
      const [{ lsn }] = (await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)) as [{ lsn: string }];
      const error = await p.done.then(
        () => undefined,
        (err: unknown) => err as Error,
      );
      expect(error?.message).toMatch(/public\.r at positions [0-9A-F]+\/[0-9A-F]+#0/);
      const [after] = await db.sql<{ lsn: string }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'sf_rowerr'`,
      );
      expect(parseLsn(after!.lsn)).toBeLessThan(parseLsn(lsn));
      expect(parseLsn(after!.lsn)).toBeGreaterThanOrEqual(parseLsn(ackBefore[0]!.lsn));

      // A restart (a worker retries failed pipelines) must not skip the rejected change as already
      // committed: the channel's earlier row errors stop it again, and nothing more is acknowledged.
      again = startPipeline({ source: { url: db.url }, publication: 'r_pub', slotName: 'sf_rowerr', destination: sf.destination(), store });
      const second = await again.done.then(
        () => undefined,
        (err: unknown) => err as Error,
      );
      expect(second?.message).toMatch(/rejected 1 row\(s\) of public\.r on channel .* missing from the journal/);
      const [afterRestart] = await db.sql<{ lsn: string }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'sf_rowerr'`,
      );
      expect(parseLsn(afterRestart!.lsn)).toBeLessThan(parseLsn(lsn));
    } finally {
      await p.stop().catch(() => undefined);
      await again?.stop().catch(() => undefined);
      await again?.destination.close().catch(() => undefined);
      await dest.close();
      await db.dropSlot('sf_rowerr');
    }
  }, 90_000);

  it('a key the account does not know: a clear error naming both fingerprints', async () => {
    await db.sql(`CREATE TABLE k (id int PRIMARY KEY); CREATE PUBLICATION k_pub FOR TABLE k`);
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const wrong = join(sf.dir.path, 'wrong.p8');
    writeFileSync(wrong, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const url = sf.url().replace(/private_key_file=[^&]+/, `private_key_file=${wrong}`);
    const dest = createSnowflakeDestination(parseSnowflakeUrl(url), { log: silentLogger });
    const registered = (await sf.emulator.state()).users.find((u) => u.name === 'FLOE')!.fingerprint;
    const p = startPipeline({ source: { url: db.url }, publication: 'k_pub', slotName: 'sf_wrongkey', destination: dest });
    try {
      const error = (await p.done.then(
        () => undefined,
        (err: unknown) => err,
      )) as { kind?: string; message: string; hint?: string } | undefined;
      expect(error?.kind).toBe('auth');
      expect(error?.message).toContain(registered);
      expect(`${error?.message} ${error?.hint}`).not.toContain('PRIVATE KEY');
    } finally {
      await p.stop().catch(() => undefined);
      await dest.close();
      await db.dropSlot('sf_wrongkey');
    }
  }, 60_000);
});

describe('restarts replay into the Snowflake journal exactly once', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfrestart');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('a failure after the journal commit and before the state store records it: the replay is skipped by offset token', async () => {
    await db.sql(`CREATE TABLE rs (id int PRIMARY KEY, v text); INSERT INTO rs VALUES (0, 's'); CREATE PUBLICATION rs_pub FOR TABLE rs`);
    const dest = sf.destination('&channels_per_table=3');
    let failures = 0;
    const p = startPipeline({
      source: { url: db.url },
      publication: 'rs_pub',
      slotName: 'sf_restart',
      destination: dest,
      failpoints: {
        // Twice, a batch is in the journal but not in the state store: the runtime restarts and the
        // server replays it.
        afterDestinationWrite: (batch) => {
          if (batch.changes > 0 && failures < 2) {
            failures++;
            throw new FloeError('connection', 'injected failure after the destination write', { retry: 'timed' });
          }
        },
      },
    });
    try {
      await waitFor(
        'snapshot',
        async () => (await sf.rows(`SELECT COUNT(*) FROM "ANALYTICS"."PUBLIC"."PUBLIC_RS"`))[0]![0] === '1',
        60_000,
      );
      for (let i = 1; i <= 5; i++) await db.sql(`INSERT INTO rs SELECT g, 'v' FROM generate_series(${i * 100}, ${i * 100 + 49}) g`);
      await db.sql(`UPDATE rs SET v = 'w' WHERE id % 3 = 0`);
      const T = '"ANALYTICS"."PUBLIC"."PUBLIC_RS"';
      const J = '"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_RS"';
      await waitFor(
        'converged',
        async () => (await sf.rows(`SELECT COUNT(*), SUM(IFF("V" = 'w', 1, 0)) FROM ${T}`))[0]!.join() === '251,84',
        60_000,
      );
      await waitFor('both injected failures', () => failures === 2);
      expect(
        await sf.rows(`SELECT "_FLOE_LSN", "_FLOE_ORDINAL", COUNT(*) FROM ${J} GROUP BY "_FLOE_LSN", "_FLOE_ORDINAL" HAVING COUNT(*) > 1`),
      ).toEqual([]);
      expect((await sf.rows(`SELECT COUNT(*) FROM ${J} WHERE "_FLOE_OP" = 'i'`))[0]![0]).toBe('250');
    } finally {
      await p.stop().catch(() => undefined);
      await dest.close();
      await db.dropSlot('sf_restart');
    }
  }, 90_000);

  it('a snapshot range interrupted after some rows committed is rewritten without duplicates', async () => {
    await db.sql(`CREATE TABLE sr (id int PRIMARY KEY, v text); CREATE PUBLICATION sr_pub FOR TABLE sr`);
    const client = await connectSource({ url: db.url });
    const [table] = await new SchemaCache(client).publishedTables('sr_pub');
    await client.end();
    const J = '"ANALYTICS"."PUBLIC_FLOE_LANDING"."PUBLIC_SR"';
    const rows = (lo: number, hi: number) => Array.from({ length: hi - lo + 1 }, (_, i) => [String(lo + i), 'x']);
    const range = { table: table!, rangeIndex: 0, snapshotLsn: 100n };
    const journalRows = async () => Number((await sf.rows(`SELECT COUNT(*) FROM ${J}`))[0]![0]);

    // First attempt: 10,000 rows reach the journal, then the copy connection dies.
    const first = sf.destination();
    await first.open('sr_pipe', 'incarnation-1');
    await first.prepare(table!);
    async function* interrupted() {
      yield rows(1, 10_000);
      await waitFor('the first rows committed', async () => (await journalRows()) === 10_000, 30_000);
      throw new Error('copy connection lost');
    }
    await expect(first.writeSnapshotRange(range, interrupted())).rejects.toThrow(/copy connection lost/);
    await first.close();

    // After a restart the range is written again, whole, once.
    const second = sf.destination();
    await second.open('sr_pipe', 'incarnation-1');
    await second.prepare(table!);
    async function* whole() {
      yield rows(1, 10_000);
      yield rows(10_001, 15_000);
    }
    expect(await second.writeSnapshotRange(range, whole())).toBe(15_000);
    expect(await sf.rows(`SELECT COUNT(*), COUNT(DISTINCT "ID") FROM ${J} WHERE "_FLOE_OP" = 'r'`)).toEqual([['15000', '15000']]);
    // Recorded: a third attempt writes nothing.
    expect(await second.writeSnapshotRange(range, whole())).toBe(0);
    await second.completeSnapshot(table!);
    await second.merge();
    expect(await sf.rows(`SELECT COUNT(*) FROM "ANALYTICS"."PUBLIC"."PUBLIC_SR"`)).toEqual([['15000']]);
    await second.close();
  }, 90_000);
});
