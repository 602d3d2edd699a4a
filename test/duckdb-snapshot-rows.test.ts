/**
 * The DuckDB destination loads COPY text rows whose only escapes are NULLs whole (written to a file as COPY
 * sent them, split by DuckDB's CSV reader) and other rows cell by cell. Both must put the same values into the target (and, with
 * `journalSnapshot`, the same text into the journal) as decoded cells do.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { CopyTextParser, type CopyRows } from '../src/postgres/copy-text.js';
import type { Change, TableSchema } from '../src/model.js';
import { memoryLog } from './helpers/pipeline.js';
import { keyedTable, OID } from './helpers/schema.js';

const T = keyedTable('snap', [
  ['id', OID.INT4],
  ['a', OID.TEXT],
  ['b', OID.TEXT],
  ['c', OID.NUMERIC],
]);

/** COPY text of rows with NULLs in every place, escapes, backslash-N text, unicode and empty strings. */
const ROWS = [
  '1\tplain\ttext\t1.5',
  '2\t\\N\ttext\t2',
  '3\tx\t\\N\t\\N',
  '4\t\\N\t\\N\t\\N',
  '5\ttab\\there\tnew\\nline\t3',
  '6\t\\\\N\tnot null\t4',
  '7\tback\\\\slash\t\\N\t5',
  '8\t\tempty before\t6',
  '9\tNaïve ☃ 𝄞\t\\N\t7',
  '10\t\\\\\t\\r\\b\\f\\v\t8',
  '11\t\\Nx\t-\t9',
  '12\tN\t\\\\\\N\t10',
  // What a CSV reader might take for quoting, comments or padding is text in COPY's format.
  '13\t"quoted"\t"\t11',
  '14\t#not a comment\t "  \t12',
  '15\t\t\t13',
];

function copyRows(lines: readonly string[]): CopyRows {
  return new CopyTextParser(4).push(Buffer.from(lines.map((l) => l + '\n').join('')));
}

async function load(
  d: DuckDbDestination,
  table: TableSchema,
  ranges: readonly (readonly string[])[],
  asCells: boolean,
  snapshotLsn = 0x100n,
): Promise<void> {
  for (const [i, lines] of ranges.entries()) {
    if (lines.length === 0) continue;
    const rows = copyRows(lines);
    async function* chunks() {
      yield asCells ? [...rows] : rows;
    }
    await d.writeSnapshotRange({ table, rangeIndex: i, snapshotLsn }, chunks());
  }
}

const journal = `SELECT _floe_lsn, _floe_ordinal, _floe_op, _floe_commit_time, _floe_unchanged, id, a, b, c FROM _floe_journal."public.snap" ORDER BY id::INT, _floe_seq`;

const EXPECTED = [
  ['1', 'plain', 'text', '1.5'],
  ['2', null, 'text', '2'],
  ['3', 'x', null, null],
  ['4', null, null, null],
  ['5', 'tab\there', 'new\nline', '3'],
  ['6', '\\N', 'not null', '4'],
  ['7', 'back\\slash', null, '5'],
  ['8', '', 'empty before', '6'],
  ['9', 'Naïve ☃ 𝄞', null, '7'],
  ['10', '\\', '\r\b\f\v', '8'],
  ['11', 'Nx', '-', '9'],
  ['12', 'N', '\\N', '10'],
  ['13', '"quoted"', '"', '11'],
  ['14', '#not a comment', ' "  ', '12'],
  ['15', '', '', '13'],
];
const target = `SELECT id, a, b, c::VARCHAR, _floe_key, _floe_lsn, _floe_ordinal FROM public.snap ORDER BY id`;

/** Rows loaded whole per range; of ROWS, 1-4, 8, 9 and 13-15 carry no escape but NULLs (`\Nx` is not a NULL). */
function expectWholeRows(log: ReturnType<typeof memoryLog>, perRange = [4, 5]): void {
  const staged = log
    .tail()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string; wholeRows?: number })
    .filter((l) => l.msg === 'snapshot range staged');
  expect(staged.map((l) => l.wholeRows)).toEqual(perRange);
}

/** ROWS loaded in two ranges into two destinations: as COPY rows (whole where they can be), and as decoded cells. */
async function loadBothWays(journalSnapshot: boolean) {
  const log = memoryLog();
  const whole = new DuckDbDestination({ path: ':memory:', log: log.log, journalSnapshot });
  const cells = new DuckDbDestination({ path: ':memory:', journalSnapshot });
  for (const d of [whole, cells]) {
    await d.open('p', 'inc');
    await d.prepare(T);
  }
  await load(whole, T, [ROWS.slice(0, 7), ROWS.slice(7)], false);
  await load(cells, T, [ROWS.slice(0, 7), ROWS.slice(7)], true);
  return { log, whole, cells };
}

