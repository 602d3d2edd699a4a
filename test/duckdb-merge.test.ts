/**
 * The DuckDB destination on its own (no PostgreSQL): the first merge after a snapshot goes straight
 * into the empty target, later merges take the general path, and the memory knobs reach DuckDB.
 */
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { memoryLog } from './helpers/pipeline.js';
import type { Cell, Change, TableSchema } from '../src/model.js';
import { keyedTable, OID } from './helpers/schema.js';

const T = keyedTable('orders', [
  ['id', OID.INT4],
  ['note', OID.TEXT],
  ['tags', OID.TEXT_ARRAY],
  ['amount', OID.NUMERIC],
]);
async function* chunks(rows: Cell[][]): AsyncIterable<Cell[][]> {
  for (let i = 0; i < rows.length; i += 1000) yield rows.slice(i, i + 1000);
}

/** An update of `table` at position (lsn, 0). */
const updateAt = (table: TableSchema, lsn: bigint, cells: Cell[]): Change => ({
  table,
  op: 'u',
  position: { lsn, ordinal: 0 },
  commitTimeMicros: 0n,
  cells,
});

const row = (i: number): Cell[] => [String(i), i % 7 === 0 ? null : `note ${i}`, `{a,"b c",${i}}`, `${i}.25`];

describe('DuckDB destination merges', () => {
  it('loads a keyed snapshot straight into the target, then merges stream changes over it', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.writeSnapshotRange({ table: T, rangeIndex: 0, snapshotLsn: 0x100n }, chunks([...Array(2500).keys()].map((i) => row(i + 1))));
      await d.writeSnapshotRange(
        { table: T, rangeIndex: 1, snapshotLsn: 0x100n },
        chunks([...Array(1500).keys()].map((i) => row(i + 2501))),
      );
      // Before any merge: typed, at the snapshot's position, arrays from their JSON form, and not journaled.
      expect(await d.query(`SELECT count(*), count(note), sum(id) FROM public.orders`)).toEqual([[4000n, 3429n, 8002000n]]);
      expect(
        await d.query(`SELECT note, tags, amount::VARCHAR, _floe_key, _floe_lsn, _floe_ordinal FROM public.orders WHERE id = 42`),
      ).toEqual([[null, ['a', 'b c', '42'], '42.25', '42', 0x100n, -1n]]);
      expect(await d.query(`SELECT count(*) FROM _floe_journal."public.orders"`)).toEqual([[0n]]);
      // Changes streamed during the snapshot wait in the journal until the snapshot is complete (2b). One from
      // before the snapshot (a table added later journals its changes before its snapshot) never overwrites
      // the snapshot's row.
      await d.writeChanges([
        { table: T, op: 'u', position: { lsn: 0x80n, ordinal: 0 }, commitTimeMicros: 0n, cells: ['5', 'stale', '{}', '0'] },
        { table: T, op: 'd', position: { lsn: 0x180n, ordinal: 0 }, commitTimeMicros: 0n, cells: ['7', null, null, null] },
      ]);
      expect(await d.merge()).toEqual({ tables: 0, journalRows: 0 });
      expect(await d.query(`SELECT count(*) FROM public.orders WHERE id = 7`)).toEqual([[1n]]);
      await d.completeSnapshot(T);
      await d.writeChanges([
        { table: T, op: 'u', position: { lsn: 0x200n, ordinal: 0 }, commitTimeMicros: 0n, cells: ['1', 'updated', '{}', '9.50'] },
        { table: T, op: 'u', position: { lsn: 0x200n, ordinal: 1 }, commitTimeMicros: 0n, cells: ['3', 'after', '{}', '3'] },
      ]);
      await d.writeChanges([
        { table: T, op: 'u', position: { lsn: 0x201n, ordinal: 0 }, commitTimeMicros: 0n, cells: ['3', 'latest', '{}', '3'] },
      ]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 5 });
      expect(await d.query(`SELECT id, note, amount::VARCHAR, _floe_lsn FROM public.orders WHERE id IN (1, 3, 5, 7) ORDER BY id`)).toEqual([
        [1, 'updated', '9.50', 0x200n],
        [3, 'latest', '3', 0x201n],
        [5, 'note 5', '5.25', 0x100n],
      ]);
      expect(await d.query(`SELECT count(*) FROM public.orders`)).toEqual([[3999n]]);
    } finally {
      await d.close();
    }
  });

  it('with journalSnapshot, journals a snapshot and loads it into the empty target in one statement, then merges stream changes over it', async () => {
    const d = new DuckDbDestination({ path: ':memory:', journalSnapshot: true });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      const lsn = 0x100n;
      expect(
        await d.writeSnapshotRange({ table: T, rangeIndex: 0, snapshotLsn: lsn }, chunks([...Array(2500).keys()].map((i) => row(i + 1)))),
      ).toBe(2500);
      expect(
        await d.writeSnapshotRange(
          { table: T, rangeIndex: 1, snapshotLsn: lsn },
          chunks([...Array(1500).keys()].map((i) => row(i + 2501))),
        ),
      ).toBe(1500);
      await d.completeSnapshot(T);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 4000 });
      // The general path builds its window in a temp table; the snapshot merge does not need one.
      expect(await d.query(`SELECT count(*) FROM duckdb_tables() WHERE table_name = '_floe_window'`)).toEqual([[0n]]);
      expect(await d.query(`SELECT count(*), count(note), sum(id) FROM public.orders`)).toEqual([[4000n, 3429n, 8002000n]]);
      expect(await d.query(`SELECT note, tags, amount::VARCHAR, _floe_lsn, _floe_ordinal FROM public.orders WHERE id = 42`)).toEqual([
        [null, ['a', 'b c', '42'], '42.25', 0x100n, -1n],
      ]);

      // Stream changes after the snapshot: the target is no longer empty, so the general merge runs.
      const pos = (ordinal: number) => ({ lsn: 0x200n, ordinal });
      await d.writeChanges([
        { table: T, op: 'u', position: pos(0), commitTimeMicros: 0n, cells: ['1', 'updated', '{}', '9.50'] },
        { table: T, op: 'd', position: pos(1), commitTimeMicros: 0n, cells: ['2', null, null, null] },
        { table: T, op: 'i', position: pos(2), commitTimeMicros: 0n, cells: ['5000', 'new', '{x}', '1'] },
      ]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 3 });
      expect(await d.query(`SELECT id, note, amount::VARCHAR FROM public.orders WHERE id IN (1, 2, 5000) ORDER BY id`)).toEqual([
        [1, 'updated', '9.50'],
        [5000, 'new', '1'],
      ]);
      expect(await d.query(`SELECT count(*) FROM public.orders`)).toEqual([[4000n]]);
    } finally {
      await d.close();
    }
  });

  it('merges a window of keys new to the target in one statement; a repeated key or a key the target holds takes the general path', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    const windowTable = async () => (await d.query(`SELECT count(*) FROM duckdb_tables() WHERE table_name = '_floe_window'`))[0]![0];
    const change = (op: Change['op'], lsn: bigint, ordinal: number, cells: Cell[]): Change => ({
      table: T,
      op,
      position: { lsn, ordinal },
      commitTimeMicros: 0n,
      cells,
    });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.completeSnapshot(T);
      // Stream inserts into an empty target, and a delete of a key it never held: one INSERT … SELECT.
      await d.writeChanges([
        ...[...Array(3000).keys()].map((i) => change('i', 0x100n + BigInt(i >> 10), i & 1023, row(i + 1))),
        change('d', 0x200n, 0, ['9999', null, null, null]),
      ]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 3001 });
      expect(await windowTable()).toBe(0n);
      expect(await d.query(`SELECT count(*), count(note), sum(id) FROM public.orders`)).toEqual([[3000n, 2572n, 4501500n]]);
      expect(
        await d.query(
          `SELECT note, tags, amount::VARCHAR, _floe_key, _floe_lsn, _floe_ordinal FROM public.orders WHERE id IN (42, 1500) ORDER BY id`,
        ),
      ).toEqual([
        [null, ['a', 'b c', '42'], '42.25', '42', 0x100n, 41n],
        ['note 1500', ['a', 'b c', '1500'], '1500.25', '1500', 0x101n, 475n],
      ]);

      // A key new to the target but changed twice in the window: only its latest change counts.
      await d.writeChanges([change('i', 0x300n, 0, ['5000', 'first', '{}', '1']), change('u', 0x300n, 1, ['5000', 'second', '{}', '2'])]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 2 });
      expect(await windowTable()).toBe(1n);
      expect(await d.query(`SELECT note, amount::VARCHAR FROM public.orders WHERE id = 5000`)).toEqual([['second', '2']]);

      // Each key once, but one the target holds: it is replaced, not added beside the old row.
      await d.writeChanges([change('u', 0x400n, 0, ['1', 'updated', '{}', '9.50']), change('i', 0x400n, 1, ['6000', 'new', '{}', '3'])]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 2 });
      expect(await d.query(`SELECT id, note FROM public.orders WHERE id IN (1, 6000) ORDER BY id`)).toEqual([
        [1, 'updated'],
        [6000, 'new'],
      ]);
      expect(await d.query(`SELECT count(*) FROM public.orders`)).toEqual([[3002n]]);
    } finally {
      await d.close();
    }
  });

  it('with soft deletes, a delete of a key the target never held still leaves its deleted row', async () => {
    const d = new DuckDbDestination({ path: ':memory:', deleteMode: 'soft' });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.completeSnapshot(T);
      await d.writeChanges([
        { table: T, op: 'i', position: { lsn: 0x100n, ordinal: 0 }, commitTimeMicros: 0n, cells: row(1) },
        { table: T, op: 'd', position: { lsn: 0x100n, ordinal: 1 }, commitTimeMicros: 0n, cells: ['9999', null, null, null] },
      ]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 2 });
      expect(await d.query(`SELECT id, note, _floe_deleted FROM public.orders ORDER BY id`)).toEqual([
        [1, 'note 1', false],
        [9999, null, true],
      ]);
    } finally {
      await d.close();
    }
  });

  it('merges a window larger than its memory limit: in chunks that never split a transaction', async () => {
    // 5 s of a busy source is a window of hundreds of thousands of rows; one merge of it ran out of
    // DuckDB's memory_limit ("failed to pin block") and failed again at every retry: the pipeline was wedged.
    const dir = mkdtempSync(join(tmpdir(), 'floe-chunks-'));
    const log = memoryLog();
    const d = new DuckDbDestination({ path: join(dir, 'w.duckdb'), memoryLimit: '24MB', log: log.log });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.completeSnapshot(T);
      const note = 'x'.repeat(300);
      const txns = 1000;
      const perTxn = 500;
      for (let t = 0; t < txns; t++) {
        const lsn = 0x1000n + BigInt(t);
        // Keys repeat every 800 transactions: the last 200 update keys the first 200 inserted.
        const base = (t % 800) * perTxn;
        await d.writeChanges(
          Array.from({ length: perTxn }, (_, i) => ({
            table: T,
            op: 'i' as const,
            position: { lsn, ordinal: i },
            commitTimeMicros: 0n,
            cells: [String(base + i), `${note}${t}`, '{}', String(t)],
          })),
        );
      }
      expect(await d.merge()).toEqual({ tables: 1, journalRows: txns * perTxn });
      expect(await d.query(`SELECT count(*), min(amount), max(amount) FROM public.orders`)).toEqual([[400_000n, '200', '999']]);
      // Each halving is reported (the operator sees memory_limit is tight), then the merge as a whole.
      const lines = log
        .tail()
        .split('\n')
        .map((l) => JSON.parse(l) as { msg: string; chunkRows?: number; journalRows?: number; memoryLimit?: string });
      const halvings = lines.filter((l) => l.msg === 'DuckDB merge ran out of memory_limit; merging in smaller chunks');
      expect(halvings[0]).toMatchObject({ chunkRows: 40_000, memoryLimit: '24MB' });
      expect(lines.find((l) => l.msg === 'merged')).toMatchObject({ journalRows: txns * perTxn });
    } finally {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);

  it('keeps the latest change of a key that repeats in a window, and takes a window of new keys as it is', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.completeSnapshot(T);
      const at = (lsn: bigint, ordinal: number, op: 'i' | 'u', id: number, note: string): Change => ({
        table: T,
        op,
        position: { lsn, ordinal },
        commitTimeMicros: 0n,
        cells: [String(id), note, '{}', '1'],
      });
      // Keys once each (the statement without the per-key window), into an empty target, then into a full one.
      await d.writeChanges([at(0x10n, 0, 'i', 1, 'one'), at(0x10n, 1, 'i', 2, 'two')]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 2 });
      await d.writeChanges([at(0x11n, 0, 'i', 3, 'three')]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 1 });
      // One key three times in a window: only its latest change may reach the target.
      await d.writeChanges([at(0x12n, 0, 'u', 1, 'one b'), at(0x12n, 1, 'i', 4, 'four'), at(0x13n, 0, 'u', 1, 'one c')]);
      await d.writeChanges([updateAt(T, 0x14n, ['1', 'one d', '{}', '1'])]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 4 });
      expect(await d.query('SELECT id, note FROM public.orders ORDER BY id')).toEqual([
        [1, 'one d'],
        [2, 'two'],
        [3, 'three'],
        [4, 'four'],
      ]);
    } finally {
      await d.close();
    }
  });

  it('a chunk boundary never splits a transaction: a key change keeps its unchanged TOAST value', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.completeSnapshot(T);
      const change = (lsn: bigint, ordinal: number, op: 'i' | 'd', cells: Cell[]) => ({
        table: T,
        op,
        position: { lsn, ordinal },
        commitTimeMicros: 0n,
        cells,
      });
      await d.writeChanges([change(0x10n, 0, 'i', ['1', 'the body', '{}', '1'])]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 1 });
      // 79,999 inserts, then a transaction moving key 1 to 2 with the note unchanged: the 80,000th row
      // of the window (a chunk's size) is that transaction's delete, its insert the next one.
      const filler = Array.from({ length: 79_999 }, (_, i) => change(0x20n, i, 'i', [String(10 + i), 'f', '{}', '0']));
      for (let i = 0; i < filler.length; i += 10_000) await d.writeChanges(filler.slice(i, i + 10_000));
      await d.writeChanges([change(0x30n, 0, 'd', ['1', null, null, null]), change(0x30n, 1, 'i', ['2', undefined, '{}', '2'])]);
      expect(await d.merge()).toEqual({ tables: 1, journalRows: 80_001 });
      expect(await d.query(`SELECT id, note FROM public.orders WHERE id IN (1, 2)`)).toEqual([[2, 'the body']]);
    } finally {
      await d.close();
    }
  }, 120_000);

  it("merges in the target column's own type when the recorded type disagrees (a type change cut short by a crash)", async () => {
    // A column retyped at the source is altered in the target, and the new type is recorded. A kill -9
    // between the two (an older floe ran them in separate transactions) left a VARCHAR column recorded as
    // INTEGER; the restart then replays changes of the old type, and every merge failed with "Cannot mix
    // values of type INTEGER and VARCHAR in CASE expression": the pipeline retried forever.
    const dir = mkdtempSync(join(tmpdir(), 'floe-retype-'));
    const path = join(dir, 'w.duckdb');
    const asInt = keyedTable('evo', [
      ['id', OID.INT4],
      ['a', OID.INT4],
      ['b', OID.TEXT],
    ]);
    const asText = keyedTable('evo', [
      ['id', OID.INT4],
      ['a', OID.TEXT],
      ['b', OID.TEXT],
    ]);
    let d = new DuckDbDestination({ path });
    try {
      await d.open('p', 'inc');
      await d.prepare(asInt);
      await d.completeSnapshot(asInt);
      await d.writeChanges([updateAt(asInt, 0x10n, ['1', '5', 'x']), updateAt(asInt, 0x11n, ['2', '6', 'y'])]);
      await d.merge();
      await d.prepare(asText);
      // The state the crash left: the target column is VARCHAR, the record still says INTEGER.
      await d.query(`UPDATE _floe.source_table SET target_types = ['INTEGER', 'INTEGER', 'VARCHAR']`);
      await d.close();

      d = new DuckDbDestination({ path });
      await d.open('p', 'inc');
      // The restart replays from before the type change: the old relation and a change of the old type.
      await d.prepare(asInt);
      await d.writeChanges([updateAt(asInt, 0x12n, ['1', '7', 'x2'])]);
      await d.merge();
      await d.prepare(asText);
      await d.writeChanges([updateAt(asText, 0x20n, ['2', 'not a number', 'y']), updateAt(asText, 0x21n, ['1', 'seven', 'x3'])]);
      await d.merge();
      expect(await d.query(`SELECT id, a, b FROM public.evo ORDER BY id`)).toEqual([
        [1, 'seven', 'x3'],
        [2, 'not a number', 'y'],
      ]);
      expect(await d.query(`SELECT data_type FROM information_schema.columns WHERE table_name = 'evo' AND column_name = 'a'`)).toEqual([
        ['VARCHAR'],
      ]);
      expect(await d.query(`SELECT target_types FROM _floe.source_table`)).toEqual([[['INTEGER', 'VARCHAR', 'VARCHAR']]]);
    } finally {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps merging after a typed column is dropped, and after a restart replays changes from before it was added', async () => {
    // A column not in the current relation (dropped at the source, or not added yet in a replay after a
    // kill -9) was read as the journal's text: against a typed target column every merge failed to bind
    // ("Cannot mix values of type VARCHAR and INTEGER in CASE expression") and the pipeline retried forever.
    const dir = mkdtempSync(join(tmpdir(), 'floe-dropped-'));
    const path = join(dir, 'w.duckdb');
    const before = keyedTable('k', [
      ['id', OID.INT4],
      ['v', OID.INT4],
    ]);
    const after = keyedTable('k', [
      ['id', OID.INT4],
      ['v', OID.INT4],
      ['n', OID.INT4],
      ['b', OID.BYTEA],
    ]);
    let d = new DuckDbDestination({ path });
    try {
      await d.open('p', 'inc');
      await d.prepare(before);
      await d.completeSnapshot(before);
      await d.writeChanges([updateAt(before, 0x10n, ['1', '1']), updateAt(before, 0x11n, ['2', '2'])]);
      await d.merge();
      await d.prepare(after);
      await d.writeChanges([updateAt(after, 0x20n, ['1', '10', '100', '\\x0102'])]);
      await d.close();

      // kill -9 before the merge; the restart replays the relation from before the columns were added,
      // then a change made before them, while the window holds the later row with their values.
      d = new DuckDbDestination({ path });
      await d.open('p', 'inc');
      await d.prepare(before);
      await d.writeChanges([updateAt(before, 0x21n, ['2', '20'])]);
      await d.merge();
      expect(await d.query(`SELECT id, v, n, hex(b) FROM public.k ORDER BY id`)).toEqual([
        [1, 10, 100, '0102'],
        [2, 20, null, null],
      ]);
      // Dropped at the source: the columns stay and are no longer filled; merges go on.
      await d.prepare(after);
      await d.writeChanges([updateAt(after, 0x30n, ['2', '21', '200', '\\xff'])]);
      await d.prepare(before);
      await d.writeChanges([updateAt(before, 0x31n, ['1', '11'])]);
      await d.merge();
      expect(await d.query(`SELECT id, v, n, hex(b) FROM public.k ORDER BY id`)).toEqual([
        [1, 11, null, null],
        [2, 21, 200, 'FF'],
      ]);
    } finally {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('loads DuckDB with one allocator arena unless the operator configured its jemalloc', () => {
    // jemalloc reads DUCKDB_JE_MALLOC_CONF once, at DuckDB's first allocation: a fresh process shows it.
    const script = `const { DuckDbDestination } = await import('./src/destination/duckdb/duckdb-destination.ts');
      const d = new DuckDbDestination({ path: ':memory:' });
      await d.open('p', 'inc');
      await d.close();
      console.log(JSON.stringify(process.env.DUCKDB_JE_MALLOC_CONF));`;
    const run = (conf?: string) => {
      const env = { ...process.env };
      delete env.DUCKDB_JE_MALLOC_CONF;
      if (conf !== undefined) env.DUCKDB_JE_MALLOC_CONF = conf;
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim()) as string;
    };
    expect(run()).toBe('narenas:1');
    expect(run('narenas:4,dirty_decay_ms:0')).toBe('narenas:4,dirty_decay_ms:0');
  });

  it('caps DuckDB at 48MB and one thread and checkpoints at 64MB of log by default, or what the options say', async () => {
    const settings = `SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('preserve_insertion_order'), current_setting('checkpoint_threshold')`;
    const d = new DuckDbDestination({ path: ':memory:' });
    const e = new DuckDbDestination({ path: ':memory:', memoryLimit: '256MB', threads: 2, checkpointThreshold: '1GB' });
    try {
      await d.open('p', 'inc');
      await e.open('p', 'inc');
      const [[mem, threads, order, checkpoint]] = (await d.query(settings)) as [[string, bigint, boolean, string]];
      expect([mem, Number(threads), order, checkpoint]).toEqual([
        // DuckDB reports 48MB (decimal) as 45.7 MiB.
        expect.stringMatching(/^45\.7 MiB$/),
        1,
        false,
        expect.stringMatching(/^6[0-9](\.\d+)? MiB$/),
      ]);
      const [[mem2, threads2, , checkpoint2]] = (await e.query(settings)) as [[string, bigint, boolean, string]];
      expect([mem2, Number(threads2), checkpoint2]).toEqual([
        expect.stringMatching(/^2[0-9][0-9](\.\d+)? MiB$/),
        2,
        expect.stringMatching(/^9[0-9][0-9](\.\d+)? MiB$/),
      ]);
    } finally {
      await d.close();
      await e.close();
    }
  });
});
