/**
 * Values for the binary decoders beyond the type table's (CASES): edge values per type and seeded
 * random floats, numerics, timestamps and intervals. binary-values.test.ts compares their decoded send
 * forms with PostgreSQL's text; binary-stream.test.ts replicates them with binary on and off.
 */
import type { Value } from './type-cases.js';

export interface BinaryCase {
  readonly decl: string;
  readonly values: readonly Value[];
  readonly minMajor?: number;
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export const random = rng(20240512);
export const randomInt = (n: number): number => Math.floor(random() * n);
export const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

function randomBitsFloat8(): string {
  const b = Buffer.alloc(8);
  for (;;) {
    b.writeUInt32BE(randomInt(2 ** 32), 0);
    b.writeUInt32BE(randomInt(2 ** 32), 4);
    const v = b.readDoubleBE(0);
    if (Number.isFinite(v)) return String(v);
  }
}

function randomBitsFloat4(): string {
  const b = Buffer.alloc(4);
  for (;;) {
    b.writeUInt32BE(randomInt(2 ** 32), 0);
    const v = b.readFloatBE(0);
    // Nine significant digits read back as the same float4.
    if (Number.isFinite(v)) return v.toPrecision(9);
  }
}

/** Decimals with few digits at every magnitude: where shortest-digit ties and midpoints live. */
function shortDecimal(maxExp: number): string {
  const digits = String(1 + randomInt(999_999_999)).slice(0, 1 + randomInt(9));
  const exp = randomInt(2 * maxExp) - maxExp;
  return `${random() < 0.5 ? '-' : ''}${digits}e${exp}`;
}

/**
 * Integer doubles above 2^53 for which V8's shortest digits lie exactly on the midpoint to a neighbour
 * (about 1.4% of those with an even significand): PostgreSQL never prints a midpoint, so these take
 * the decoder's exact path.
 */
function midpointDoubles(n: number): string[] {
  const out: string[] = [];
  const b = Buffer.alloc(8);
  while (out.length < n) {
    const e = 53 + randomInt(80);
    const v = Math.round(random() * 2 ** 53) * 2 ** (e - 53) + 2 ** e;
    b.writeDoubleBE(v);
    if (b.readUInt32BE(4) & 1) continue;
    const [mantissa, exp] = v.toExponential().split('e');
    const digits = mantissa!.replace('.', '');
    const shift = Number(exp) - (digits.length - 1);
    if (shift < 0) continue;
    const half = 1n << BigInt(((b.readUInt32BE(0) >>> 20) & 0x7ff) - 1076);
    const diff = BigInt(digits) * 10n ** BigInt(shift) - BigInt(v);
    if (diff === half || -diff === half) out.push(String(v));
  }
  return out;
}

const randomNumeric = (): string => {
  const int = times(randomInt(30), () => randomInt(10)).join('');
  const frac = times(randomInt(30), () => randomInt(10)).join('');
  return `${random() < 0.5 ? '-' : ''}${int || '0'}${frac ? '.' + frac : ''}`;
};

export const randomMicros = (): bigint => {
  // Across timestamp's whole range, 4713 BC to 294276 AD.
  const min = -211813488000000000n;
  const max = 9223371331200000000n;
  const r = BigInt(randomInt(2 ** 30)) * BigInt(2 ** 30) + BigInt(randomInt(2 ** 30));
  return min + (r % (max - min));
};

const randomInterval = (): string => {
  const time = `${randomInt(200000)}:${randomInt(60)}:${randomInt(60)}.${String(randomInt(1e6)).padStart(6, '0')}`;
  const parts = [`${randomInt(4e6) - 2e6} mons`, `${randomInt(4e6) - 2e6} days`, `${random() < 0.5 ? '-' : '+'}${time}`];
  // Leave out fields at random: zero fields are not printed, and the sign rules depend on the neighbours.
  return parts.filter(() => random() < 0.7).join(' ') || '0';
};

export const EXTRA_CASES: readonly BinaryCase[] = [
  { decl: 'bool', values: ['t', 'f'] },
  { decl: 'int2', values: ['-1', '1', '-32768'] },
  {
    decl: 'int8',
    values: [
      '-1',
      '9007199254740991',
      '9007199254740992',
      '9007199254740993',
      '-9007199254740992',
      '-9007199254740993',
      '4294967296',
      '-4294967297',
    ],
  },
  {
    decl: 'float8',
    values: [
      '1e+20',
      '1.5e-07',
      '1e15',
      '1e14',
      '123456789012345',
      '1234567890123456',
      '0.0001',
      '0.00001',
      '100',
      '-123.456',
      '18014398509481988',
      '18014398509481990',
      '1125899906842624.25',
      '1125899906842624.75',
      '9007199254740992',
      '9007199254740993',
      '4503599627370497.5',
      '67661223192077060',
      '25595080949915750',
      '187248113825385200',
      ...midpointDoubles(200),
      '1e22',
      '1e23',
      '5e-324',
      '1e308',
      ...times(3000, randomBitsFloat8),
      ...times(1500, () => shortDecimal(40)),
      // Integer-valued doubles between 2^53 and 1e40, where a shortest candidate can lie on a midpoint.
      ...times(1500, () => String(Math.round((2 ** 53 + random() * 2 ** 80) / 2 ** randomInt(2)) * 2 ** randomInt(50))),
    ],
  },
  {
    decl: 'float4',
    values: [
      '1e+20',
      '1.5e-07',
      '123456',
      '1234567',
      '100000',
      '1000000',
      '16777216',
      '16777218',
      '1048576.25',
      '1048576.75',
      '2097152.5',
      '0.3',
      '-0.1',
      '0.0001',
      '0.00001',
      '3.4028235e+38',
      '1.4e-45',
      '8.5e-38',
      '33554436',
      '2.5e9',
      ...times(3000, randomBitsFloat4),
      ...times(1500, () => shortDecimal(30)),
    ],
  },
  {
    decl: 'numeric',
    values: [
      '0.0',
      '-0.0',
      '0.000',
      '100',
      '10000',
      '100000000',
      '1e4',
      '12345678',
      '0.0001',
      '0.00010',
      '-1.5',
      '1e-20',
      '123.456e10',
      '9999.9999',
      '0.1234',
      '0.12345',
      '1e131071',
      '-1e-16383',
      ...times(500, randomNumeric),
    ],
  },
  { decl: 'numeric(5,-2)', values: ['12345'], minMajor: 15 },
  { decl: 'text', values: ['a\\b', '"', '\\', 'NULL', 'null', '\u000b', 'é'] },
  { decl: '"char"', values: ['é', 'z', '\\', ' '] },
  {
    decl: 'date',
    values: [
      '2000-01-01',
      '1999-12-31',
      '2000-03-01',
      '1900-02-28',
      '10000-01-01',
      '0099-01-01',
      '0001-02-29 BC',
      '0005-02-29 BC',
      '4714-11-24 BC',
    ],
  },
  { decl: 'time', values: ['00:00:00.000001', '12:00:00.1', '23:59:59.5', '01:02:03.000100'] },
  { decl: 'time(2)', values: ['12:34:56.789'] },
  { decl: 'timetz', values: ['12:00:00+00', '12:00:00-00:30', '12:00:00+15:59:59', '00:00:00.000001-15:59:59', '12:00:00+00:00:01'] },
  {
    decl: 'timestamp',
    values: [
      '2000-01-01 00:00:00',
      '1999-12-31 23:59:59.999999',
      '1715-06-01 12:00:00.000001',
      '2286-01-01 00:00:00.5',
      '10000-01-01 00:00:00',
      '4714-11-24 00:00:00 BC',
    ],
  },
  { decl: 'timestamptz(3)', values: ['2024-01-02 03:04:05.123456+05:30', '0001-01-01 00:00:00.5+00 BC'] },
  {
    decl: 'interval',
    values: [
      '1 day',
      '-1 day',
      '1 mon',
      '-1 mon',
      '1 year -1 mon',
      '-1 year +1 mon',
      '1 day -1 hour',
      '-1 day -00:00:00.5',
      '0.5 seconds',
      '-0.000001 seconds',
      '100 years',
      '1 year 1 day',
      '-1 year -1 day 1 hour',
      '1 mon -1 day',
      '99 hours',
      '100 hours',
      '-100 hours',
      { text: '2562047788 hours', minMajor: 15 },
      ...times(500, randomInterval),
    ],
  },
  { decl: 'interval(0)', values: ['1 day 00:00:01.6'] },
  { decl: 'uuid', values: ['01234567-89ab-cdef-0123-456789abcdef'] },
  { decl: 'jsonb', values: ['{"a":{"b":[1,2,{"c":"d"}]},"e":1.0e2, "a": 3}', '[]', '{}', '"\\u00e9\\n"', '1.000'] },
  { decl: 'json', values: ['{"a" :1 }', '"\\u00e9"'] },
  { decl: 'bytea', values: ['\\xff', ''] },
  { decl: 'bit(16)', values: ['1010101010101010'] },
  { decl: 'varbit', values: ['', '1', '10101010101', '111111111'] },
  {
    decl: 'inet',
    values: [
      '192.168.0.1/32',
      '10.0.0.1/8',
      '0.0.0.0/0',
      '255.255.255.255',
      '::',
      '::/0',
      '::ffff:1.2.3.4',
      '::1.2.3.4',
      '::0.0.0.2',
      '1::',
      '1:0:0:1::1',
      '2001:db8::1/64',
      '1:2:3:4:5:6:7:8',
      '1:0:2:0:3:0:4:0',
      '1:0:0:2:0:0:0:3',
      'fe80::1:0:0:1',
      '::ffff:0:0',
      '0:0:0:0:0:1:0:0',
      '::1:2:3:4:5:6',
      '::1:2:3:4:5:6:7',
    ],
  },
  { decl: 'cidr', values: ['192.168.1.0/24', '1.2.3.4/32', '2001:db8::/32', '::/0', '::1/128', '::ffff:1.2.3.0/120'] },
  { decl: 'macaddr', values: ['00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '08-00-2b-01-02-03'] },
  { decl: 'macaddr8', values: ['08:00:2b:01:02:03:04:05', '08:00:2b:01:02:03'] },
  { decl: 'point', values: ['(-0,1e300)', '(0.1,-1.5e-07)'] },
  { decl: 'lseg', values: ['[(1,2),(3,4.5)]'] },
  { decl: 'line', values: ['{1,-1,0.5}'] },
  { decl: 'path', values: ['[(1,2),(3,4)]', '((0,0),(1,1),(2,0))'] },
  { decl: 'polygon', values: ['((0,0),(1,1),(2,0.25))'] },
  { decl: 'circle', values: ['<(1,2),3.5>'] },
  { decl: 'pg_lsn', values: ['0/0', 'FFFFFFFF/FFFFFFFF', '1/A'] },
  { decl: 'xid', values: ['0', '4294967295'] },
  { decl: 'xid8', values: ['0', '18446744073709551615'] },
  { decl: 'cid', values: ['7'] },
  { decl: 'tid', values: ['(0,1)', '(4294967295,65535)'] },
  { decl: 'tsvector', values: ["'a':1A,2B,3C,4 'b\\\\c':5 'it''s' 'é x'", '', 'x:16383', "'a''b' c:1,1,2D"] },
  { decl: 'tsvector[]', values: ['{"a b",""}'] },
  { decl: 'jsonpath', values: ['$.a[*] ? (@ > 1)', 'strict $."x y"', '$'] },
  { decl: 'pg_snapshot', values: ['10:20:10,14,15', '1:1:'] },
  { decl: 'txid_snapshot', values: ['10:20:10,14,15'] },
  { decl: 'int2vector', values: ['1 2 3', '', '-5'] },
  { decl: 'oidvector', values: ['1 4294967295'] },
  { decl: 'xml', values: ['<a>b &amp; c</a>', '<?xml version="1.0"?><a/>', '<?xml version="1.1" standalone="yes"?><a/>', 'text only'] },
  { decl: 'int4range', values: ['[1,5)', 'empty', '(,)', '[1,]', '(,3]'] },
  { decl: 'int8range', values: ['[-9223372036854775808,9223372036854775807)'] },
  { decl: 'numrange', values: ['(1.5,2.50]', '[NaN,NaN]', '(,Infinity)'] },
  { decl: 'tsrange', values: ['["2024-01-01 00:00:00","infinity")', '[,"0044-03-15 12:00:00 BC")'] },
  { decl: 'tstzrange', values: ['["2024-01-01 00:00:00+00",)'] },
  { decl: 'daterange', values: ['[2024-01-01,2024-02-01)', '(-infinity,infinity)'] },
  { decl: 'int4multirange', values: ['{}', '{[1,3),[5,7)}', '{(,)}'] },
  { decl: 'nummultirange', values: ['{[1.5,2.5],(3,)}'] },
  { decl: 'tsmultirange', values: ['{["2024-01-01 00:00:00","2024-01-02 00:00:00")}'] },
  { decl: 'datemultirange', values: ['{[2024-01-01,2024-02-01)}'] },
  { decl: 'floe_mood', values: ['sad'] },
  { decl: 'floe_ints', values: ['{}', '[0:0]={5}'] },
  // Arrays
  {
    decl: 'text[]',
    values: [
      '{null,NULLx,"NULL",nUlL}',
      '{"\u000b"}',
      `{"a\vb","c\fd","e\rf"}`,
      '{"}","{",";","a,b"}',
      '{""}',
      '[-5:-4]={a,b}',
      '{é,"é x"}',
      '{"\\\\\\"",x}',
    ],
  },
  { decl: 'int4[]', values: ['[0:1][2:3]={{1,2},{3,4}}', '{{{1},{2}},{{3},{4}}}', '{NULL}', '{{NULL,NULL}}'] },
  { decl: 'box[]', values: ['{(1,1),(0,0);(2,2),(1,1)}', '{}'] },
  { decl: 'int4range[]', values: ['{"[1,2)",empty,NULL}'] },
  { decl: 'tsrange[]', values: ['{"[\\"2024-01-01 00:00:00\\",)"}'] },
  { decl: 'inet[]', values: ['{::1,10.0.0.0/8}'] },
  { decl: 'numeric[]', values: ['{NaN,-Infinity,0.00,1e-5}'] },
  { decl: 'varbit[]', values: ['{"",1}'] },
  { decl: 'bytea[]', values: ['{"\\\\x","\\\\x00"}'] },
  { decl: '"char"[]', values: ['{"",a,"\\\\",é}'] },
  { decl: 'point[]', values: ['{"(1,2)","(-0,0.5)"}'] },
  { decl: 'jsonb[]', values: ['{"{\\"a b\\": [1, 2]}","\\"\\""}'] },
  { decl: 'interval[]', values: ['{"-1 days +00:00:01","1 mon"}'] },
  { decl: 'floe_mood[]', values: ['{happy,NULL}'] },
  { decl: 'floe_money[]', values: ['{1.50,NULL}'] },
  { decl: 'int4multirange[]', values: ['{"{[1,3)}","{}"}'] },
  { decl: 'oidvector[]', values: ['{"1 2",""}'] },
];
