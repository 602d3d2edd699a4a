/**
 * Lexer for the Snowflake SQL subset the emulator understands. It keeps every
 * token's source text so a statement can be echoed back verbatim (error
 * messages, SHOW PIPES definitions) and records positions for Snowflake-style
 * "error line 1 at position N" messages.
 */
export type TokenKind =
  | 'word' // unquoted identifier or keyword
  | 'quoted' // "double-quoted identifier"
  | 'string' // 'string literal'
  | 'number'
  | 'param' // $1, ?, :name is not supported
  | 'op' // punctuation and operators
  | 'eof';

export interface Token {
  readonly kind: TokenKind;
  /** The source text of the token. */
  readonly text: string;
  /** For 'word': the upper-cased text; for 'quoted'/'string': the unescaped value. */
  readonly value: string;
  readonly pos: number;
}

export class SqlSyntaxError extends Error {
  constructor(
    message: string,
    readonly pos: number,
  ) {
    super(message);
  }
}

const OPS = [
  '::',
  '<>',
  '!=',
  '<=',
  '>=',
  '||',
  '=>',
  '(',
  ')',
  ',',
  '.',
  ';',
  ':',
  '=',
  '<',
  '>',
  '+',
  '-',
  '*',
  '/',
  '%',
  '[',
  ']',
  '{',
  '}',
];

export function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && sql[i + 1] === '/') {
      while (i < n && sql[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      if (end < 0) throw new SqlSyntaxError('unterminated comment', i);
      i = end + 2;
      continue;
    }
    const start = i;
    if (c === "'") {
      let value = '';
      i++;
      for (;;) {
        if (i >= n) throw new SqlSyntaxError('unterminated string literal', start);
        const d = sql[i]!;
        if (d === "'" && sql[i + 1] === "'") {
          value += "'";
          i += 2;
        } else if (d === "'") {
          i++;
          break;
        } else if (d === '\\' && i + 1 < n) {
          // Snowflake string literals accept backslash escapes.
          const e = sql[i + 1]!;
          value += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : e === '0' ? '\0' : e;
          i += 2;
        } else {
          value += d;
          i++;
        }
      }
      out.push({ kind: 'string', text: sql.slice(start, i), value, pos: start });
      continue;
    }
    if (c === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= n) throw new SqlSyntaxError('unterminated quoted identifier', start);
        const d = sql[i]!;
        if (d === '"' && sql[i + 1] === '"') {
          value += '"';
          i += 2;
        } else if (d === '"') {
          i++;
          break;
        } else {
          value += d;
          i++;
        }
      }
      if (value === '') throw new SqlSyntaxError('empty quoted identifier', start);
      out.push({ kind: 'quoted', text: sql.slice(start, i), value, pos: start });
      continue;
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      while (i < n && /[0-9]/.test(sql[i]!)) i++;
      if (sql[i] === '.' && /[0-9]/.test(sql[i + 1] ?? '')) {
        i++;
        while (i < n && /[0-9]/.test(sql[i]!)) i++;
      } else if (sql[i] === '.' && !/[A-Za-z_]/.test(sql[i + 1] ?? '')) {
        i++;
      }
      if (/[eE]/.test(sql[i] ?? '') && /[-+0-9]/.test(sql[i + 1] ?? '')) {
        i += 2;
        while (i < n && /[0-9]/.test(sql[i]!)) i++;
      }
      const text = sql.slice(start, i);
      out.push({ kind: 'number', text, value: text, pos: start });
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      while (i < n && /[A-Za-z0-9_$]/.test(sql[i]!)) i++;
      const text = sql.slice(start, i);
      out.push({ kind: 'word', text, value: text.toUpperCase(), pos: start });
      continue;
    }
    if (c === '$' && /[0-9]/.test(sql[i + 1] ?? '')) {
      i++;
      while (i < n && /[0-9]/.test(sql[i]!)) i++;
      const text = sql.slice(start, i);
      out.push({ kind: 'param', text, value: text, pos: start });
      continue;
    }
    if (c === '?') {
      i++;
      out.push({ kind: 'param', text: '?', value: '?', pos: start });
      continue;
    }
    const op = OPS.find((o) => sql.startsWith(o, i));
    if (!op) throw new SqlSyntaxError(`unexpected '${c}'`, i);
    i += op.length;
    out.push({ kind: 'op', text: op, value: op, pos: start });
  }
  out.push({ kind: 'eof', text: '', value: '', pos: n });
  return out;
}

/** One statement of a request: its tokens (without the `;`) and its source text. */
export interface StatementText {
  readonly tokens: Token[];
  readonly text: string;
  readonly pos: number;
}

/** Splits a request on top-level `;` (empty statements are dropped, as Snowflake does). */
export function splitStatements(sql: string): StatementText[] {
  const tokens = tokenize(sql);
  const out: StatementText[] = [];
  let cur: Token[] = [];
  const flush = (endPos: number) => {
    if (cur.length > 0) {
      const pos = cur[0]!.pos;
      out.push({ tokens: [...cur, { kind: 'eof', text: '', value: '', pos: endPos }], text: sql.slice(pos, endPos).trim(), pos });
    }
    cur = [];
  };
  for (const t of tokens) {
    if (t.kind === 'eof') flush(t.pos);
    else if (t.kind === 'op' && t.value === ';') flush(t.pos);
    else cur.push(t);
  }
  return out;
}

/** Renders an identifier for DuckDB (always quoted, so case and reserved words survive). */
export function quoteId(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteStr(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
