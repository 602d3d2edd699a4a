import { describe, it, expect, vi } from 'vitest';
import { NdjsonEncoder, formatCommitTime } from '../src/destination/encoding/ndjson.js';
import { NdjsonLines } from '../src/destination/encoding/ndjson-lines.js';
import { EncodingSink } from '../src/destination/encoding/encoding-sink.js';
import type { Cell, Change, ChangeOp, TableSchema } from '../src/model.js';
import { keyedTable, OID } from './helpers/schema.js';
import { CopyTextParser } from '../src/postgres/copy-text.js';
import { FloeError } from '../src/errors.js';

const { TEXT, INT4, TEXT_ARRAY } = OID;

const table = (columns: [name: string, oid: number][], name = 't'): TableSchema => keyedTable(name, columns);

const T1 = table([
  ['id', INT4],
  ['name', TEXT],
  ['tags', TEXT_ARRAY],
  ['note', TEXT],
]);

/** Encodes rows and returns the parsed lines, checking that every line ends with '\n'. */
function encode(
  rows: { table?: TableSchema; op?: ChangeOp; lsn?: bigint; ordinal?: number; time?: bigint; cells: Cell[] }[],
  initialBytes?: number,
): { lines: Record<string, unknown>[]; text: string } {
  const enc = new NdjsonEncoder(initialBytes);
  let total = 0;
  for (const r of rows)
    total += enc.writeRow(r.table ?? T1, r.op ?? 'i', { lsn: r.lsn ?? 100n, ordinal: r.ordinal ?? 0 }, r.time ?? 0n, r.cells);
  expect(enc.length).toBe(total);
  const text = enc.view().toString('utf8');
  expect(text.endsWith('\n')).toBe(true);
  const lines = text.slice(0, -1).split('\n');
  expect(lines).toHaveLength(rows.length);
  return { lines: lines.map((l) => JSON.parse(l) as Record<string, unknown>), text };
}

/** The exact bytes JSON.stringify gives for a string, for byte-for-byte comparisons. */
function encodedString(s: string): string {
  const { text } = encode([{ table: table([['v', TEXT]]), cells: [s] }]);
  const start = '{"v":'.length;
  return text.slice(start, text.indexOf(',"_floe_lsn"'));
}

