import { FloeError } from '../errors.js';
import type { DeleteMode, Destination } from '../destination/destination.js';
import { DuckDbDestination, pseudoFilesystem } from '../destination/duckdb/duckdb-destination.js';
import { resolve } from 'node:path';
import { createSnowflakeDestination } from '../destination/snowflake/snowflake-destination.js';
import { parseSnowflakeUrl } from '../destination/snowflake/config.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import type { Registry } from 'prom-client';

/**
 * `snowflake://USER@ORG-ACCOUNT/DATABASE/SCHEMA?...` (see destination/snowflake/config.ts), or
 * `duckdb:./path.duckdb`, `duckdb:///abs/path.duckdb` or `duckdb::memory:`, optionally with
 * `?memory_limit=256MB` (DuckDB's memory cap; default 128MB) and `&threads=2` (DuckDB's threads; default 1).
 */
export function parseDestination(
  url: string,
  options: { deleteMode: DeleteMode; log?: Logger; registry?: Registry; secrets?: Readonly<Record<string, string>> },
): Destination {
  if (/^duckdb:(\/\/)?(\?|$)/.test(url)) {
    throw new FloeError('config', 'the DuckDB destination names no file', { hint: 'use --destination duckdb:./warehouse.duckdb' });
  }
  const m = /^duckdb:(?:\/\/)?([^?]+)(?:\?(.*))?$/.exec(url);
  if (m) {
    const path = m[1]!;
    const params = new URLSearchParams(m[2] ?? '');
    for (const key of params.keys()) {
      if (key !== 'memory_limit' && key !== 'threads') {
        throw new FloeError('config', `unknown DuckDB destination parameter "${key}"`, {
          hint: 'the DuckDB destination takes memory_limit and threads',
        });
      }
    }
    const memoryLimit = params.get('memory_limit') ?? undefined;
    if (memoryLimit !== undefined && !/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i.test(memoryLimit)) {
      throw new FloeError('config', `invalid memory_limit "${memoryLimit}"`, { hint: 'use a size such as 512MB or 2GB' });
    }
    const threadsText = params.get('threads') ?? undefined;
    if (threadsText !== undefined && !/^[1-9]\d{0,2}$/.test(threadsText)) {
      throw new FloeError('config', `invalid threads "${threadsText}"`, { hint: 'use a whole number of DuckDB threads such as 1 or 2' });
    }
    const threads = threadsText === undefined ? undefined : Number(threadsText);
    const pseudo = path === ':memory:' ? undefined : pseudoFilesystem(resolve(path));
    if (pseudo) {
      throw new FloeError('config', `the DuckDB file ${resolve(path)} is under ${pseudo}, a kernel filesystem`, {
        hint: 'choose a path on a disk',
      });
    }
    return new DuckDbDestination({ path, deleteMode: options.deleteMode, memoryLimit, threads, log: options.log ?? silentLogger });
  }
  if (url.startsWith('snowflake://')) {
    return createSnowflakeDestination(parseSnowflakeUrl(url, process.env, options.secrets), {
      log: options.log ?? silentLogger,
      deleteMode: options.deleteMode,
      registry: options.registry,
    });
  }
  throw new FloeError('config', `unsupported destination "${url.split(':')[0]}"`, {
    hint: 'use --destination duckdb:./warehouse.duckdb or snowflake://USER@ORG-ACCOUNT/DATABASE/SCHEMA?...',
  });
}
