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

  it('tells an escaped backslash-N from NULL', () => {
    const p = new CopyTextParser(2);
    expect(p.push(Buffer.from('\\\\N\t\\N\n'))).toEqual([['\\N', null]]);
  });

  it('refuses rows with the wrong number of fields and a truncated end', () => {
    expect(() => new CopyTextParser(2).push(Buffer.from('1\t2\t3\n'))).toThrow(FloeError);
    expect(() => new CopyTextParser(2).push(Buffer.from('1\n'))).toThrow(FloeError);
    const p = new CopyTextParser(1);
    p.push(Buffer.from('unterminated'));
    expect(() => p.end()).toThrow(FloeError);
  });
});
