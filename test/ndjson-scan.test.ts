/**
 * The byte-level grammars of src/emulator/ndjson-scan.ts against the regular expressions they replaced, run by
 * DuckDB's RE2 as the oracle: for thousands of lines (plain rows, every awkward value, and random edits of
 * both that hit escapes, surrogates, blanks, numbers and brackets), the scanner must decide exactly as the
 * expression does. The expressions below are the specification, kept here verbatim from the SQL load they
 * described before the scanner took over.
 */
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flatObjectLines, plainLines, type PlainForm } from '../src/emulator/ndjson-scan.js';
import { checkBody, extraction, plainLoad, type CheckedBody } from '../src/emulator/ndjson-body.js';
import { parseSfType } from '../src/emulator/sql/types.js';
import { Rng } from '../src/demo/workload.js';

const STRING_CHAR = String.raw`(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:0(?:0(?:0[1-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F])|[1-9a-fA-F][0-9a-fA-F]{2})|[1-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))`;
const WS = String.raw`[ \t\r]*`;
const SCALAR = String.raw`(?:"${STRING_CHAR}*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)`;
const FLAT_VALUE = String.raw`(?:${SCALAR}|\[${WS}(?:${SCALAR}${WS}(?:,${WS}${SCALAR}${WS})*)?\])`;
const MEMBER = String.raw`"${STRING_CHAR}*"${WS}:${WS}${FLAT_VALUE}`;
const FLAT_OBJECT = String.raw`${WS}\{${WS}(?:${MEMBER}${WS}(?:,${WS}${MEMBER}${WS})*)?\}${WS}`;
const TIME = String.raw`(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?`;
const TS = String.raw`[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}[T ]${TIME}`;
const PLAIN_ARRAY = String.raw`\[(?:"[^"\\\x00-\x1f]*"(?:,"[^"\\\x00-\x1f]*")*)?\]`;

/** The expression of a value form (the columns below keep VARCHAR limits within RE2's 1,000). */
function formPattern(f: PlainForm): string {
  switch (f.kind) {
    case 'integer':
      return f.inString === 0 ? `"0"|0` : `"(?:0|-?[1-9][0-9]{0,${f.inString - 1}})"|0|-?[1-9][0-9]{0,${f.inNumber - 1}}`;
    case 'string':
      return f.maxChars <= 1000 ? `"${STRING_CHAR}{0,${f.maxChars}}"` : `"${STRING_CHAR}*"`;
    case 'boolean':
      return 'true|false';
    case 'date':
      return `"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}"`;
    case 'time':
      return `"${TIME}"`;
    case 'timestamp':
      return f.zone ? `"${TS}(?:Z|[+-][0-9]{2}:[0-9]{2})"` : `"${TS}"`;
    case 'array':
      return PLAIN_ARRAY;
  }
}

const COLUMNS: [name: string, type: string, nullable: boolean, hasDefault: boolean][] = [
  ['ID', 'NUMBER(38,0)', false, false],
  ['N5', 'NUMBER(5,0)', true, false],
  ['N102', 'NUMBER(10,2)', true, false],
  ['N0', 'NUMBER(2,2)', true, false],
  ['V', 'VARCHAR', true, false],
  ['V3', 'VARCHAR(3)', true, false],
  ['B', 'BOOLEAN', true, false],
  ['D', 'DATE', true, false],
  ['T', 'TIME', true, false],
  ['TN', 'TIMESTAMP_NTZ(6)', true, false],
  ['TT', 'TIMESTAMP_TZ(6)', true, false],
  ['A', 'ARRAY', true, false],
  ['NN', 'VARCHAR', false, false],
];
const KEYS = COLUMNS.map(([name]) => name);
const TABLE_COLUMNS = COLUMNS.map(([name, type, nullable, hasDefault]) => ({ name, type: parseSfType(type)!, nullable, hasDefault }));
const load = plainLoad('t', TABLE_COLUMNS, undefined, 'BASE64', KEYS)!;

