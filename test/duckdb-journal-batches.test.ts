/**
 * Streamed changes reach the DuckDB journal through batch files read by DuckDB's CSV reader, with the
 * appender for what a file cannot hold, and (with the runtime's watcher) commit in the background, one
 * batch behind the stream. No PostgreSQL: the changes are built here, Insert messages included.
 */
import { describe, it, expect } from 'vitest';
import { readdirSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { insertTupleBytes } from '../src/postgres/pgoutput.js';
import { TupleChange, type Cell, type Change, type Position, type TableSchema } from '../src/model.js';
import { keyedTable, OID } from './helpers/schema.js';

const T = keyedTable('orders', [
  ['id', OID.INT4],
  ['note', OID.TEXT],
  ['tags', OID.TEXT_ARRAY],
]);
const U = keyedTable('users', [
  ['id', OID.INT4],
  ['name', OID.TEXT],
]);

/** pgoutput's Insert message with these text/NULL values. */
function insertMessage(values: (string | Buffer | null)[]): Buffer {
  const head = Buffer.alloc(8);
  head[0] = 0x49; // I
  head[5] = 0x4e; // N
  head.writeUInt16BE(values.length, 6);
  const parts = [head];
  for (const v of values) {
    if (v === null) {
      parts.push(Buffer.from('n'));
      continue;
    }
    const bytes = Buffer.from(v);
    const h = Buffer.alloc(5);
    h[0] = 0x74;
    h.writeUInt32BE(bytes.length, 1);
    parts.push(h, bytes);
  }
  return Buffer.concat(parts);
}

const at = (lsn: number, ordinal: number): Position => ({ lsn: BigInt(lsn), ordinal });
const COMMIT_TIME = 1_767_323_045_123_456n; // 2026-01-02T03:04:05.123456Z

/** A streamed insert kept as its message's bytes, as the decoder gives it. */
function streamedInsert(table: TableSchema, position: Position, values: (string | Buffer | null)[]): Change {
  return new TupleChange(table, 'i', position, COMMIT_TIME, insertTupleBytes(insertMessage(values))!.tuple);
}

const change = (table: TableSchema, op: Change['op'], position: Position, cells: Cell[]): Change => ({
  table,
  op,
  position,
  commitTimeMicros: COMMIT_TIME,
  cells,
});

/** A watcher that records what it hears, and resolves `heard(p)` once it heard `p` durable. */
function recordingWatcher() {
  const durable: Position[] = [];
  const failed: unknown[] = [];
  const waiting: [Position, () => void][] = [];
  const watcher = {
    durable: (p: Position) => {
      durable.push(p);
      for (const [want, resolve] of waiting) if (p.lsn === want.lsn && p.ordinal === want.ordinal) resolve();
    },
    failed: (err: unknown) => failed.push(err),
  };
  const heard = (p: Position) => new Promise<void>((resolve) => waiting.push([p, resolve]));
  return { watcher, durable, failed, heard };
}

/** Opens the destination for pipeline 'p' with both tables prepared. */
async function openWithTables(d: DuckDbDestination): Promise<void> {
  await d.open('p', 'inc');
  await d.prepare(T);
  await d.prepare(U);
}

const JOURNAL = `SELECT _floe_seq, _floe_lsn, _floe_ordinal, _floe_op, epoch_us(_floe_commit_time), _floe_unchanged, id, note, tags
  FROM _floe_journal."public.orders" ORDER BY _floe_seq`;

describe('DuckDB journal batches', () => {
  it('journals every kind of value exactly, in change order, whether a file or the appender holds it', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await openWithTables(d);
      // Streamed inserts of a table without arrays: copied from their message's bytes where a file holds them.
      const users: [Change, unknown[]][] = [];
      const user = (ordinal: number, name: string | Buffer | null, stored: string | null) => {
        const ch = streamedInsert(U, at(9, ordinal), [String(ordinal), name]);
        users.push([ch, [9n, BigInt(ordinal), 'i', COMMIT_TIME, null, String(ordinal), stored]]);
      };
      user(0, 'plain', 'plain');
      user(1, '', '');
      user(2, null, null);
      user(3, 'tab\there', 'tab\there');
      user(4, 'Grüße 日本 😀 "q"', 'Grüße 日本 😀 "q"');
      user(5, 'back\\slash \\N', 'back\\slash \\N');
      user(6, 'line\nbreak\r', 'line\nbreak\r');
      user(7, Buffer.from([0x61, 0xff, 0x62]), 'a\ufffdb'); // not UTF-8: the decoder's replacement character
      user(8, '\\N', '\\N');
      // Changes with decoded cells, of a table with an array column (journaled as JSON).
      const values: [Change, unknown[]][] = [];
      const add = (ch: Change, id: string | null, note: string | null, tags: string | null, unchanged: string[] | null = null) =>
        values.push([ch, [BigInt(ch.position.lsn), BigInt(ch.position.ordinal), ch.op, COMMIT_TIME, unchanged, id, note, tags]]);
      add(streamedInsert(T, at(10, 0), ['1', 'plain', null]), '1', 'plain', null);
      add(streamedInsert(T, at(10, 1), ['2', '', '{}']), '2', '', '[]');
      add(streamedInsert(T, at(10, 2), ['3', 'tab\there', null]), '3', 'tab\there', null);
      add(change(T, 'u', at(11, 0), ['1', 'updated', '{a,"b c"}']), '1', 'updated', '["a","b c"]');
      add(change(T, 'u', at(11, 1), ['2', undefined as unknown as Cell, null]), '2', null, null, ['note']);
      add(change(T, 'd', at(11, 2), ['3', null, null]), '3', null, null);
      add(change(T, 'i', at(11, 3), ['7', '\\N', null]), '7', '\\N', null);
      add(change(T, 'u', at(11, 4), ['7', 'x\ty', null]), '7', 'x\ty', null);
      add(change(T, 'u', at(11, 5), ['7', 'Grüße\r\n', null]), '7', 'Grüße\r\n', null);
      const batch = [...users.map(([ch]) => ch), ...values.map(([ch]) => ch)];
      await d.writeChanges(batch);
      const userRows = await d.query(
        `SELECT _floe_seq, _floe_lsn, _floe_ordinal, _floe_op, epoch_us(_floe_commit_time), _floe_unchanged, id, name FROM _floe_journal."public.users" ORDER BY _floe_seq`,
      );
      expect(userRows.map((r) => r.slice(1))).toEqual(users.map(([, v]) => v));
      const rows = await d.query(JOURNAL);
      expect(rows.map((r) => r.slice(1))).toEqual(values.map(([, v]) => v));
      // Seqs: consecutive, in change order across tables, file rows and appended rows.
      const seqs = [...userRows, ...rows].map((r) => r[0] as bigint);
      expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + BigInt(i)));
      expect(await d.query(`SELECT next_seq FROM _floe.seq`)).toEqual([[seqs[0]! + BigInt(seqs.length)]]);
      // A replay of the same batch adds nothing.
      await d.writeChanges(batch);
      expect(await d.query(`SELECT count(*) FROM _floe_journal."public.orders"`)).toEqual([[BigInt(values.length)]]);
      expect(await d.query(`SELECT count(*) FROM _floe_journal."public.users"`)).toEqual([[BigInt(users.length)]]);
    } finally {
      await d.close();
    }
  });

  it('with a watcher, commits batches in the background and reports each one durable in order', async () => {
    const d = new DuckDbDestination({ path: ':memory:' });
    const { watcher, durable, failed, heard } = recordingWatcher();
    try {
      await openWithTables(d);
      d.watchDurable(watcher);
      const lastOne = heard(at(105, 499));
      for (let b = 0; b < 6; b++) {
        const batch = [...Array(500).keys()].map((i) =>
          i % 2 === 0
            ? streamedInsert(T, at(100 + b, i), [String(b * 1000 + i), `n${i}`, null])
            : change(U, 'i', at(100 + b, i), [String(i), `u${i}`]),
        );
        await d.writeChanges(batch);
      }
      await lastOne;
      expect(failed).toEqual([]);
      expect(durable).toEqual([...Array(6).keys()].map((b) => at(100 + b, 499)));
      expect(await d.durableThrough()).toEqual(at(105, 499));
      expect(await d.query(`SELECT count(*), count(DISTINCT _floe_seq) FROM _floe_journal."public.orders"`)).toEqual([[1500n, 1500n]]);
      expect(await d.query(`SELECT count(*) FROM _floe_journal."public.users"`)).toEqual([[1500n]]);
      // Nothing new: durable again at once.
      await d.writeChanges([change(U, 'i', at(105, 499), ['1', 'replayed'])]);
      expect(durable.at(-1)).toEqual(at(105, 499));
    } finally {
      await d.close();
    }
  });

  it('a batch that fails in the background fails the batches queued behind it, and no file is left', async () => {
    const spool = mkdtempSync(join(tmpdir(), 'floe-batches-'));
    const before = process.env.FLOE_SPOOL_DIR;
    process.env.FLOE_SPOOL_DIR = spool;
    const d = new DuckDbDestination({ path: ':memory:' });
    const { watcher, durable, failed, heard } = recordingWatcher();
    try {
      await openWithTables(d);
      await d.writeChanges([change(U, 'i', at(1, 0), ['1', 'first'])]);
      d.watchDurable(watcher);
      // The orders journal goes away behind floe's back: the next batch into it cannot commit.
      await d.query(`ALTER TABLE _floe_journal."public.orders" RENAME TO moved`);
      await d.writeChanges([change(T, 'i', at(2, 0), ['1', 'lost', null])]);
      // Queued behind the failing batch (one batch committing, one waiting): it must not commit past the gap.
      await d.writeChanges([change(U, 'i', at(3, 0), ['2', 'behind'])]);
      await expect(d.writeChanges([change(U, 'i', at(4, 0), ['3', 'after'])])).rejects.toThrow(/appending changes to the journal/);
      expect(failed.length).toBeGreaterThanOrEqual(1);
      expect(durable).toEqual([]);
      expect(await d.durableThrough()).toEqual(at(1, 0));
      expect(await d.query(`SELECT name FROM _floe_journal."public.users" ORDER BY _floe_seq`)).toEqual([['first']]);
      expect(readdirSync(spool).filter((f) => f.startsWith('floe-duckdb-load-'))).toEqual([]);
      // Opened again (the runtime's restart), the destination takes the replayed changes.
      await d.query(`ALTER TABLE _floe_journal.moved RENAME TO "public.orders"`);
      await d.open('p', 'inc');
      const replayed = heard(at(3, 0));
      await d.writeChanges([change(T, 'i', at(2, 0), ['1', 'again', null]), change(U, 'i', at(3, 0), ['2', 'behind'])]);
      await replayed;
      expect(await d.query(`SELECT name FROM _floe_journal."public.users" ORDER BY _floe_seq`)).toEqual([['first'], ['behind']]);
    } finally {
      await d.close();
      if (before === undefined) delete process.env.FLOE_SPOOL_DIR;
      else process.env.FLOE_SPOOL_DIR = before;
      rmSync(spool, { recursive: true, force: true });
    }
  });
});