describe('NdjsonEncoder', () => {
  it('encodes a change as one JSON object with data columns and the _floe_ columns', () => {
    const time = 1_767_323_045_123_456n; // 2026-01-02T03:04:05.123456Z
    const { lines, text } = encode([{ lsn: 0x1_0000_0001n, ordinal: 12, time, cells: ['7', 'seven', '{a,b}', null] }]);
    expect(lines[0]).toEqual({
      id: '7',
      name: 'seven',
      tags: '["a","b"]',
      note: null,
      _floe_lsn: '4294967297',
      _floe_ordinal: 12,
      _floe_op: 'i',
      _floe_commit_time: '2026-01-02T03:04:05.123456Z',
      _floe_unchanged: null,
    });
    // Data columns in table order, then the bookkeeping columns.
    expect(Object.keys(JSON.parse(text) as object)).toEqual([
      'id',
      'name',
      'tags',
      'note',
      '_floe_lsn',
      '_floe_ordinal',
      '_floe_op',
      '_floe_commit_time',
      '_floe_unchanged',
    ]);
  });

  it('escapes quotes, backslashes and control characters', () => {
    const nasty = 'say "hi"\\ \\" "\\\n\r\t\b\f\u0000\u0001\u001f\u007f end';
    const { lines } = encode([{ cells: ['1', nasty, null, '"'] }]);
    expect(lines[0]!.name).toBe(nasty);
    expect(lines[0]!.note).toBe('"');
    expect(encodedString(nasty)).toBe(JSON.stringify(nasty));
    expect(encodedString('\u0000')).toBe('"\\u0000"');
    expect(encodedString('a\nb')).toBe('"a\\nb"');
    for (let c = 0; c < 0x80; c++) expect(encodedString(String.fromCharCode(c))).toBe(JSON.stringify(String.fromCharCode(c)));
  });

  it('writes unicode as UTF-8 and escapes lone surrogates like JSON.stringify', () => {
    const values = ['é', 'ß日本語', '🎉 emoji', 'mixed é"\\🎉\n', '\u2028\u2029', '\uffff', '\ud800', 'x\udc00y', '\ud83d', '\udc00\ud800'];
    for (const v of values) expect(encodedString(v)).toBe(JSON.stringify(v));
    // Values of 16 units or more with nothing to escape take the one-call path; one escape or surrogate anywhere does not.
    const long = [
      'x'.repeat(100),
      'é'.repeat(20) + '日本' + 'y'.repeat(50),
      '\u2028'.repeat(16),
      'x'.repeat(99) + '"',
      'x'.repeat(40) + '🎉',
    ];
    for (const v of long) expect(encodedString(v)).toBe(JSON.stringify(v));
    const { lines } = encode([{ cells: ['1', '🎉日本é', null, null] }]);
    expect(lines[0]!.name).toBe('🎉日本é');
  });

  it('matches JSON.stringify byte for byte on random strings', () => {
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const pools = [0x20, 0x80, 0x800, 0xd800, 0x10000];
    for (let k = 0; k < 300; k++) {
      let s = '';
      const len = rand(k % 2 === 0 ? 40 : 300);
      for (let i = 0; i < len; i++) s += String.fromCharCode(rand(pools[rand(pools.length)]!));
      if (k % 7 === 0) s += '🎉';
      expect(encodedString(s)).toBe(JSON.stringify(s));
    }
  });

  it('tells NULL from an unchanged (not sent) value', () => {
    const { lines } = encode([
      { op: 'u', cells: ['1', null, undefined, undefined] },
      { op: 'u', cells: ['2', null, null, null] },
    ]);
    expect(lines[0]).toMatchObject({ name: null, tags: null, note: null, _floe_unchanged: ['tags', 'note'] });
    expect(lines[1]).toMatchObject({ name: null, tags: null, note: null, _floe_unchanged: null });
  });

  it('encodes arrays through pgArrayToJson, as a JSON string', () => {
    const { lines } = encode([{ cells: ['1', 'x', '{{1,NULL},{"a \\"q\\"",é}}', null] }]);
    expect(lines[0]!.tags).toBe('[["1",null],["a \\"q\\"","é"]]');
    expect(JSON.parse(lines[0]!.tags as string)).toEqual([
      ['1', null],
      ['a "q"', 'é'],
    ]);
  });

  it('encodes snapshot rows, deletes and truncates', () => {
    const { lines } = encode([
      { op: 'r', lsn: 5n, ordinal: -1, time: 0n, cells: ['1', 'a', '{}', 'n'] },
      { op: 'd', lsn: 6n, ordinal: 0, time: 1n, cells: ['1', null, null, null] },
      { op: 't', lsn: 7n, ordinal: 1234567, time: -1n, cells: [null, null, null, null] },
    ]);
    expect(lines[0]).toMatchObject({ tags: '[]', _floe_op: 'r', _floe_lsn: '5', _floe_ordinal: -1, _floe_commit_time: null });
    expect(lines[1]).toMatchObject({ _floe_op: 'd', _floe_ordinal: 0, _floe_commit_time: '1970-01-01T00:00:00.000001Z' });
    expect(lines[2]).toMatchObject({ _floe_op: 't', _floe_ordinal: 1234567, _floe_commit_time: '1969-12-31T23:59:59.999999Z' });
  });

  it('keeps 64-bit LSNs exact and changes LSN and commit time between transactions', () => {
    const big = 0xffff_ffff_ffff_fff0n;
    const { lines } = encode([
      { lsn: big, ordinal: 0, time: 1_000_000n, cells: ['1', null, null, null] },
      { lsn: big, ordinal: 1, time: 1_000_000n, cells: ['2', null, null, null] },
      { lsn: big + 1n, ordinal: 0, time: 2_000_000n, cells: ['3', null, null, null] },
    ]);
    expect(lines.map((l) => [l._floe_lsn, l._floe_ordinal, l._floe_commit_time])).toEqual([
      [big.toString(), 0, '1970-01-01T00:00:01.000000Z'],
      [big.toString(), 1, '1970-01-01T00:00:01.000000Z'],
      [(big + 1n).toString(), 0, '1970-01-01T00:00:02.000000Z'],
    ]);
  });

  it('escapes column names and handles tables without columns and several tables', () => {
    const odd = table(
      [
        ['we"ird\\name', TEXT],
        ['日本', TEXT],
      ],
      'odd',
    );
    const none = table([], 'none');
    const { lines } = encode([{ table: odd, cells: [undefined, 'v'] }, { table: none, cells: [] }, { cells: ['1', null, null, null] }]);
    expect(lines[0]).toMatchObject({ 'we"ird\\name': null, 日本: 'v', _floe_unchanged: ['we"ird\\name'] });
    expect(lines[1]).toEqual({ _floe_lsn: '100', _floe_ordinal: 0, _floe_op: 'i', _floe_commit_time: null, _floe_unchanged: null });
    expect(lines[2]).toMatchObject({ id: '1' });
  });

  it('grows its buffer for large values and many rows, and reuses it after reset', () => {
    const big = 'x"'.repeat(100_000) + '\n🎉';
    const rows = Array.from({ length: 1000 }, (_, i) => ({
      ordinal: i,
      cells: [String(i), i === 500 ? big : `name ${i}`, null, '\u0001'],
    }));
    const { lines } = encode(rows, 64);
    expect(lines[500]!.name).toBe(big);
    expect(lines.map((l) => l._floe_ordinal)).toEqual(rows.map((r) => r.ordinal));
    const enc = new NdjsonEncoder(64);
    enc.writeRow(T1, 'i', { lsn: 1n, ordinal: 0 }, 0n, ['1', big, null, null]);
    enc.reset();
    expect(enc.length).toBe(0);
    enc.writeRow(T1, 'i', { lsn: 1n, ordinal: 1 }, 0n, ['2', 'b', null, null]);
    expect(JSON.parse(enc.view().toString())).toMatchObject({ id: '2', name: 'b', _floe_ordinal: 1 });
  });

  it('formats commit times with microseconds', () => {
    expect(formatCommitTime(0n)).toBe('null');
    expect(formatCommitTime(1_700_000_000_000_001n)).toBe('"2023-11-14T22:13:20.000001Z"');
    expect(formatCommitTime(-1_000_001n)).toBe('"1969-12-31T23:59:58.999999Z"');
  });
});

