/**
 * The snapshot's copy workers (src/pipeline/snapshot.ts) against a real PostgreSQL and a destination that
 * holds ranges on demand: a worker copies its next range while the destination still finishes the last
 * one, never holds more than those two, records a range only once the destination holds it, and a range
 * that fails while the next one copies fails the snapshot without recording it.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { waitFor } from './helpers/wait.js';
import { keyedTable, OID } from './helpers/schema.js';
import { copySnapshot, type SnapshotOptions } from '../src/pipeline/snapshot.js';
import type { Destination, SnapshotChunk, SnapshotRangeRef } from '../src/destination/destination.js';
import type { StateStore } from '../src/store/state-store.js';
import { silentLogger } from '../src/telemetry/logger.js';

const table = keyedTable('copied', [
  ['id', OID.INT4],
  ['note', OID.TEXT],
]);

/** A destination whose ranges finish only when the test says so, and the events of ranges and records. */
function heldDestination(fail?: { range: number; error: Error }) {
  const events: string[] = [];
  const held = new Map<number, () => void>();
  const rows = new Map<number, number>();
  const destination = {
    async writeSnapshotRange(range: SnapshotRangeRef, chunks: AsyncIterable<SnapshotChunk>): Promise<number> {
      let n = 0;
      for await (const chunk of chunks) n += chunk.length;
      events.push(`copied ${range.rangeIndex}`);
      await new Promise<void>((resolve) => held.set(range.rangeIndex, resolve));
      if (fail?.range === range.rangeIndex) {
        events.push(`failed ${range.rangeIndex}`);
        throw fail.error;
      }
      events.push(`held ${range.rangeIndex}`);
      rows.set(range.rangeIndex, n);
      return n;
    },
  } as unknown as Destination;
  const store = {
    async markRangeDone(_pipeline: string, _incarnation: string, _table: string, rangeIndex: number) {
      events.push(`recorded ${rangeIndex}`);
    },
  } as unknown as StateStore;
  const finish = (range: number) => {
    const resolve = held.get(range);
    if (!resolve) throw new Error(`range ${range} is not being held`);
    resolve();
  };
  return { destination, store, events, rows, finish };
}

describe.each(testClusters())('snapshot copy on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let exporter: pg.Client;
  let snapshotName: string;
  let pagesPerRange: number;
  const rangeCount = 3;

  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    await c.query(`CREATE TABLE copied (id int PRIMARY KEY, note text);
      INSERT INTO copied SELECT g, repeat('x', 200) FROM generate_series(1, 3000) g`);
    const [{ pages }] = (await c.query(`SELECT pg_relation_size('copied') / current_setting('block_size')::int AS pages`)).rows;
    pagesPerRange = Math.ceil(Number(pages) / rangeCount);
    await c.end();
    // The copy workers import this transaction's snapshot, as they import the slot's in the pipeline.
    exporter = new pg.Client({ connectionString: db.url });
    await exporter.connect();
    await exporter.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    snapshotName = (await exporter.query('SELECT pg_export_snapshot() AS s')).rows[0].s;
  });
  afterAll(async () => {
    await exporter.end();
    await db.drop();
  });

  const options = (d: ReturnType<typeof heldDestination>): SnapshotOptions => ({
    source: { url: db.url },
    snapshotName,
    snapshotLsn: 0x100n,
    parallelism: 1,
    rangePages: pagesPerRange,
    destination: d.destination,
    store: d.store,
    pipeline: 'p',
    incarnation: 'i',
    log: silentLogger,
    signal: new AbortController().signal,
  });
  const task = () => ({ table, rangeCount, pagesPerRange, pending: [0, 1, 2] });

  it('copies the next range while the destination finishes the last one, and records each range once held', async () => {
    const d = heldDestination();
    const copying = copySnapshot([task()], options(d));
    // One worker: range 1 is read from the source while range 0 is still being finished.
    await waitFor('range 1 copied while range 0 is held', () => d.events.includes('copied 1'));
    d.finish(1);
    await waitFor('range 1 recorded', () => d.events.includes('recorded 1'));
    // A worker holds at most two ranges: range 2 waits for range 0.
    expect(d.events).toEqual(['copied 0', 'copied 1', 'held 1', 'recorded 1']);
    d.finish(0);
    await waitFor('range 2 copied', () => d.events.includes('copied 2'));
    d.finish(2);
    await copying;
    expect(d.events).toEqual(['copied 0', 'copied 1', 'held 1', 'recorded 1', 'held 0', 'recorded 0', 'copied 2', 'held 2', 'recorded 2']);
    expect([...d.rows.values()].reduce((a, b) => a + b, 0)).toBe(3000);
  });

  it('fails the snapshot when a range fails while the next one copies, without recording it or copying more', async () => {
    const d = heldDestination({ range: 0, error: new Error('destination refused range 0') });
    const copying = copySnapshot([task()], options(d));
    const failed = expect(copying).rejects.toThrow('destination refused range 0');
    await waitFor('range 1 copied while range 0 is held', () => d.events.includes('copied 1'));
    d.finish(0);
    // The worker waits for range 1 before it gives up, so nothing it started is left running.
    let settled = false;
    void copying.catch(() => undefined).finally(() => (settled = true));
    await waitFor('range 0 failed', () => d.events.includes('failed 0'));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r)); // let the failure reach the worker
    expect(settled).toBe(false);
    d.finish(1);
    await failed;
    expect(d.events).toContain('recorded 1');
    expect(d.events).not.toContain('recorded 0');
    expect(d.events).not.toContain('copied 2');
  });

  it('fails the snapshot at once, its connection closed, when the destination refuses a range before reading its rows', async () => {
    // The range's COPY is then left unread on the worker's connection: a ROLLBACK queued behind it never ran,
    // and the snapshot (and the pipeline's stop) hung with the connection open, idle in transaction.
    const refusing = {
      async writeSnapshotRange(range: SnapshotRangeRef): Promise<number> {
        throw new Error(`destination refused range ${range.rangeIndex} unread`);
      },
    } as unknown as Destination;
    const copying = copySnapshot([task()], { ...options(heldDestination()), destination: refusing });
    let outcome: unknown;
    copying.then(
      () => (outcome = 'resolved'),
      (err: unknown) => (outcome = err),
    );
    await waitFor('the snapshot to fail', () => outcome !== undefined);
    expect(String(outcome)).toContain('destination refused range 0 unread');
    await waitFor(
      'the copy connection to close',
      async () =>
        (await db.sql(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'floe-snapshot-%'`))
          .length === 0,
    );
  });
});