/** The plain row as one expression, as the SQL load built it from the batch's first row. */
const PLAIN_ROW = (() => {
  let pattern = '';
  load.members.forEach((m, i) => {
    const key = m.key.toString('utf8').slice(0, -1);
    const value = `${key}:(?:${m.nullable ? `null|${formPattern(m.form)}` : formPattern(m.form)})`;
    pattern += i === 0 ? value : m.optional ? `(?:,${value})?` : `,${value}`;
  });
  return `[ \\t\\r]*\\{${pattern}\\}[ \\t\\r]*`;
})();

const VALUES: Record<string, string[]> = {
  ID: [
    '0',
    '7',
    '-12',
    '"123456789012345678"',
    '"1234567890123456789"',
    '123456789012345',
    '1234567890123456',
    '"0"',
    '"-0"',
    '-0',
    '"007"',
    '1.5',
    '1e3',
  ],
  N5: ['99999', '100000', '"-99999"', '"123456"', '"+5"', '0', 'null'],
  N102: ['"12345678"', '"123456789"', '12345678', '0.5', '"1.00"'],
  N0: ['0', '"0"', '1', '"1"', '-0', 'null'],
  V: [
    '"plain"',
    '""',
    '"a\\nb"',
    '"\\u00e9t\\u00e9"',
    '"\\u0000x"',
    '"\\ud83d\\ude00"',
    '"\\uD7FF"',
    '"\\uE000"',
    '"\\u0fff"',
    '"😀"',
    '"\\/"',
    '"\\x"',
    '"\\u12"',
    '12',
    'null',
    'true',
  ],
  V3: ['"abc"', '"abcd"', '"é€😀"', '"\\u00e9\\u00e9\\u00e9"', '"😀😀😀😀"', '"ab\\n"', '"ab\\nc"', '""'],
  B: ['true', 'false', '"true"', '1', 'null', 'tru', 'falsey'],
  D: ['"2024-03-01"', '"0999-01-01"', '"2024-1-2"', '"2024-01-02T03:04:05Z"', '"20240-01-02"', '"2024-02-30"'],
  T: ['"03:04:05.123456"', '"23:59:59"', '"24:00:00"', '"19:60:00"', '"03:04"', '"03:04:05.1234567"', '"03:04:05."', '"3:04:05"'],
  TN: ['"2024-01-02T03:04:05.123456"', '"2024-01-02 03:04:05"', '"2024-01-02T03:04:05Z"', '"2024-01-02t03:04:05"', '"2024-01-02"'],
  TT: [
    '"2024-01-02T03:04:05.123456Z"',
    '"2024-01-02 03:04:05-07:30"',
    '"2024-01-02T03:04:05+0200"',
    '"2024-01-02T03:04:05z"',
    '"2024-01-02T03:04:05"',
    '"2024-01-02T03:04:05+99:99"',
  ],
  A: ['[]', '["ID","V"]', '[1,2]', '["a\\"b"]', '[ "x" ]', '["x",]', '[[]]', '["é"]', '[null]'],
  NN: ['"x"', 'null', '""'],
};

/** Edits that make lines interesting to both grammars. */
const EDITS = [
  '"',
  '\\',
  '\\u0000',
  '\\u00e9',
  '\\ud800',
  '\\uDC00',
  '\\/',
  ' ',
  '\t',
  '\r',
  ',',
  ':',
  '{',
  '}',
  '[',
  ']',
  '0',
  '1',
  '9',
  '-',
  '+',
  '.',
  'e',
  'E',
  'null',
  'true',
  'é',
  '😀',
  '\u0001',
  '\u007f',
  'x',
  'Z',
  'T',
  '"":1,',
  '{"a":{"b":1}}',
];

/** A row of the first (plain) values, with one other value at random when `r` is given. */
function row(r?: Rng): Map<string, string> {
  const values = new Map(KEYS.map((k) => [k, VALUES[k]![0]!]));
  if (r?.chance(0.5)) {
    const k = r.pick(KEYS);
    values.set(k, r.pick(VALUES[k]!));
  }
  return values;
}

function line(values: Map<string, string>, keys = KEYS, sep = ':'): string {
  return `{${keys.map((k) => `"${k}"${sep}${values.get(k)}`).join(',')}}`;
}