/** A value as PostgreSQL's COPY TO writes it in text format (CopyAttributeOutText). */
function copyText(v: string | null): string {
  if (v === null) return '\\N';
  const short: Record<string, string> = { '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' };
  return [...v].map((c) => short[c] ?? c).join('');
}

/** Encodes every row of COPY text (fed in `chunkSize` pieces) both ways: copied and through cells. */
function bothWays(t: TableSchema, copy: Buffer, chunkSize: number, options?: { upperCaseMeta?: boolean }) {
  const copied = new NdjsonEncoder(64, { keyName: (c) => c.toUpperCase(), ...options });
  const decoded = new NdjsonEncoder(64, { keyName: (c) => c.toUpperCase(), ...options });
  const parser = new CopyTextParser(t.columns.length);
  let rows = 0;
  for (let at = 0; at < copy.length; at += chunkSize) {
    const chunk = parser.push(copy.subarray(at, at + chunkSize));
    for (let i = 0; i < chunk.length; i++) {
      const extra = { seq: BigInt(rows), range: 3 };
      const n = copied.writeCopyRow(t, 'r', { lsn: 7n, ordinal: -1 }, 0n, chunk, i, extra);
      expect(n).toBe(decoded.writeRow(t, 'r', { lsn: 7n, ordinal: -1 }, 0n, chunk.cells(i), extra));
      rows++;
    }
  }
  parser.end();
  return { copied: copied.view().toString('latin1'), decoded: decoded.view().toString('latin1'), rows };
}

