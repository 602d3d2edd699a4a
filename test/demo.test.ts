/**
 * `floe demo --once --verify --json` end to end, and verifyDuckDb catching
 * a tampered destination.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, tempDir } from './helpers/pipeline.js';
import { runFloe } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb, type TableVerifyResult } from '../src/pipeline/verify.js';
import { parseLsn } from '../src/postgres/lsn.js';

describe.each(testClusters().map((c) => c.major))('floe demo on PostgreSQL %i', (major) => {
  it('runs a fixed workload, verifies every table and prints one JSON summary', async () => {
    const dir = tempDir('floe-demo-');
    try {
      const data = join(dir.path, 'nested', 'demo.duckdb');
      const args = ['demo', '--once', '--verify', '--json', '--seed-rows', '300', '--transactions', '100', '--rate', '0'];
      const r = await runFloe([...args, '--data', data, '--pg-major', String(major)], {}, 60_000);
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(1);
      const summary = JSON.parse(lines[0]!);
      expect(summary.pgMajor).toBe(major);
      expect(summary.mismatches).toBe(0);
      expect(summary.rowsCompared).toBeGreaterThan(0);
      expect(summary.tables.map((t: TableVerifyResult) => t.table).sort()).toEqual(['shop.customers', 'shop.events', 'shop.orders']);
      for (const t of summary.tables as TableVerifyResult[]) {
        expect(t.skipped).toBeUndefined();
        expect(t.sourceRows).toBeGreaterThan(0);
        expect(t.targetRows).toBe(t.sourceRows);
      }
      expect(summary.snapshot.rows).toBe(900);
      expect(summary.snapshot.rowsPerSecond).toBeGreaterThan(0);
      expect(summary.streaming.changes).toBeGreaterThanOrEqual(500);
      expect(summary.streaming.changesPerSecond).toBeGreaterThan(0);
      expect(existsSync(data)).toBe(true);
      // Progress goes to stderr, never into the JSON on stdout.
      expect(r.stderr).toContain('floe demo |');
    } finally {
      dir.remove();
    }
  });
});

describe.each(testClusters())('verifyDuckDb on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    // Commits return after their WAL is flushed, so pg_current_wal_lsn() afterwards is past them.
    await db.sql('SET synchronous_commit = on');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('finds nothing on a faithful copy and reports each kind of tampering', async () => {
    await db.sql(`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], doc jsonb, at timestamptz, blob bytea);
      INSERT INTO items SELECT g, 'item ' || g, g * 1.5, ARRAY['a,b', 'c"d', NULL], jsonb_build_object('g', g), '2024-01-01'::timestamptz + g * interval '1 hour', '\\x00ff'
        FROM generate_series(1, 50) g;
      CREATE TABLE log (at int, msg text);
      ALTER TABLE log REPLICA IDENTITY FULL;
      INSERT INTO log VALUES (1, 'one'), (1, 'one'), (2, 'two');
      CREATE PUBLICATION vpub FOR TABLE items, log;`);
    const destination = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({ source: { url: db.url }, publication: 'vpub', slotName: 'vslot', destination });
    try {
      await waitFor('snapshot', async () => Number((await destination.query(`SELECT count(*) FROM public.items`))[0]![0]) === 50);
      await db.sql(`UPDATE items SET name = 'renamed', tags = '{}' WHERE id = 4;
        DELETE FROM items WHERE id = 5;
        INSERT INTO items (id, name) VALUES (51, NULL);
        INSERT INTO log VALUES (3, 'three');
        UPDATE log SET msg = 'TWO' WHERE at = 2;
        DELETE FROM log WHERE ctid = (SELECT min(ctid) FROM log WHERE at = 1);`);
      const [{ lsn }] = (await db.sql<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`)) as [{ lsn: string }];
      await waitFor('slot caught up', async () => {
        const [slot] = await db.sql<{ lsn: string }>(
          `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'vslot'`,
        );
        return slot !== undefined && parseLsn(slot.lsn) >= parseLsn(lsn);
      });
      await p.stop(); // drains and merges
      await db.dropSlot('vslot');

      const verify = async () => {
        const report = await verifyDuckDb({ url: db.url }, 'vpub', destination);
        const byName = new Map(report.tables.map((t) => [t.table, t]));
        return { report, items: byName.get('public.items')!, log: byName.get('public.log')! };
      };
      const clean = await verify();
      expect(clean.report.ok).toBe(true);
      expect(clean.report.mismatches).toBe(0);
      expect(clean.report.rowsCompared).toBe(50 + 3);
      expect(clean.items).toMatchObject({ sourceRows: 50, targetRows: 50, missing: 0, extra: 0, duplicateKeys: 0 });
      expect(clean.items.sampleKeys).toBeUndefined();
      // Keyless: (r + i + u) - d of the history equals the source's rows.
      expect(clean.log).toMatchObject({ hasKey: false, sourceRows: 3, targetRows: 3, missing: 0, extra: 0, orphanDeletes: 0 });
      expect(clean.log.skipped).toBeUndefined();

      // A row deleted from the target.
      await destination.query(`DELETE FROM public.items WHERE id = 1`);
      let v = await verify();
      expect(v.items).toMatchObject({
        missing: 1,
        extra: 0,
        duplicateKeys: 0,
        targetRows: 49,
        sampleKeys: { missing: ['(1)'], extra: [] },
      });
      expect(v.report.ok).toBe(false);
      expect(v.report.mismatches).toBe(1);

      // A value changed in the target: the source row is missing, the changed one is extra.
      await destination.query(`UPDATE public.items SET price = price + 0.01 WHERE id = 2`);
      v = await verify();
      expect(v.items).toMatchObject({ missing: 2, extra: 1, duplicateKeys: 0, sampleKeys: { missing: ['(1)', '(2)'], extra: ['(2)'] } });

      // A key held twice.
      await destination.query(`INSERT INTO public.items SELECT * FROM public.items WHERE id = 3`);
      v = await verify();
      expect(v.items).toMatchObject({ missing: 2, extra: 2, duplicateKeys: 1, targetRows: 50 });
      expect(v.report.mismatches).toBe(5);
      expect(v.log).toMatchObject({ missing: 0, extra: 0 });

      // A keyless table: a row in the history that the source never had.
      await destination.query(
        `INSERT INTO _floe_journal."public.log" (_floe_seq, _floe_lsn, _floe_ordinal, _floe_op, "at", msg)
         SELECT 1000000, max(_floe_lsn) + 1, 0, 'i', '9', 'ghost' FROM _floe_journal."public.log"`,
      );
      v = await verify();
      expect(v.log).toMatchObject({ missing: 0, extra: 1, targetRows: 4 });

      // An update whose old image is not in the history cannot be derived: skipped, with the reason.
      await destination.query(
        `DELETE FROM _floe_journal."public.log" j WHERE _floe_op = 'd' AND EXISTS (
           SELECT 1 FROM _floe_journal."public.log" u WHERE u._floe_op = 'u' AND u._floe_lsn = j._floe_lsn AND u._floe_ordinal = j._floe_ordinal + 1)`,
      );
      v = await verify();
      expect(v.log.skipped).toMatch(/UPDATE.*old row image/);
      expect(v.report.skippedTables).toBe(1);
      expect(v.report.rowsCompared).toBe(50);
    } finally {
      await p.stop().catch(() => undefined);
      await destination.close();
      await db.dropSlot('vslot');
    }
  });

  it('compares only live rows with soft deletes', async () => {
    await db.sql(`CREATE TABLE soft (id int PRIMARY KEY, v text); INSERT INTO soft VALUES (1, 'one'), (2, 'two');
      CREATE PUBLICATION spub FOR TABLE soft;`);
    const destination = new DuckDbDestination({ path: ':memory:', deleteMode: 'soft' });
    const p = startPipeline({ source: { url: db.url }, publication: 'spub', slotName: 'sslot', destination });
    try {
      await waitFor('snapshot', async () => Number((await destination.query(`SELECT count(*) FROM public.soft`))[0]![0]) === 2);
      await db.sql(`DELETE FROM soft WHERE id = 1`);
      await waitFor(
        'soft delete',
        async () => (await destination.query(`SELECT _floe_deleted FROM public.soft WHERE id = 1`))[0]?.[0] === true,
      );
      await p.stop();
      let report = await verifyDuckDb({ url: db.url }, 'spub', destination);
      expect(report.tables[0]).toMatchObject({ sourceRows: 1, targetRows: 1, missing: 0, extra: 0, duplicateKeys: 0 });
      await destination.query(`UPDATE public.soft SET _floe_deleted = false WHERE id = 1`); // a delete that did not arrive
      report = await verifyDuckDb({ url: db.url }, 'spub', destination);
      expect(report.tables[0]).toMatchObject({ sourceRows: 1, targetRows: 2, missing: 0, extra: 1 });
    } finally {
      await p.stop().catch(() => undefined);
      await destination.close();
      await db.dropSlot('sslot');
    }
  });
});
