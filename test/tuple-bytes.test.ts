import { describe, it, expect, vi } from 'vitest';
import { decodePgOutput, insertTupleBytes, TupleBytes } from '../src/postgres/pgoutput.js';
import { NdjsonEncoder, type NdjsonOptions } from '../src/destination/encoding/ndjson.js';
import { TupleChange, type Cell, type TableSchema } from '../src/model.js';
import { keyedTable, OID } from './helpers/schema.js';

const { TEXT, INT4, TEXT_ARRAY } = OID;

/** A value of an Insert message: text bytes, NULL ('n'), unchanged TOAST ('u') or binary ('b'). */
type Column = Buffer | null | 'u' | { binary: Buffer };

/** pgoutput's Insert message for relation `relationId` with these columns. */
function insertMessage(relationId: number, columns: Column[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(8);
  head[0] = 0x49; // I
  head.writeUInt32BE(relationId, 1);
  head[5] = 0x4e; // N
  head.writeUInt16BE(columns.length, 6);
  parts.push(head);
  for (const c of columns) {
    if (c === null) parts.push(Buffer.from('n'));
    else if (c === 'u') parts.push(Buffer.from('u'));
    else {
      const bytes = Buffer.isBuffer(c) ? c : c.binary;
      const h = Buffer.alloc(5);
      h[0] = Buffer.isBuffer(c) ? 0x74 : 0x62;
      h.writeUInt32BE(bytes.length, 1);
      parts.push(h, bytes);
    }
  }
  return Buffer.concat(parts);
}

function random(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed % n;
  };
}

/** Random text values: plain, long, with every character JSON escapes, multi-byte, now and then invalid UTF-8. */
function randomValue(rand: (n: number) => number, invalid: boolean): Buffer | null {
  if (rand(7) === 0) return null;
  const alphabet = [
    'a',
    'Z',
    ' ',
    '0',
    'é',
    '日',
    '😀',
    '"',
    '\\',
    '\n',
    '\t',
    '\r',
    '\b',
    '\f',
    '\v',
    '\u0000',
    '\u001f',
    '\u007f',
    '\u2028',
    '{',
  ];
  const plain = rand(3) !== 0;
  const len = rand(2) === 0 ? rand(6) : 16 + rand(120);
  let v = '';
  for (let i = 0; i < len; i++) v += alphabet[plain ? rand(4) : rand(alphabet.length)]!;
  const bytes = Buffer.from(v, 'utf8');
  if (!invalid || bytes.length === 0) return bytes;
  // A lone continuation byte, a truncated sequence or an encoded surrogate (not UTF-8).
  const bad = [Buffer.from([0x80]), Buffer.from([0xe6, 0x97]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xff])][rand(4)]!;
  const at = rand(bytes.length);
  return Buffer.concat([bytes.subarray(0, at), bad, bytes.subarray(at)]);
}

const T3 = keyedTable('t', [
  ['id', INT4],
  ['a', TEXT],
  ['b', TEXT],
]);
const WITH_ARRAY = keyedTable('arr', [
  ['id', INT4],
  ['tags', TEXT_ARRAY],
  ['b', TEXT],
]);

function change(table: TableSchema, message: Buffer, ordinal: number): TupleChange {
  const insert = insertTupleBytes(message);
  expect(insert).toBeDefined();
  return new TupleChange(table, 'i', { lsn: 0x1_0000_0002n, ordinal }, 1_767_323_045_123_456n, insert!.tuple);
}

/** The bytes writeChange gives for these changes, and those writeRow gives for their decoded cells. */
function bothWays(changes: TupleChange[], options: NdjsonOptions, withSeq: boolean): { copied: string; decoded: string } {
  const copied = new NdjsonEncoder(64, options);
  const decoded = new NdjsonEncoder(64, options);
  changes.forEach((ch, k) => {
    const extra = withSeq ? { seq: BigInt(k) } : undefined;
    const n = copied.writeChange(ch, extra);
    const cells = decodePgOutput(ch.tuple.buf);
    if (cells.tag !== 'insert') throw new Error('not an insert');
    const m = decoded.writeRow(ch.table, ch.op, ch.position, ch.commitTimeMicros, cells.newTuple, extra);
    expect(n).toBe(m);
  });
  return { copied: copied.view().toString('latin1'), decoded: decoded.view().toString('latin1') };
}