function edit(r: Rng, s: string): string {
  const chars = [...s];
  for (let n = r.int(1, 3); n > 0; n--) {
    const at = r.int(0, chars.length);
    const what = r.int(0, 2);
    if (what === 0) chars.splice(at, 0, r.pick(EDITS));
    else if (what === 1) chars.splice(at, 1);
    else chars.splice(at, 1, r.pick(EDITS));
  }
  return chars.join('');
}

function corpus(seed: number, n: number): string[] {
  const r = new Rng(seed);
  const lines: string[] = [
    '{}',
    ' { } ',
    '{"a":[]}',
    '{"a":[ 1 , "x" ,null]}',
    '{"a":-0.5e+10}',
    '{"a":01}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":1e}',
  ];
  for (const k of KEYS) for (const v of VALUES[k]!) lines.push(line(row(r).set(k, v)));
  for (const k of KEYS)
    lines.push(
      line(
        row(r),
        KEYS.filter((x) => x !== k),
      ),
    );
  lines.push(line(row(r), [...KEYS].reverse()), line(row(r), KEYS, ' : '), ` \t${line(row(r))}\r`);
  // A blank beside each brace, comma and colon of a plain row: flat objects, never plain rows.
  const plain = line(row());
  for (let k = 0; k < plain.length; k++) {
    if ('{,:}'.includes(plain[k]!)) lines.push(`${plain.slice(0, k)} ${plain.slice(k)}`, `${plain.slice(0, k + 1)} ${plain.slice(k + 1)}`);
  }
  while (lines.length < n) {
    const base = r.chance(0.5) ? line(row(r)) : r.pick(lines);
    lines.push(r.chance(0.3) ? base : edit(r, base));
  }
  return lines;
}

let db: DuckDBInstance;
let conn: DuckDBConnection;

beforeAll(async () => {
  db = await DuckDBInstance.create(':memory:');
  conn = await db.connect();
});

afterAll(() => {
  conn?.closeSync();
  db?.closeSync();
});

/** The oracle's answer for each line (lines with a newline are never generated). */
async function oracle(lines: string[], pattern: string): Promise<boolean[]> {
  await loadLines(lines);
  const r = await conn.runAndReadAll(`SELECT regexp_full_match(l, $1) FROM lines ORDER BY k`, [pattern]);
  return r.getRows().map(([m]) => m as boolean);
}

/** The lines into the table `lines (k, l)`, k counting from 0. */
async function loadLines(lines: string[]): Promise<void> {
  await conn.run('CREATE OR REPLACE TEMP TABLE lines (k INTEGER, l VARCHAR)');
  const appender = await conn.createAppender('lines', 'main', 'temp');
  lines.forEach((l, k) => {
    appender.appendInteger(k);
    appender.appendVarchar(l);
    appender.endRow();
  });
  appender.closeSync();
}