describe('NdjsonEncoder.writeCopyRow (snapshot rows copied from COPY text)', () => {
  const T4 = table([
    ['id', INT4],
    ['a', TEXT],
    ['b', TEXT],
    ['c', TEXT],
  ]);

  it('writes the same bytes as encoding the decoded values, for random text in random chunks', () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const alphabet = ['a', 'Z', ' ', 'é', '日', '😀', '"', '\\', '\n', '\t', '\r', '\b', '\f', '\v', '\u007f', 'N', '{', ','];
    const values: (string | null)[][] = [];
    for (let r = 0; r < 2000; r++) {
      const row: (string | null)[] = [String(r)];
      for (let c = 0; c < 3; c++) {
        if (rand(6) === 0) {
          row.push(rand(2) === 0 ? null : '');
          continue;
        }
        // Mostly plain values, some long (copied natively), some with characters to escape.
        const plain = rand(3) !== 0;
        const len = rand(2) === 0 ? rand(8) : 20 + rand(80);
        let v = '';
        for (let i = 0; i < len; i++) v += plain ? alphabet[rand(6)]! : alphabet[rand(alphabet.length)]!;
        row.push(v);
      }
      values.push(row);
    }
    const copy = Buffer.from(values.map((row) => row.map(copyText).join('\t') + '\n').join(''), 'utf8');
    // The reference: the original values, encoded as cells.
    const reference = new NdjsonEncoder(64, { keyName: (c) => c.toUpperCase() });
    values.forEach((row, r) => reference.writeRow(T4, 'r', { lsn: 7n, ordinal: -1 }, 0n, row, { seq: BigInt(r), range: 3 }));
    for (const size of [1, 13, 4096, copy.length]) {
      const { copied, decoded, rows } = bothWays(T4, copy, size);
      expect(rows).toBe(values.length);
      expect(decoded).toBe(reference.view().toString('latin1'));
      expect(copied).toBe(decoded);
    }
  });

  it('copies clean rows without decoding them, and decodes what it cannot copy exactly', () => {
    const clean = new CopyTextParser(4).push(Buffer.from('1\tplain "quoted"\t\\N\ta\\\\b\\nc\\td\\ve\n', 'utf8'));
    const cells = vi.spyOn(clean, 'cells');
    const enc = new NdjsonEncoder(64);
    enc.writeCopyRow(T4, 'r', { lsn: 7n, ordinal: -1 }, 0n, clean, 0);
    expect(cells).not.toHaveBeenCalled();
    expect(JSON.parse(enc.view().toString())).toMatchObject({ id: '1', a: 'plain "quoted"', b: null, c: 'a\\b\nc\td\ve' });
    // Escapes COPY TO never writes but COPY text allows, a raw control byte, invalid UTF-8 and an
    // array column take the decoding path and give its bytes.
    const cases: [TableSchema, string | Buffer][] = [
      [T4, '1\t\\x41\\101\ta\\Nb\tz\n'],
      [T4, '1\tx\u0001y\t\t\n'],
      [T4, Buffer.concat([Buffer.from('1\tbad '), Buffer.from([0xff, 0xc3]), Buffer.from('\t\t\n')])],
      [T1, '1\tn\t{a,"b c",NULL}\tz\n'],
    ];
    for (const [t, text] of cases) {
      const { copied, decoded } = bothWays(t, Buffer.from(text), 1 << 16, { upperCaseMeta: true });
      expect(copied).toBe(decoded);
      expect(copied.length).toBeGreaterThan(0);
    }
  });

  it('escapes a raw control byte at any offset of a long field (the copy checks 4 bytes at a time)', () => {
    // Next to the control byte: ASCII, the edges of the control range, and UTF-8 (high bytes).
    const fillers = ['abcdefghijklmnop', ' !~\u007f ~! ~!~ !~! ', 'éé日日😀😀éé'];
    const rows: string[] = [];
    for (const filler of fillers) {
      for (const control of ['\u0000', '\u0001', '\u0007', '\u001f']) {
        for (let pad = 0; pad < 8; pad++) {
          for (const field of [`${'.'.repeat(pad)}${control}${filler}`, `${filler}${'.'.repeat(pad)}${control}${filler}`]) {
            rows.push(`${rows.length}\t${field}\tx\t${filler}\n`);
          }
        }
      }
    }
    const { copied, decoded } = bothWays(T4, Buffer.from(rows.join('')), 1 << 20);
    expect(copied).toBe(decoded);
    expect(copied).toContain('\\u0000');
    expect(copied).toContain('\\u001f');
    expect(copied).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
  });

  it('refuses a row with the wrong number of fields, as decoding does', () => {
    const rows = new CopyTextParser(4).push(Buffer.from('1\ta\tb\n1\ta\tb\tc\td\n'));
    const enc = new NdjsonEncoder(64);
    expect(() => enc.writeCopyRow(T4, 'r', { lsn: 7n, ordinal: -1 }, 0n, rows, 0)).toThrow(FloeError);
    expect(() => enc.writeCopyRow(T4, 'r', { lsn: 7n, ordinal: -1 }, 0n, rows, 1)).toThrow(FloeError);
    expect(enc.length).toBe(0);
  });
});