describe('insertTupleBytes', () => {
  it('keeps a text-mode Insert as bytes whose cells are exactly what the decoder gives', () => {
    const rand = random(11);
    for (let r = 0; r < 3000; r++) {
      const columns: Column[] = [Buffer.from(String(r)), randomValue(rand, r % 5 === 0), randomValue(rand, false)];
      const message = insertMessage(16_384 + (r % 3), columns);
      const insert = insertTupleBytes(message);
      expect(insert?.relationId).toBe(16_384 + (r % 3));
      const decoded = decodePgOutput(message);
      expect(decoded).toEqual({ tag: 'insert', relationId: 16_384 + (r % 3), newTuple: insert!.tuple.cells() });
    }
  });

  it('leaves binary and unchanged values, other messages and malformed ones to the decoder', () => {
    const ok = insertMessage(7, [Buffer.from('1'), null, Buffer.from('x')]);
    expect(insertTupleBytes(ok)).toBeDefined();
    for (const message of [
      insertMessage(7, [Buffer.from('1'), 'u', Buffer.from('x')]),
      insertMessage(7, [Buffer.from('1'), { binary: Buffer.from([0, 0, 0, 1]) }]),
      Buffer.concat([ok, Buffer.from('t')]), // a byte after the tuple
      Buffer.from([0x55, ...ok.subarray(1)]), // an Update's tag
      Buffer.from([...ok.subarray(0, 5), 0x4b, ...ok.subarray(6)]), // 'K' instead of 'N'
    ]) {
      expect(insertTupleBytes(message)).toBeUndefined();
    }
    // Every truncation, and a length pointing past the end, is refused here and reported by the decoder.
    for (let n = 0; n < ok.length; n++) {
      expect(insertTupleBytes(ok.subarray(0, n))).toBeUndefined();
      expect(() => decodePgOutput(ok.subarray(0, n))).toThrow();
    }
    const long = Buffer.from(ok);
    long.writeUInt32BE(2, 10); // the first value claims 2 bytes, then the next column's kind is read as data
    expect(insertTupleBytes(long)).toBeUndefined();
  });

  it('accepts only what the decoder accepts, and then agrees with it (random corruption)', () => {
    const rand = random(5);
    const base = insertMessage(9, [Buffer.from('42'), Buffer.from('héllo "x"'), null, Buffer.from('')]);
    let accepted = 0;
    for (let k = 0; k < 20_000; k++) {
      const m = Buffer.from(base);
      for (let j = 1 + rand(2); j > 0; j--) m[rand(m.length)] = rand(256);
      const insert = insertTupleBytes(m);
      if (!insert) continue;
      accepted++;
      const decoded = decodePgOutput(m);
      expect(decoded).toEqual({ tag: 'insert', relationId: insert.relationId, newTuple: insert.tuple.cells() });
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});

describe('NdjsonEncoder.writeChange (streamed inserts copied from their message)', () => {
  it('writes the bytes writeRow writes for the decoded cells, whatever the values', () => {
    const rand = random(3);
    const changes: TupleChange[] = [];
    for (let r = 0; r < 3000; r++) {
      const columns = [Buffer.from(String(r)), randomValue(rand, r % 7 === 0), randomValue(rand, false)];
      changes.push(change(T3, insertMessage(1, columns), r));
    }
    for (const [options, withSeq] of [
      [{}, false],
      [{ keyName: (c: string) => c.toUpperCase(), upperCaseMeta: true }, true],
    ] as const) {
      const { copied, decoded } = bothWays(changes, options, withSeq);
      expect(copied).toBe(decoded);
    }
  });

  it('copies without decoding, and decodes what it cannot copy (invalid UTF-8, arrays, other columns)', () => {
    const clean = change(T3, insertMessage(1, [Buffer.from('1'), Buffer.from('say "hi"\n'), null]), 0);
    const cells = vi.spyOn(clean.tuple, 'cells');
    const enc = new NdjsonEncoder(64);
    enc.writeChange(clean);
    expect(cells).not.toHaveBeenCalled();
    expect(JSON.parse(enc.view().toString())).toMatchObject({ id: '1', a: 'say "hi"\n', b: null, _floe_op: 'i', _floe_ordinal: 0 });

    const invalid = change(T3, insertMessage(1, [Buffer.from('2'), Buffer.from([0x61, 0xff, 0x62]), null]), 1);
    const array = change(WITH_ARRAY, insertMessage(1, [Buffer.from('3'), Buffer.from('{a,"b c",NULL}'), Buffer.from('z')]), 2);
    const fewer = change(T3, insertMessage(1, [Buffer.from('4'), Buffer.from('a')]), 3);
    // 195 bytes starting with a lone continuation byte: the length's last byte (0xc3) and it would make 'é'.
    const split = change(T3, insertMessage(1, [Buffer.from('5'), Buffer.concat([Buffer.from([0xa9]), Buffer.alloc(194, 0x61)]), null]), 4);
    // Encoded surrogates, overlong forms and code points past U+10FFFF are not UTF-8 either.
    const notUtf8 = [
      [0xed, 0xa0, 0x80],
      [0xc0, 0xaf],
      [0xe0, 0x80, 0xaf],
      [0xf0, 0x80, 0x80, 0xaf],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf5, 0x80, 0x80, 0x80],
    ].map((bytes, k) => change(T3, insertMessage(1, [Buffer.from('6'), Buffer.from([0x61, ...bytes, 0x62]), null]), 5 + k));
    for (const ch of [invalid, array, fewer, split, ...notUtf8]) {
      const spy = vi.spyOn(ch.tuple, 'cells');
      const { copied, decoded } = bothWays([ch], {}, false);
      expect(copied).toBe(decoded);
      expect(spy).toHaveBeenCalled();
    }
    const line = (ch: TupleChange) => JSON.parse(Buffer.from(bothWays([ch], {}, false).copied, 'latin1').toString('utf8'));
    expect(line(invalid)).toMatchObject({ a: 'a\ufffdb' });
    expect(line(array)).toMatchObject({ tags: '["a","b c",null]' });
  });

  it('decodes a TupleChange once, when its cells are first read', () => {
    const tuple = insertTupleBytes(insertMessage(1, [Buffer.from('1'), Buffer.from('a'), null]))!.tuple;
    const spy = vi.spyOn(tuple, 'cells');
    const ch = new TupleChange(T3, 'i', { lsn: 1n, ordinal: 0 }, 0n, tuple);
    expect(spy).not.toHaveBeenCalled();
    const first: readonly Cell[] = ch.cells;
    expect(first).toEqual(['1', 'a', null]);
    expect(ch.cells).toBe(first);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(tuple).toBeInstanceOf(TupleBytes);
  });
});