describe('NDJSON scanner', () => {
  const lines = corpus(20261204, 30_000);

  it('decides every line as the flat-object expression does', async () => {
    const expected = await oracle(lines, FLAT_OBJECT);
    const got = lines.map((l) => flatObjectLines(Buffer.from(l)) === 1);
    const differ = lines.filter((_, k) => got[k] !== expected[k]).slice(0, 5);
    expect(differ).toEqual([]);
    // Both answers are common, so neither "always yes" nor "always no" can pass.
    expect(expected.filter(Boolean).length).toBeGreaterThan(5000);
    expect(expected.filter((m) => !m).length).toBeGreaterThan(5000);
  });

  it('decides every line as the plain-row expression does', async () => {
    const expected = await oracle(lines, PLAIN_ROW);
    const got = lines.map((l) => plainLines(Buffer.from(l), load.members) === 1);
    const differ = lines.filter((_, k) => got[k] !== expected[k]).slice(0, 5);
    expect(differ).toEqual([]);
    expect(expected.filter(Boolean).length).toBeGreaterThan(3000);
    expect(expected.filter((m) => !m).length).toBeGreaterThan(5000);
  });

  it('reads the values of every plain line as json_extract_string does', async () => {
    const plain = lines.filter((l) => plainLines(Buffer.from(l), load.members) === 1);
    expect(plain.length).toBeGreaterThan(3000);
    await loadLines(plain);
    // The specification: the SQL load's values before json_transform took over.
    const paths = KEYS.map((k) => `'$."${k}"'`).join(', ');
    const expected = await conn.runAndReadAll(`SELECT json_extract_string(l, [${paths}]) FROM lines ORDER BY k`);
    const read = extraction(TABLE_COLUMNS);
    const values = KEYS.map((_, k) => read.value(k)).join(', ');
    const got = await conn.runAndReadAll(`SELECT [${values}] FROM (SELECT k, ${read.select} AS __v FROM lines) ORDER BY k`);
    const want = expected.getRows().map(([v]) => JSON.stringify(v));
    const differ = got
      .getRows()
      .map(([v]) => JSON.stringify(v))
      .flatMap((v, k) => (v === want[k] ? [] : [[plain[k], v]]))
      .slice(0, 3);
    expect(differ).toEqual([]);
    expect(read.select).toMatch(/^json_transform\(/);
  });

  it('reads with json_extract_string where two column names differ only in case', async () => {
    const cols = ['a', 'A'].map((name) => ({ name, type: parseSfType('VARCHAR')!, nullable: true, hasDefault: false }));
    const read = extraction(cols);
    expect(read.select).toMatch(/^json_extract_string\(/);
    await loadLines(['{"a":"x","A":"y"}']);
    const r = await conn.runAndReadAll(`SELECT ${read.value(0)}, ${read.value(1)} FROM (SELECT ${read.select} AS __v FROM lines)`);
    expect(r.getRows()).toEqual([['x', 'y']]);
  });

  it('answers an append alike with the plain scan tried first (a plain line is one flat object)', () => {
    const hint = { version: 0, load };
    let plainFirst = 0;
    const outcome = (check: () => CheckedBody) => {
      try {
        const body = check();
        if (body.plainUnder) plainFirst++;
        return { count: body.count, parsed: body.rows !== undefined };
      } catch (err) {
        return { error: (err as Error).message };
      }
    };
    const r = new Rng(20261205);
    // Single lines, bodies of several lines, and lines with a byte that breaks UTF-8 inside a value.
    const bodies = [
      ...lines.map((l) => Buffer.from(l)),
      ...Array.from({ length: 2000 }, () => Buffer.from(Array.from({ length: 1 + r.int(0, 5) }, () => r.pick(lines)).join('\n'))),
      ...lines
        .filter((l) => l.includes('"V":"'))
        .slice(0, 3000)
        .map((l) => {
          const at = l.indexOf('"V":"') + 5;
          return Buffer.concat([Buffer.from(l.slice(0, at)), Buffer.from([0xc3]), Buffer.from(l.slice(at))]);
        }),
    ];
    for (const bytes of bodies) {
      expect(
        outcome(() => checkBody(bytes, hint)),
        bytes.toString('utf8'),
      ).toEqual(outcome(() => checkBody(bytes)));
    }
    expect(plainFirst).toBeGreaterThan(3000);
  });

  it('counts non-blank lines, and leaves a body that is not UTF-8 to JSON.parse', () => {
    expect(flatObjectLines(Buffer.from('{"a":1}\n\n \r\n{"b":[]}\n'))).toBe(2);
    expect(flatObjectLines(Buffer.from(''))).toBe(0);
    expect(flatObjectLines(Buffer.from('{"a":1}\n{"b":2'))).toBeUndefined();
    expect(flatObjectLines(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x22, 0x7d]))).toBeUndefined();
    expect(plainLines(Buffer.from(`${line(row())}\n\n${line(row())}`), load.members)).toBe(2);
  });

  it('counts a VARCHAR limit in characters, escapes and multi-byte characters as one each', () => {
    const withV3 = (v3: string) => line(row().set('V3', v3));
    expect(plainLines(Buffer.from(withV3('"é😀\\n"')), load.members)).toBe(1);
    expect(plainLines(Buffer.from(withV3('"é😀\\nx"')), load.members)).toBe(-1);
  });
});
