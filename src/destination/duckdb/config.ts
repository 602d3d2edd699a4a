/**
 * The DuckDB destination's URL: `duckdb:./path.duckdb`, `duckdb:///abs/path.duckdb` or `duckdb::memory:`,
 * optionally with `?memory_limit=256MB`, `&threads=2`, `&checkpoint_threshold=64MB` and
 * `&journal_snapshot=true`. One parser for
 * every way a destination is given (CLI flag, control-plane row, HTTP API, config file), so each says
 * the same thing about the same mistake.
 */
import { FloeError, printable } from '../../errors.js';

export interface DuckDbUrl {
  readonly path: string;
  readonly memoryLimit?: string;
  readonly threads?: number;
  readonly checkpointThreshold?: string;
  readonly journalSnapshot?: boolean;
}

const PARAMETERS = ['memory_limit', 'threads', 'checkpoint_threshold', 'journal_snapshot'] as const;
const SIZE = /^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i;

/** Parses a `duckdb:` URL; anything else is not DuckDB's (undefined). */
export function parseDuckDbUrl(url: string): DuckDbUrl | undefined {
  if (!url.startsWith('duckdb:')) return undefined;
  const m = /^duckdb:(\/\/)?(\?|$)/.test(url) ? null : /^duckdb:(?:\/\/)?([^?]+)(?:\?(.*))?$/.exec(url);
  if (!m) throw new FloeError('config', 'the DuckDB destination names no file', { hint: 'use --destination duckdb:./warehouse.duckdb' });
  const params = new URLSearchParams(m[2] ?? '');
  for (const key of params.keys()) {
    if (!(PARAMETERS as readonly string[]).includes(key)) {
      throw new FloeError('config', `unknown DuckDB destination parameter "${printable(key)}"`, {
        hint: `the DuckDB destination takes ${PARAMETERS.join(', ')}`,
      });
    }
  }
  const size = (key: string): string | undefined => {
    const value = params.get(key) ?? undefined;
    if (value !== undefined && !SIZE.test(value)) {
      throw new FloeError('config', `invalid ${key} "${printable(value)}"`, { hint: 'use a size such as 512MB or 2GB' });
    }
    return value;
  };
  const threads = params.get('threads') ?? undefined;
  if (threads !== undefined && !/^[1-9]\d{0,2}$/.test(threads)) {
    throw new FloeError('config', `invalid threads "${printable(threads)}"`, {
      hint: 'use a whole number of DuckDB threads such as 1 or 2',
    });
  }
  const journalSnapshot = params.get('journal_snapshot') ?? undefined;
  if (journalSnapshot !== undefined && journalSnapshot !== 'true' && journalSnapshot !== 'false') {
    throw new FloeError('config', `invalid journal_snapshot "${printable(journalSnapshot)}"`, { hint: 'use true or false' });
  }
  return {
    path: m[1]!,
    memoryLimit: size('memory_limit'),
    threads: threads === undefined ? undefined : Number(threads),
    checkpointThreshold: size('checkpoint_threshold'),
    journalSnapshot: journalSnapshot === undefined ? undefined : journalSnapshot === 'true',
  };
}
