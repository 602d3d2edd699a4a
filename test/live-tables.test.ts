/**
 * Publication changes and per-table controls while the pipeline streams: a table added to the
 * publication is snapshotted live (the other tables keep streaming), a removed table is forgotten, one
 * table can be resynced or skipped, and a live snapshot interrupted by a stop resumes at the next start.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline, type RunningPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { PipelineControl, type TableState } from '../src/pipeline/controls.js';
import type { Failpoints, PipelineOptions } from '../src/pipeline/pipeline.js';
import type { Cell, TableSchema } from '../src/model.js';
import { mapColumnType } from '../src/schema/type-map.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';

/** A failpoint that holds one table's snapshot ranges from `atRange` on, in every worker, until released. */
function holdRange(table: string, atRange = 0) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const holding = new Promise<void>((r) => (reached = r));
  const failpoints: Failpoints = {
    async beforeRecordRange(t: TableSchema, rangeIndex: number) {
      if (t.name !== table || rangeIndex < atRange) return;
      reached();
      await released;
    },
  };
  return { failpoints, holding, release };
}

describe.each(testClusters())('live publication changes on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let seq = 0;
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
  });
  afterAll(async () => {
    await db.drop();
  });

  interface Run {
    p: RunningPipeline;
    destination: DuckDbDestination;
    control: PipelineControl;
    states: Map<string, TableState[]>;
    q(sql: string): Promise<unknown[][]>;
    /** Waits until the table's state history ends with `state`. */
    state(table: string, state: TableState): Promise<void>;
  }

  function run(n: number, extra: Partial<PipelineOptions> & { destination?: DuckDbDestination; control?: PipelineControl } = {}): Run {
    const destination = extra.destination ?? new DuckDbDestination({ path: ':memory:' });
    const control = extra.control ?? new PipelineControl();
    const states = new Map<string, TableState[]>();
    let streaming = false;
    const p = startPipeline({
      source: { url: db.url },
      publication: `pub${n}`,
      slotName: `live${n}`,
      snapshotRangePages: 1,
      snapshotParallelism: 2,
      publicationPollMs: 300,
      ...extra,
      destination,
      control,
      events: {
        phase: (ph) => void (ph === 'streaming' && (streaming = true)),
        table: (t, s) => {
          const list = states.get(t) ?? [];
          if (list.at(-1) !== s) list.push(s);
          states.set(t, list);
        },
      },
    });
    return {
      p,
      destination,
      control,
      states,
      q: (sql) => destination.query(sql),
      async state(table, state) {
        await waitFor(`${table} ${state}`, () => streaming && states.get(table)?.at(-1) === state);
      },
    };
  }

  /** Writes a fresh row to each table and waits until every one is merged: the target has caught up. */
  async function settle(r: Run, tables: string[]): Promise<void> {
    const id = 1_000_000 + ++seq;
    for (const t of tables) await db.sql(`INSERT INTO ${t} (id, v) VALUES ($1, 'settle')`, [id]);
    for (const t of tables) {
      await waitFor(`${t} caught up`, async () => (await r.q(`SELECT count(*) FROM public.${t} WHERE id = ${id}`))[0]![0] === 1n);
    }
  }

  async function expectEqual(r: Run, n: number, tables: string[]): Promise<void> {
    const report = await verifyDuckDb({ url: db.url }, `pub${n}`, r.destination);
    expect(report.tables.map((t) => t.table).sort()).toEqual(tables.map((t) => `public.${t}`).sort());
    expect(report.mismatches, JSON.stringify(report.tables)).toBe(0);
  }

  async function finish(r: Run, n: number): Promise<void> {
    // A failed test leaves its writer running: stop it before the database goes.
    for (const w of writers.splice(0)) await w.stop().catch(() => undefined);
    await r.p.stop();
    await r.destination.close();
    await db.dropSlot(`live${n}`);
  }

  /** Changes to the given tables, transaction after transaction, until stopped. */
  function writer(tables: string[]) {
    let stop = false;
    let i = 0;
    const done = (async () => {
      while (!stop) {
        i++;
        for (const t of tables) {
          await db.sql(`UPDATE ${t} SET v = $1 WHERE id = $2`, [`w${i}`, (i * 7) % 500]);
          await db.sql(`DELETE FROM ${t} WHERE id = $1`, [(i * 13) % 500]);
          await db.sql(`INSERT INTO ${t} (id, v) VALUES ($1, 'ins') ON CONFLICT (id) DO UPDATE SET v = 'upd'`, [10_000 + i]);
        }
      }
    })();
    const w = {
      async stop() {
        stop = true;
        await done;
      },
    };
    writers.push(w);
    return w;
  }
  const writers: { stop(): Promise<void> }[] = [];

  async function tables(n: number, names: string[], rows = 2000): Promise<void> {
    for (const t of names) {
      await db.sql(`CREATE TABLE ${t} (id int PRIMARY KEY, v text, pad text DEFAULT repeat('p', 40));
        INSERT INTO ${t} (id, v) SELECT g, 'v' || g FROM generate_series(1, ${rows}) g`);
    }
    void n;
  }

  it('snapshots a table added while streaming; the other tables keep streaming meanwhile', async () => {
    const n = ++seq;
    const [a, late, hist] = [`a${n}`, `late${n}`, `hist${n}`];
    await tables(n, [a, late]);
    // A keyless table (append-only history) joins too.
    await db.sql(`CREATE TABLE ${hist} (at int, what text); ALTER TABLE ${hist} REPLICA IDENTITY FULL;
      INSERT INTO ${hist} SELECT g % 50, 'e' || g FROM generate_series(1, 500) g`);
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${a}`);
    const hold = holdRange(late, 2);
    const r = run(n, { failpoints: hold.failpoints });
    try {
      await r.state(`public.${a}`, 'streaming');
      const w = writer([a, late]);
      await db.sql(`ALTER PUBLICATION pub${n} ADD TABLE ${late}, ${hist}`);
      r.control.refreshPublication();
      await db.sql(
        `UPDATE ${hist} SET what = 'changed' WHERE at = 1; DELETE FROM ${hist} WHERE at = 2; INSERT INTO ${hist} VALUES (99, 'new')`,
      );
      await hold.holding;
      // The new table's snapshot is held open: a change to the other table still reaches its target.
      expect(r.states.get(`public.${late}`)?.at(-1)).toBe('snapshotting');
      await db.sql(`INSERT INTO ${a} (id, v) VALUES (900000, 'during')`);
      await waitFor(
        'change visible during the snapshot',
        async () => (await r.q(`SELECT v FROM public.${a} WHERE id = 900000`))[0]?.[0] === 'during',
      );
      expect(r.states.get(`public.${late}`)?.at(-1)).toBe('snapshotting');
      hold.release();
      await r.state(`public.${late}`, 'streaming');
      await r.state(`public.${hist}`, 'streaming');
      await db.sql(`UPDATE ${hist} SET what = 'later' WHERE at = 3; DELETE FROM ${hist} WHERE at = 4`);
      await w.stop();
      await settle(r, [a, late]);
      await waitFor(
        'history caught up',
        async () => (await r.q(`SELECT count(*) FROM public.${hist} WHERE what = 'later'`))[0]![0] === 10n,
      );
      await r.p.stop();
      await expectEqual(r, n, [a, late, hist]);
      expect(r.states.get(`public.${late}`)).toEqual(['snapshotting', 'streaming']);
      // Existing rows arrived through the snapshot, straight into the target; later ones through the stream.
      const ops = await r.q(`SELECT _floe_op, count(*) > 0 FROM _floe_journal."public.${late}" GROUP BY 1 ORDER BY 1`);
      expect(ops.map((x) => x[0])).toEqual(expect.arrayContaining(['d', 'i', 'u']));
      expect(ops.map((x) => x[0])).not.toContain('r');
      const [[fromSnapshot]] = (await r.q(`SELECT count(*) FROM public.${late} WHERE _floe_ordinal = -1`)) as [[bigint]];
      expect(fromSnapshot).toBeGreaterThan(0n);
    } finally {
      hold.release();
      await finish(r, n);
    }
  });

  it('stops replicating a table removed from the publication; its destination tables stay', async () => {
    const n = ++seq;
    const [a, b] = [`a${n}`, `b${n}`];
    await tables(n, [a, b], 100);
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${a}, ${b}`);
    const r = run(n);
    try {
      await r.state(`public.${b}`, 'streaming');
      await db.sql(`ALTER PUBLICATION pub${n} DROP TABLE ${b}`);
      r.control.refreshPublication();
      await r.state(`public.${b}`, 'removed');
      await db.sql(`UPDATE ${b} SET v = 'after removal' WHERE id = 1`);
      await settle(r, [a]);
      const store = r.p.store;
      const progress = await store.getProgress(`live${n}`);
      expect([...(await store.getTables(`live${n}`, progress!.incarnation)).keys()]).toEqual([`public.${a}`]);
      expect(await r.q(`SELECT v, (SELECT count(*) FROM public.${b}) FROM public.${b} WHERE id = 1`)).toEqual([['v1', 100n]]);
      await r.p.stop();
      await expectEqual(r, n, [a]);
    } finally {
      await finish(r, n);
    }
  });

  it('resyncs one table while the others stream: rebuilt from a new snapshot, history kept', async () => {
    const n = ++seq;
    const [a, b] = [`a${n}`, `b${n}`];
    await tables(n, [a, b], 1000);
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${a}, ${b}`);
    const failpoints: Failpoints = {};
    const r = run(n, { failpoints });
    const resyncHold = holdRange(b, 1);
    try {
      await r.state(`public.${b}`, 'streaming');
      // Only the resync's snapshot is held.
      Object.assign(failpoints, resyncHold.failpoints);
      const w = writer([a, b]);
      await settle(r, [a, b]);
      // A target that drifted (here: edited by hand) is what a resync repairs.
      await r.q(`DELETE FROM public.${b} WHERE id <= 10; UPDATE public.${b} SET v = 'drift' WHERE id BETWEEN 11 AND 20`);
      const journalBefore = Number((await r.q(`SELECT count(*) FROM _floe_journal."public.${b}"`))[0]![0]);
      r.control.requestResync(`public.${b}`);
      await resyncHold.holding;
      await db.sql(`INSERT INTO ${a} (id, v) VALUES (900000, 'during')`);
      await waitFor(
        'change visible during the resync',
        async () => (await r.q(`SELECT v FROM public.${a} WHERE id = 900000`))[0]?.[0] === 'during',
      );
      resyncHold.release();
      await r.state(`public.${b}`, 'streaming');
      await w.stop();
      await settle(r, [a, b]);
      await r.p.stop();
      await expectEqual(r, n, [a, b]);
      expect(r.states.get(`public.${b}`)).toEqual(['snapshotting', 'streaming', 'snapshotting', 'streaming']);
      // The journal keeps the history before the resync, then a truncate marker; the new snapshot's rows
      // went straight into the target, at its position.
      const j = await r.q(
        `SELECT count(*), count(*) FILTER (WHERE _floe_op = 't'), count(*) FILTER (WHERE _floe_op = 'r'), max(_floe_lsn) FILTER (WHERE _floe_op = 't') FROM _floe_journal."public.${b}"`,
      );
      expect(Number(j[0]![0])).toBeGreaterThan(journalBefore);
      expect(j[0]!.slice(1, 3)).toEqual([1n, 0n]);
      const snapshotRows = await r.q(`SELECT count(*), min(_floe_lsn), max(_floe_lsn) FROM public.${b} WHERE _floe_ordinal = -1`);
      expect(snapshotRows[0]![0]).toBeGreaterThan(0n);
      // One snapshot, taken after the marker (a keyed table is reset at the stream's position first).
      expect(snapshotRows[0]![1]).toBe(snapshotRows[0]![2]);
      expect(snapshotRows[0]![1]).toBeGreaterThanOrEqual(j[0]![3] as bigint);
    } finally {
      resyncHold.release();
      await finish(r, n);
    }
  });

  it('drops the changes of a skipped table; unskipped, it is resynced', async () => {
    const n = ++seq;
    const [a, b] = [`a${n}`, `b${n}`];
    await tables(n, [a, b], 300);
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${a}, ${b}`);
    const r = run(n);
    try {
      await r.state(`public.${b}`, 'streaming');
      r.control.setSkipped([`public.${b}`]);
      await r.state(`public.${b}`, 'skipped');
      const journalBefore = await r.q(`SELECT count(*) FROM _floe_journal."public.${b}"`);
      await db.sql(`UPDATE ${b} SET v = 'while skipped' WHERE id <= 50; DELETE FROM ${b} WHERE id > 250`);
      await settle(r, [a]);
      expect(await r.q(`SELECT count(*) FROM _floe_journal."public.${b}"`)).toEqual(journalBefore);
      expect(await r.q(`SELECT count(*) FROM public.${b} WHERE v = 'while skipped'`)).toEqual([[0n]]);
      r.control.setSkipped([]);
      await r.state(`public.${b}`, 'streaming');
      await settle(r, [a, b]);
      await r.p.stop();
      await expectEqual(r, n, [a, b]);
      expect(r.states.get(`public.${b}`)).toEqual(['snapshotting', 'streaming', 'skipped', 'snapshotting', 'streaming']);
    } finally {
      await finish(r, n);
    }
  });

  /**
   * Streams `a<n>`, adds `late<n>` to the publication, and stops floe while the live snapshot's ranges
   * from `atRange` on are held (after `whileHeld`), checking the store has that snapshot part-way done.
   */
  async function stopInLiveSnapshot(n: number, atRange: number, whileHeld?: (late: string) => Promise<unknown>) {
    const [a, late] = [`a${n}`, `late${n}`];
    await tables(n, [a, late]);
    await db.sql(`CREATE PUBLICATION pub${n} FOR TABLE ${a}`);
    const hold = holdRange(late, atRange);
    const store = new MemoryStateStore();
    const destination = new DuckDbDestination({ path: ':memory:' });
    const first = run(n, { failpoints: hold.failpoints, store, destination });
    try {
      await first.state(`public.${a}`, 'streaming');
      await db.sql(`ALTER PUBLICATION pub${n} ADD TABLE ${late}`);
      await hold.holding; // found by the publication poll
      await whileHeld?.(late);
      const stopping = first.p.stop();
      hold.release();
      await stopping;
      const progress = await store.getProgress(`live${n}`);
      const t = (await store.getTables(`live${n}`, progress!.incarnation)).get(`public.${late}`)!;
      expect(t.phase).toBe('snapshot');
      expect(t.rangesDone.size).toBeGreaterThan(0);
      expect(t.rangesDone.size).toBeLessThan(t.rangeCount);
    } catch (err) {
      hold.release();
      await first.p.stop();
      await destination.close();
      await db.dropSlot(`live${n}`);
      throw err;
    }
    return { a, late, store, destination };
  }

  it('a stop during a live snapshot resumes it at the next start and converges', async () => {
    const n = ++seq;
    const { a, late, store, destination } = await stopInLiveSnapshot(n, 3, (late) =>
      db.sql(`UPDATE ${late} SET v = 'before stop' WHERE id % 10 = 0`),
    );
    let second: Run | undefined;
    try {
      await db.sql(`UPDATE ${late} SET v = 'while down' WHERE id % 10 = 1; DELETE FROM ${late} WHERE id % 10 = 2`);
      second = run(n, { store, destination });
      await second.state(`public.${late}`, 'streaming');
      await settle(second, [a, late]);
      await second.p.stop();
      await expectEqual(second, n, [a, late]);
      // Resumed, not started over: the ranges loaded before the stop keep the first snapshot's LSN.
      const [[snapshots]] = (await second.q(
        `SELECT count(DISTINCT snapshot_lsn) FROM _floe.snapshot_range WHERE source_table = 'public.${late}'`,
      )) as [[bigint]];
      expect(snapshots).toBe(2n);
    } finally {
      await second?.p.stop();
      await destination.close();
      await db.dropSlot(`live${n}`);
    }
  });

  it('resyncs at the next start a table dropped and created again while floe was stopped in the middle of its live snapshot', async () => {
    // The ranges copied before the stop hold the old table's rows; resuming the live snapshot would keep
    // them and skip the new table's rows there.
    const n = ++seq;
    const { a, late, store, destination } = await stopInLiveSnapshot(n, 1);
    let second: Run | undefined;
    try {
      await db.sql(`DROP TABLE ${late}; CREATE TABLE ${late} (id int PRIMARY KEY, v text, pad text DEFAULT repeat('p', 40));
        INSERT INTO ${late} (id, v) SELECT g, 'new' FROM generate_series(1, 2000, 2) g;
        ALTER PUBLICATION pub${n} ADD TABLE ${late}`);
      second = run(n, { store, destination });
      await second.state(`public.${late}`, 'streaming');
      await waitFor('the new table only', async () => {
        const [[all, fresh]] = (await second!.q(`SELECT count(*), count(*) FILTER (WHERE v = 'new') FROM public.${late}`)) as [
          [bigint, bigint],
        ];
        return all === 1000n && fresh === 1000n;
      });
      await settle(second, [a, late]);
      await second.p.stop();
      await expectEqual(second, n, [a, late]);
    } finally {
      await second?.p.stop();
      await destination.close();
      await db.dropSlot(`live${n}`);
    }
  });
});

