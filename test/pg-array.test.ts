import { describe, it, expect } from 'vitest';
import { pgArrayToJson, parsePgArray, type PgArrayValue } from '../src/schema/pg-array.js';
import { FloeError } from '../src/errors.js';

const json = (text: string, delimiter?: string): unknown => JSON.parse(pgArrayToJson(text, delimiter));

describe('pgArrayToJson', () => {
  it('converts flat arrays with NULLs', () => {
    expect(pgArrayToJson('{1,2,NULL}')).toBe('["1","2",null]');
    expect(json('{null,Null,nULL}')).toEqual([null, null, null]);
    expect(json('{t,f}')).toEqual(['t', 'f']);
  });

  it('converts the empty array', () => {
    expect(pgArrayToJson('{}')).toBe('[]');
    expect(json(' { } ')).toEqual([]);
  });

  it('handles quoting and backslash escapes', () => {
    expect(json(String.raw`{"a b","c\"d","NULL",NULL,"","back\\slash","{x}","comma,here"," lead","trail "}`)).toEqual([
      'a b',
      'c"d',
      'NULL',
      null,
      '',
      'back\\slash',
      '{x}',
      'comma,here',
      ' lead',
      'trail ',
    ]);
    // Escapes outside quotes too; an escaped NULL is text.
    expect(json(String.raw`{a\"b,\NULL,a\,b,a\ }`)).toEqual(['a"b', 'NULL', 'a,b', 'a ']);
    expect(pgArrayToJson(String.raw`{"a\\b"}`)).toBe(String.raw`["a\\b"]`);
  });

  it('keeps unicode, newlines and control characters', () => {
    expect(json('{"multi\nline","tab\there",日本,é,🎉}')).toEqual(['multi\nline', 'tab\there', '日本', 'é', '🎉']);
    expect(json('{"\u0001"}')).toEqual(['\u0001']);
  });

  it('ignores whitespace around elements but not inside them', () => {
    expect(json('{ a b ,c}')).toEqual(['a b', 'c']);
    expect(json('{"a" , b }')).toEqual(['a', 'b']);
    expect(json(' {1} ')).toEqual(['1']);
    expect(json('{ {1 , 2} , {3,4} }')).toEqual([
      ['1', '2'],
      ['3', '4'],
    ]);
  });

  it('nests multi-dimensional arrays', () => {
    expect(pgArrayToJson('{{1,2},{3,NULL}}')).toBe('[["1","2"],["3",null]]');
    expect(json('{{{a},{b}},{{c},{d}}}')).toEqual([
      [['a'], ['b']],
      [['c'], ['d']],
    ]);
    expect(json('{{"x y"}}')).toEqual([['x y']]);
  });

  it('strips dimension decorations', () => {
    expect(json('[0:1]={7,8}')).toEqual(['7', '8']);
    expect(json('[-2:-1]={7,8}')).toEqual(['7', '8']);
    expect(json('[2]={1,2}')).toEqual(['1', '2']);
    expect(json('[1:2][0:0]={{1},{2}}')).toEqual([['1'], ['2']]);
    expect(json(' [0:0] = {x}')).toEqual(['x']);
  });

  it('uses the given delimiter', () => {
    expect(json('{(1,1),(0,0);(2,2),(1,1)}', ';')).toEqual(['(1,1),(0,0)', '(2,2),(1,1)']);
    expect(json('{"a;b";c}', ';')).toEqual(['a;b', 'c']);
  });

  it.each([
    ['empty input', ''],
    ['no braces', 'abc'],
    ['unterminated array', '{'],
    ['unterminated element', '{1'],
    ['trailing delimiter', '{1,}'],
    ['leading delimiter', '{,1}'],
    ['double delimiter', '{1,,2}'],
    ['text after a quoted element', '{"a"b}'],
    ['quote inside an element', '{a"b"}'],
    ['unterminated quote', '{"abc'],
    ['unterminated quote after backslash', '{"abc\\'],
    ['backslash at the end', '{abc\\'],
    ['ragged sub-arrays', '{{1},{2,3}}'],
    ['ragged deeper sub-arrays', '{{{1}},{{2},{3}}}'],
    ['sub-array then scalar', '{{1},2}'],
    ['scalar then sub-array', '{1,{2}}'],
    ['empty sub-array', '{{}}'],
    ['junk after the array', '{1} x'],
    ['second array', '{1}{2}'],
    ['decoration without "="', '[1:2]{1,2}'],
    ['bad decoration', '[x]={1}'],
    ['decoration of wrong length', '[1:2]={1}'],
    ['decoration of wrong depth', '[1:2]={{1,2},{3,4}}'],
    ['brace inside an element', '{a{b}'],
    ['extra closing brace', '{{1,2},{3,4}}}'],
  ])('rejects malformed input: %s', (_name, text) => {
    let err: unknown;
    try {
      pgArrayToJson(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FloeError);
    expect((err as FloeError).kind).toBe('schema');
    expect((err as FloeError).message).toMatch(/^malformed array literal: .* at position \d+$/);
  });

  it('keeps values out of error messages', () => {
    expect(() => pgArrayToJson('{"secret-value')).toThrow(/^(?!.*secret)/);
  });

  it('reads back whatever PostgreSQL would print (random arrays)', () => {
    // PostgreSQL's array_out: quote empty strings, "NULL", and anything with
    // braces, quotes, backslashes, the delimiter or whitespace; escape " and \.
    const needsQuotes = (s: string): boolean => s === '' || s.toUpperCase() === 'NULL' || /[{}",\\\s]/.test(s);
    const quote = (s: string): string => (needsQuotes(s) ? `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"` : s);
    const print = (v: PgArrayValue): string => (v === null ? 'NULL' : Array.isArray(v) ? `{${v.map(print).join(',')}}` : quote(v));

    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const alphabet = ['a', 'Z', '0', ' ', '\t', '\n', '"', '\\', '{', '}', ',', 'é', '日', '🎉', 'N', 'U', 'L', "'", '[', ']', ':', '='];
    const randomString = (): string => {
      if (rand(10) === 0) return ['NULL', 'null', '', ' '][rand(4)]!;
      let s = '';
      for (let i = rand(6); i > 0; i--) s += alphabet[rand(alphabet.length)];
      return s;
    };
    const randomArray = (dims: number[]): PgArrayValue[] =>
      Array.from({ length: dims[0]! }, () => (dims.length > 1 ? randomArray(dims.slice(1)) : rand(6) === 0 ? null : randomString()));

    for (let i = 0; i < 2000; i++) {
      const dims = Array.from({ length: 1 + rand(3) }, () => 1 + rand(3));
      const value = randomArray(dims);
      const text = print(value);
      expect(parsePgArray(text), text).toEqual(value);
      expect(JSON.parse(pgArrayToJson(text))).toEqual(value);
    }
  });
});