describe('DuckDB snapshot rows', () => {
  it('loads whole COPY rows straight into the target exactly as decoded cells, before any merge', async () => {
    const { log, whole, cells } = await loadBothWays(false);
    try {
      const got = await whole.query(target);
      expect(got).toEqual(await cells.query(target));
      expect(got.map((r) => [String(r[0]), ...r.slice(1, 4)])).toEqual(EXPECTED);
      expect(got.map((r) => [r[4], r[5], r[6]])).toEqual(EXPECTED.map((r) => [r[0], 0x100n, -1n]));
      // Written once: the journal holds none of them, and the merge has nothing to do.
      expect(await whole.query(`SELECT count(*) FROM _floe_journal."public.snap"`)).toEqual([[0n]]);
      expectWholeRows(log);
      await whole.completeSnapshot(T);
      expect(await whole.merge()).toEqual({ tables: 0, journalRows: 0 });
      expect(await whole.query(target)).toEqual(got);
    } finally {
      await whole.close();
      await cells.close();
    }
  });

  it('with journalSnapshot, journals whole COPY rows exactly as decoded cells, and merges them alike', async () => {
    const { log, whole, cells } = await loadBothWays(true);
    try {
      const got = await whole.query(journal);
      expect(got).toEqual(await cells.query(journal));
      expect(got.map((r) => r.slice(5))).toEqual(EXPECTED);
      expect(await whole.query(`SELECT count(DISTINCT _floe_seq) FROM _floe_journal."public.snap"`)).toEqual([[15n]]);
      expect(await whole.query(`SELECT count(*) FROM public.snap`)).toEqual([[0n]]);
      expectWholeRows(log);
      for (const d of [whole, cells]) {
        await d.completeSnapshot(T);
        await d.merge();
      }
      expect(await whole.query(target)).toEqual(await cells.query(target));
      expect(await whole.query(`SELECT count(*) FROM public.snap`)).toEqual([[15n]]);
    } finally {
      await whole.close();
      await cells.close();
    }
  });

  it('stages cell by cell what the CSV reader cannot take (empty rows, rows over 1 MiB), reads a whole row of 1 MiB, and leaves no range file behind', async () => {
    const spool = mkdtempSync(join(tmpdir(), 'floe-range-files-'));
    const before = process.env.FLOE_SPOOL_DIR;
    process.env.FLOE_SPOOL_DIR = spool;
    const log = memoryLog();
    const d = new DuckDbDestination({ path: ':memory:', log: log.log });
    // A one-column table: an empty string is an empty COPY line, which a CSV reader skips.
    const one = keyedTable('one', [['v', OID.TEXT]]);
    const keyless = { ...keyedTable('hist', [['v', OID.TEXT]]), hasKey: false, replicaIdentity: 'f' as const };
    const big = 'x'.repeat((1 << 20) + 1);
    // The longest row a range file takes: the CSV reader's buffer (RANGE_FILE_BUFFER_BYTES) must hold it,
    // and the second one crosses from one buffer to the next.
    const longest = 'y'.repeat(1 << 20);
    const modes: number[] = [];
    try {
      await d.open('p', 'inc');
      for (const t of [one, keyless]) {
        await d.prepare(t);
        const rows = new CopyTextParser(1).push(
          Buffer.from(['a', '', 'b', big, longest, longest, '\\N', 'c'].map((l) => l + '\n').join('')),
        );
        async function* chunks() {
          // While the range is read: its file in a directory of floe's own, readable by nobody else.
          const [dir] = readdirSync(spool).filter((f) => f.startsWith('floe-duckdb-load-'));
          modes.push(
            statSync(join(spool, dir!)).mode & 0o777,
            statSync(join(spool, dir!, readdirSync(join(spool, dir!))[0]!)).mode & 0o777,
          );
          yield rows;
        }
        expect(await d.writeSnapshotRange({ table: t, rangeIndex: 0, snapshotLsn: 0x100n }, chunks())).toBe(8);
      }
      for (const t of ['public.one', '_floe_journal."public.hist"']) {
        expect(
          await d.query(
            `SELECT count(*), count(v), count(*) FILTER (WHERE v = ''), max(length(v)), count(*) FILTER (WHERE v = repeat('y', ${longest.length})) FROM ${t}`,
          ),
        ).toEqual([[8n, 7n, 1n, BigInt(big.length), 2n]]);
      }
      expectWholeRows(log, [6, 6]);
      expect(modes).toEqual([0o700, 0o600, 0o700, 0o600]);
      // Once no range is being loaded, the files and their directory are gone.
      expect(readdirSync(spool).filter((f) => f.startsWith('floe-duckdb-load-'))).toEqual([]);
    } finally {
      await d.close();
      if (before === undefined) delete process.env.FLOE_SPOOL_DIR;
      else process.env.FLOE_SPOOL_DIR = before;
      rmSync(spool, { recursive: true, force: true });
    }
  });

  it('says where it cannot make the directory for range files, and loads nothing of that range', async () => {
    const work = mkdtempSync(join(tmpdir(), 'floe-range-fail-'));
    const before = process.env.FLOE_SPOOL_DIR;
    const d = new DuckDbDestination({ path: join(work, 'w.duckdb') });
    const range = (rangeIndex: number, lines: string[]) => {
      const rows = copyRows(lines);
      return d.writeSnapshotRange(
        { table: T, rangeIndex, snapshotLsn: 0x100n },
        (async function* () {
          yield rows;
        })(),
      );
    };
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      process.env.FLOE_SPOOL_DIR = join(work, 'missing');
      await expect(range(0, ROWS.slice(0, 2))).rejects.toThrow(/cannot create a directory for snapshot ranges in .*missing.*ENOENT/);
      process.env.FLOE_SPOOL_DIR = join(work);
      expect(await range(1, ROWS.slice(0, 2))).toBe(2);
      expect(await d.query(`SELECT id FROM public.snap ORDER BY id`)).toEqual([[1], [2]]);
    } finally {
      await d.close();
      if (before === undefined) delete process.env.FLOE_SPOOL_DIR;
      else process.env.FLOE_SPOOL_DIR = before;
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('loads a range that starts while the last other range finishes: the directory for range files stays until both are done', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await load(d, T, [ROWS.slice(0, 2)], false);
      // Range 0 again (a resumed snapshot's range already loaded): it only drains its rows, held here.
      let draining = false;
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const again = d.writeSnapshotRange(
        { table: T, rangeIndex: 0, snapshotLsn: 0x100n },
        (async function* () {
          draining = true;
          await held;
          yield copyRows(ROWS.slice(0, 2));
        })(),
      );
      while (!draining) await new Promise((r) => setImmediate(r));
      // Range 1 starts; range 0 finishes while range 1 still connects. It used to remove the directory range 1
      // was about to write its file into, and range 1 failed ("Cannot read properties of undefined").
      const next = load(d, T, [[], ROWS.slice(2, 4)], false);
      release();
      expect(await again).toBe(0);
      await next;
      expect(await d.query(`SELECT id FROM public.snap ORDER BY id`)).toEqual([[1], [2], [3], [4]]);
    } finally {
      await d.close();
    }
  });

  it('moves ranges into a target two at a time once their copies are over: each row once, a marker per range, and a counter left whole', async () => {
    // Ranges' moves overlap once no range is being copied. Each writes its own keys and marker; neither may
    // write the sequence counter (two transactions updating one row conflict), which batches go on using.
    const [N, R] = [15_000, 4];
    const lines = (r: number) =>
      Array.from({ length: N }, (_, i) => {
        const id = r * N + i + 1;
        return i % 500 === 0 ? `${id}\ttab\\there\t\\N\t${id}` : `${id}\tplain ${id}\t\\N\t${id}.5`;
      });
    const change = (id: number, lsn: bigint): Change => ({
      table: T,
      op: 'i',
      position: { lsn, ordinal: 0 },
      commitTimeMicros: 0n,
      cells: [String(id), 'streamed', null, '1'],
    });
    const work = mkdtempSync(join(tmpdir(), 'floe-range-moves-'));
    const path = join(work, 'w.duckdb');
    let d = new DuckDbDestination({ path });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      const ranges = Array.from({ length: R }, (_, r) => {
        const rows = copyRows(lines(r));
        return d.writeSnapshotRange(
          { table: T, rangeIndex: r, snapshotLsn: 0x100n },
          (async function* () {
            yield rows;
          })(),
        );
      });
      // A batch of changes asked for while the ranges load runs alone, after the moves it follows.
      const batch = d.writeChanges([change(R * N + 1, 0x200n)]);
      expect(await Promise.all(ranges)).toEqual(Array(R).fill(N));
      await batch;
      const total = R * N;
      expect(
        await d.query(`SELECT count(*), count(DISTINCT id), sum(id), count(*) FILTER (WHERE a = 'tab\there') FROM public.snap`),
      ).toEqual([[BigInt(total), BigInt(total), BigInt((total * (total + 1)) / 2), BigInt(R * (N / 500))]]);
      expect(await d.query(`SELECT range_index, rows FROM _floe.snapshot_range ORDER BY range_index`)).toEqual(
        Array.from({ length: R }, (_, r) => [r, BigInt(N)]),
      );
      await d.close();
      d = new DuckDbDestination({ path });
      await d.open('p', 'inc');
      await d.prepare(T);
      await d.writeChanges([change(R * N + 2, 0x300n)]);
      expect(await d.query(`SELECT count(*), count(DISTINCT _floe_seq) FROM _floe_journal."public.snap"`)).toEqual([[2n, 2n]]);
    } finally {
      await d.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('checkpoints on close with the event loop running, and the rows are in the database file after', async () => {
    // After a large snapshot this checkpoint takes seconds; in closeSync it stopped every timer, health
    // check and lease renewal of the process meanwhile.
    const work = mkdtempSync(join(tmpdir(), 'floe-close-checkpoint-'));
    const path = join(work, 'w.duckdb');
    let d = new DuckDbDestination({ path });
    try {
      await d.open('p', 'inc');
      await d.prepare(T);
      await load(d, T, [ROWS.slice(0, 8), ROWS.slice(8)], false);
      expect(statSync(`${path}.wal`).size).toBeGreaterThan(0);
      let closed = false;
      let turnedWhileClosing = false;
      setImmediate(() => (turnedWhileClosing = !closed));
      await d.close().then(() => (closed = true));
      expect(turnedWhileClosing).toBe(true);
      expect(existsSync(`${path}.wal`)).toBe(false);
      d = new DuckDbDestination({ path });
      await d.open('p', 'inc');
      expect(await d.query(`SELECT count(*) FROM public.snap`)).toEqual([[BigInt(ROWS.length)]]);
    } finally {
      await d.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('loads a range file of many megabytes under a small memory_limit', async () => {
    // DuckDB's CSV reader took its default 32 MB buffer from memory_limit: at 40MB a range of a dozen columns
    // ran out of memory, and at the default 64MB any range whose text passed 32 MB, on each retry alike.
    const N = 60_000;
    const wide = keyedTable('wide', [
      ['id', OID.INT8],
      ...Array.from({ length: 11 }, (_, k) => [`c${k}`, k % 3 === 0 ? OID.TIMESTAMPTZ : OID.TEXT] as [string, number]),
    ]);
    const md5 = (v: number) => createHash('md5').update(String(v)).digest('hex');
    const line = (i: number) =>
      [
        i,
        ...Array.from({ length: 11 }, (_, k) => (k % 3 === 0 ? `2024-01-0${1 + (k % 9)} 10:00:0${i % 10}.${i % 997}+00` : md5(i * 11 + k))),
      ].join('\t');
    const work = mkdtempSync(join(tmpdir(), 'floe-range-memory-'));
    const d = new DuckDbDestination({ path: join(work, 'w.duckdb'), memoryLimit: '40MB' });
    try {
      await d.open('p', 'inc');
      await d.prepare(wide);
      const text = Buffer.from(Array.from({ length: N }, (_, i) => line(i) + '\n').join(''));
      expect(text.length).toBeGreaterThan(16_000_000);
      const rows = new CopyTextParser(12).push(text);
      await d.writeSnapshotRange(
        { table: wide, rangeIndex: 0, snapshotLsn: 0x100n },
        (async function* () {
          yield rows;
        })(),
      );
      expect(await d.query(`SELECT count(*), count(DISTINCT c1), max(id) FROM public.wide`)).toEqual([
        [BigInt(N), BigInt(N), BigInt(N - 1)],
      ]);
    } finally {
      await d.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  for (const journalSnapshot of [false, true]) {
    it(`keeps the latest image of a key a resumed snapshot loaded twice, and refuses a row with the wrong number of fields${journalSnapshot ? ' (journalSnapshot)' : ''}`, async () => {
      const d = new DuckDbDestination({ path: ':memory:', journalSnapshot });
      try {
        await d.open('p', 'inc');
        await d.prepare(T);
        // A resumed snapshot reads its ranges under several snapshots: a row that moved between ranges comes
        // twice, and the later snapshot's image wins, whichever range is loaded first.
        await load(d, T, [['1\tfirst\t\\N\t1', '2\ttwo\t\\N\t2']], false, 0x100n);
        await load(d, T, [[], ['1\tsecond\t\\N\t1']], false, 0x200n);
        await load(d, T, [[], [], ['3\tthird\t\\N\t3', '2\tolder\t\\N\t2']], false, 0x80n);
        await d.completeSnapshot(T);
        await d.merge();
        expect(await d.query(`SELECT id, a, _floe_lsn FROM public.snap ORDER BY id`)).toEqual([
          [1, 'second', 0x200n],
          [2, 'two', 0x100n],
          [3, 'third', 0x80n],
        ]);
        const short = copyRows(['3\tthree\t\\N']);
        async function* chunks() {
          yield short;
        }
        await expect(d.writeSnapshotRange({ table: T, rangeIndex: 5, snapshotLsn: 0x100n }, chunks())).rejects.toThrow(
          /snapshot range 5 of public\.snap: .*COPY row has 3 fields, expected 4/,
        );
        // The refused range left nothing behind.
        expect(await d.query(`SELECT count(*) FROM public.snap`)).toEqual([[3n]]);
      } finally {
        await d.close();
      }
    });
  }
});