describe('DuckDB destination during a long snapshot range', () => {
  const table = (name: string, relationId: number): TableSchema => ({
    relationId,
    schema: 'public',
    name,
    replicaIdentity: 'd',
    hasKey: true,
    columns: [
      { name: 'id', typeOid: 23, typeMod: -1, type: mapColumnType(23, -1, () => undefined), isKey: true },
      { name: 'v', typeOid: 25, typeMod: -1, type: mapColumnType(25, -1, () => undefined), isKey: false },
    ],
  });

  for (const journalSnapshot of [false, true]) {
    it(`commits stream batches of other tables while a range is still being read, and the range stays atomic${journalSnapshot ? ' (journalSnapshot)' : ''}`, async () => {
      const d = new DuckDbDestination({ path: ':memory:', journalSnapshot });
      // Where the range's rows land: the target, or with journalSnapshot the journal.
      const landed = journalSnapshot ? `_floe_journal."public.big"` : 'public.big';
      try {
        await d.open('p', 'inc');
        const [big, other] = [table('big', 1), table('other', 2)];
        await d.prepare(big);
        await d.prepare(other);
        let finishRange!: () => void;
        const rangeMayEnd = new Promise<void>((r) => (finishRange = r));
        let chunksSent = 0;
        async function* rows(): AsyncIterable<Cell[][]> {
          for (let c = 0; c < 3; c++) {
            yield Array.from({ length: 30_000 }, (_, i): Cell[] => [String(c * 30_000 + i), 'snap']);
            chunksSent++;
          }
          await rangeMayEnd; // the source is slow: the range is still open
          yield [['-1', 'last']];
        }
        const range = d.writeSnapshotRange({ table: big, rangeIndex: 0, snapshotLsn: 100n }, rows());
        await waitFor('range partly read', () => chunksSent === 3);
        // A stream batch is written and durable while the range is open...
        await d.writeChanges([{ table: other, op: 'i', position: { lsn: 200n, ordinal: 0 }, commitTimeMicros: 1n, cells: ['1', 'x'] }]);
        expect(await d.durableThrough()).toEqual({ lsn: 200n, ordinal: 0 });
        // ... and none of the range's rows are visible before it completes.
        expect(await d.query(`SELECT count(*) FROM ${landed}`)).toEqual([[0n]]);
        finishRange();
        expect(await range).toBe(90_001);
        expect(await d.query(`SELECT count(*), count(DISTINCT id) FROM ${landed}`)).toEqual([[90_001n, 90_001n]]);
        if (journalSnapshot) {
          // Sequence numbers stay unique across the interleaved writes.
          expect(await d.query(`SELECT count(DISTINCT _floe_seq) FROM ${landed}`)).toEqual([[90_001n]]);
          const seqs = await d.query(`SELECT _floe_seq FROM _floe_journal."public.other"`);
          expect(await d.query(`SELECT count(*) FROM ${landed} WHERE _floe_seq = ${seqs[0]![0]}`)).toEqual([[0n]]);
        } else {
          expect(await d.query(`SELECT count(*) FROM _floe_journal."public.big"`)).toEqual([[0n]]);
        }
      } finally {
        await d.close();
      }
    });
  }
});