describe('NdjsonLines', () => {
  const texts = ['ä€😀', 'plain', '', 'x'.repeat(70_000), 'tab\there', 'zürich'];
  const all = (l: NdjsonLines) => Array.from({ length: l.count }, (_, i) => l.line(i));

  it('takes what an encoder wrote, line by line, and leaves the encoder empty for reuse', () => {
    const enc = new NdjsonEncoder(64);
    const t = table([['v', TEXT]]);
    // A newline inside a value is escaped by the encoder, so it never ends a line.
    const values = [...texts, 'line\nbreak\r\n'];
    for (const v of values) enc.writeRow(t, 'i', { lsn: 1n, ordinal: 0 }, 0n, [v]);
    const lines = NdjsonLines.take(enc);
    expect(enc.length).toBe(0);
    expect(lines.count).toBe(values.length);
    expect(all(lines).map((l) => (JSON.parse(l) as { v: string }).v)).toEqual(values);
    // Writing again reuses the encoder's buffer: the lines taken must not change.
    enc.writeRow(t, 'i', { lsn: 2n, ordinal: 0 }, 0n, ['overwrites?'.repeat(100)]);
    expect(all(lines).map((l) => (JSON.parse(l) as { v: string }).v)).toEqual(values);
  });

  it('slices of slices keep their lines, sizes and bytes (multi-byte UTF-8 too)', () => {
    const lines = NdjsonLines.of(texts.map((v) => JSON.stringify({ v })));
    const wanted = texts.map((v) => JSON.stringify({ v }));
    expect(all(lines)).toEqual(wanted);
    for (let from = 0; from <= texts.length; from++) {
      for (let to = from; to <= texts.length; to++) {
        const s = lines.slice(from, to);
        expect(all(s)).toEqual(wanted.slice(from, to));
        expect(s.range(0, s.count).toString('utf8')).toBe(
          wanted
            .slice(from, to)
            .map((l) => `${l}\n`)
            .join(''),
        );
        for (let i = 0; i < s.count; i++) expect(s.size(i)).toBe(Buffer.byteLength(wanted[from + i]!) + 1);
        if (s.count >= 2) expect(all(s.slice(1, s.count))).toEqual(wanted.slice(from + 1, to));
      }
    }
  });

  it('adds a newline only where a given line lacks one', () => {
    const lines = NdjsonLines.of(['{"a":1}\n', '{"b":2}']);
    expect(lines.range(0, 2).toString()).toBe('{"a":1}\n{"b":2}\n');
  });
});

describe('EncodingSink', () => {
  const change = (lsn: bigint, ordinal: number, cells: Cell[], op: ChangeOp = 'i'): Change => ({
    table: T1,
    op,
    position: { lsn, ordinal },
    commitTimeMicros: 1_000_000n,
    cells,
  });

  it('encodes changes into chunks of whole lines, counts them and skips replays', async () => {
    const chunks: string[] = [];
    const sink = new EncodingSink({ chunkBytes: 1000, onChunk: (b) => chunks.push(b.toString()) });
    expect(await sink.open('p', 'inc1')).toEqual({ durable: undefined });
    await sink.prepare(T1);
    const batch = Array.from({ length: 50 }, (_, i) => change(10n, i, [String(i), `name ${i}`, '{1,2}', null]));
    await sink.writeChanges(batch);
    expect(await sink.durableThrough()).toEqual({ lsn: 10n, ordinal: 49 });
    expect(sink.rows).toBe(50);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(c.endsWith('\n')).toBe(true);
    expect(sink.bytes).toBe(chunks.reduce((n, c) => n + Buffer.byteLength(c), 0));
    expect(sink.chunks).toBe(chunks.length);
    const lines = chunks
      .join('')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.id)).toEqual(batch.map((c) => c.cells[0]));

    // A replayed batch overlapping the durable position only adds what is new.
    await sink.writeChanges([change(10n, 49, ['49', null, null, null]), change(11n, 0, ['x', null, null, null], 'd')]);
    expect(sink.rows).toBe(51);
    expect(await sink.durableThrough()).toEqual({ lsn: 11n, ordinal: 0 });
    await sink.writeChanges([change(11n, 0, ['x', null, null, null], 'd')]);
    expect(sink.rows).toBe(51);

    // The watermark belongs to the incarnation.
    expect(await sink.open('p', 'inc2')).toEqual({ durable: undefined });
    expect(await sink.open('p', 'inc1')).toEqual({ durable: { lsn: 11n, ordinal: 0 } });
    expect(await sink.merge()).toEqual({ tables: 0, journalRows: 0 });
    await sink.close();
  });

  it('encodes snapshot ranges as op r at (snapshot LSN, -1)', async () => {
    const out: string[] = [];
    const sink = new EncodingSink({ onChunk: (b) => out.push(b.toString()) });
    await sink.open('p', 'i');
    async function* rows(): AsyncIterable<Cell[][]> {
      yield [
        ['1', 'a', null, null],
        ['2', 'b', '{x}', 'n'],
      ];
      yield [['3', 'c\td', null, null]];
    }
    expect(await sink.writeSnapshotRange({ table: T1, rangeIndex: 0, snapshotLsn: 77n }, rows())).toBe(3);
    const lines = out
      .join('')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toEqual({
      id: '3',
      name: 'c\td',
      tags: null,
      note: null,
      _floe_lsn: '77',
      _floe_ordinal: -1,
      _floe_op: 'r',
      _floe_commit_time: null,
      _floe_unchanged: null,
    });
    expect(lines[1]!.tags).toBe('["x"]');
    expect(sink.rows).toBe(3);
    expect(await sink.durableThrough()).toBeUndefined();
  });
});
