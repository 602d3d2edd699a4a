import { describe, it, expect } from 'vitest';
import { CopyTextParser } from '../src/postgres/copy-text.js';
import { FloeError } from '../src/errors.js';

describe('COPY text parser', () => {
  it('decodes NULL, escapes, multibyte text and rows split across chunks', () => {
    const text = Buffer.from('1\t\\N\tplain\n2\ta\\tb\\nc\\\\d\t日本語\n3\t\\x41\\101\t\\N\n', 'utf8');
    const p = new CopyTextParser(3);
    const rows = [];
    // Feed byte by byte: rows and multibyte characters straddle chunk boundaries.
    for (let i = 0; i < text.length; i++) rows.push(...p.push(text.subarray(i, i + 1)));
    p.end();
    expect(rows).toEqual([
      ['1', null, 'plain'],
      ['2', 'a\tb\nc\\d', '日本語'],
      ['3', 'AA', null],
    ]);
  });

  it('gives the same rows whether a chunk mixes plain and escaped rows or splits them anywhere', () => {
    const rows: string[][] = [];
    for (let i = 0; i < 500; i++) rows.push([String(i), i % 5 === 0 ? `a\\tb${i}` : `plain ${i} é`, i % 7 === 0 ? '\\N' : `z${i}`]);
    const text = Buffer.from(rows.map((r) => r.join('\t') + '\n').join(''), 'utf8');
    const expected = rows.map(([a, b, c]) => [a, b!.replace('\\t', '\t'), c === '\\N' ? null : c]);
    expect([...new CopyTextParser(3).push(text)]).toEqual(expected);
    for (const size of [7, 64, 1000]) {
      const p = new CopyTextParser(3);
      const got = [];
      for (let i = 0; i < text.length; i += size) got.push(...p.push(text.subarray(i, i + size)));
      p.end();
      expect(got).toEqual(expected);
    }
    // One column: no tab anywhere in the chunk.
    const single = Buffer.from(Array.from({ length: 300 }, (_, i) => `v${i}\n`).join(''));
    expect([...new CopyTextParser(1).push(single)]).toEqual(Array.from({ length: 300 }, (_, i) => [`v${i}`]));
  });

  it('tells an escaped backslash-N from NULL', () => {
    const p = new CopyTextParser(2);
    expect([...p.push(Buffer.from('\\\\N\t\\N\n'))]).toEqual([['\\N', null]]);
  });

  it('refuses rows with the wrong number of fields and a truncated end', () => {
    // Rows are split when read: a malformed row fails there, and the rows before it still read.
    const rows = new CopyTextParser(2).push(Buffer.from('1\t2\n1\t2\t3\n1\n'));
    expect(rows).toHaveLength(3);
    expect(rows.cells(0)).toEqual(['1', '2']);
    expect(() => rows.cells(1)).toThrow(FloeError);
    expect(() => rows.cells(2)).toThrow(FloeError);
    expect(() => [...new CopyTextParser(2).push(Buffer.from('1\t2\t3\n'))]).toThrow(FloeError);
    const p = new CopyTextParser(1);
    p.push(Buffer.from('unterminated'));
    expect(() => p.end()).toThrow(FloeError);
  });
});
