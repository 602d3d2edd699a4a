/**
 * Snowflake's JSON rules that DuckDB's JSON type does not have, for the emulator:
 *
 * - `sf_json_text(text, parameter)` (PARSE_JSON / TRY_PARSE_JSON): duplicate keys in an object fail the
 *   parse with parameter 's' (the default, strict; TRY_PARSE_JSON gives NULL), and with 'd' the key is
 *   kept once, with its last value; a number with an exponent or more than 38 digits is stored as a
 *   DOUBLE (so it loses digits); other numbers are fixed-point and keep their digits.
 * - `prettyJson`: VARIANT values in result sets, pretty-printed like Snowflake without passing numbers
 *   through JavaScript doubles (a 38-digit number prints all its digits).
 */

/** The JSON text a VARIANT parsed from `text` holds (compact), or null when Snowflake would not parse it. */
export function snowflakeJsonText(text: string, parameter: string): string | null {
  const tree = parse(text, parameter.toLowerCase() === 'd' ? 'last' : 'fail');
  return tree === undefined ? null : compact(tree);
}

/** `text` indented by two spaces per level (JSON.stringify's layout), numbers kept digit for digit. */
export function prettyJson(text: string): string | undefined {
  const tree = parse(text, 'last');
  return tree === undefined ? undefined : pretty(tree, '');
}

type Node =
  { readonly k: 'object'; readonly entries: Map<string, [string, Node]> } | { readonly k: 'array'; readonly items: Node[] } | string;

function parse(text: string, duplicates: 'fail' | 'last'): Node | undefined {
  const p = { s: text, i: 0, duplicates };
  try {
    skipSpace(p);
    const out = value(p);
    skipSpace(p);
    return p.i === text.length ? out : undefined;
  } catch {
    return undefined;
  }
}

function compact(n: Node): string {
  if (typeof n === 'string') return n;
  if (n.k === 'array') return `[${n.items.map(compact).join(',')}]`;
  return `{${[...n.entries.values()].map(([key, v]) => `${key}:${compact(v)}`).join(',')}}`;
}

function pretty(n: Node, indent: string): string {
  if (typeof n === 'string') return n.startsWith('"') ? JSON.stringify(JSON.parse(n)) : n;
  const inner = indent + '  ';
  if (n.k === 'array') return n.items.length === 0 ? '[]' : `[\n${n.items.map((v) => inner + pretty(v, inner)).join(',\n')}\n${indent}]`;
  const entries = [...n.entries.values()];
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([key, v]) => `${inner}${JSON.stringify(JSON.parse(key))}: ${pretty(v, inner)}`).join(',\n')}\n${indent}}`;
}

interface Cursor {
  readonly s: string;
  i: number;
  readonly duplicates: 'fail' | 'last';
}

const fail = (): never => {
  throw new Error('invalid JSON');
};

function skipSpace(p: Cursor): void {
  while (p.i < p.s.length && ' \t\n\r'.includes(p.s[p.i]!)) p.i++;
}

function value(p: Cursor): Node {
  const ch = p.s[p.i];
  if (ch === '{') return object(p);
  if (ch === '[') return array(p);
  if (ch === '"') return string(p);
  for (const word of ['true', 'false', 'null']) {
    if (p.s.startsWith(word, p.i)) {
      p.i += word.length;
      return word;
    }
  }
  return number(p);
}

function object(p: Cursor): Node {
  p.i++;
  const entries = new Map<string, [string, Node]>();
  skipSpace(p);
  if (p.s[p.i] === '}') {
    p.i++;
    return { k: 'object', entries };
  }
  for (;;) {
    skipSpace(p);
    if (p.s[p.i] !== '"') fail();
    const key = string(p);
    skipSpace(p);
    if (p.s[p.i++] !== ':') fail();
    skipSpace(p);
    const v = value(p);
    const name = JSON.parse(key) as string;
    if (entries.has(name) && p.duplicates === 'fail') fail();
    entries.delete(name);
    entries.set(name, [key, v]);
    skipSpace(p);
    const sep = p.s[p.i++];
    if (sep === '}') return { k: 'object', entries };
    if (sep !== ',') fail();
  }
}

function array(p: Cursor): Node {
  p.i++;
  const items: Node[] = [];
  skipSpace(p);
  if (p.s[p.i] === ']') {
    p.i++;
    return { k: 'array', items };
  }
  for (;;) {
    skipSpace(p);
    items.push(value(p));
    skipSpace(p);
    const sep = p.s[p.i++];
    if (sep === ']') return { k: 'array', items };
    if (sep !== ',') fail();
  }
}

function string(p: Cursor): string {
  const start = p.i++;
  while (p.i < p.s.length && p.s[p.i] !== '"') p.i += p.s[p.i] === '\\' ? 2 : 1;
  if (p.i >= p.s.length) fail();
  p.i++;
  const raw = p.s.slice(start, p.i);
  JSON.parse(raw); // validates the escapes
  return raw;
}

function number(p: Cursor): string {
  const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(p.s.slice(p.i, p.i + 1024));
  if (!m) return fail();
  p.i += m[0].length;
  const digits = m[0]
    .replace(/^-/, '')
    .replace(/[eE].*$/, '')
    .replace('.', '')
    .replace(/^0+(?=\d)/, '');
  if (m[2] === undefined && digits.length <= 38) return m[0];
  return JSON.stringify(Number(m[0]));
}
