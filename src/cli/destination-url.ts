import { FloeError } from '../errors.js';
import type { DeleteMode, Destination } from '../destination/destination.js';
import { DuckDbDestination, pseudoFilesystem } from '../destination/duckdb/duckdb-destination.js';
import { parseDuckDbUrl } from '../destination/duckdb/config.js';
import { resolve } from 'node:path';
import { createSnowflakeDestination } from '../destination/snowflake/snowflake-destination.js';
import { parseSnowflakeUrl } from '../destination/snowflake/config.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import type { Registry } from 'prom-client';

/**
 * `snowflake://USER@ORG-ACCOUNT/DATABASE/SCHEMA?...` (see destination/snowflake/config.ts), or a DuckDB
 * file (see destination/duckdb/config.ts).
 */
export function parseDestination(
  url: string,
  options: { deleteMode: DeleteMode; log?: Logger; registry?: Registry; secrets?: Readonly<Record<string, string>> },
): Destination {
  const duckdb = parseDuckDbUrl(url);
  if (duckdb) {
    const { path, ...settings } = duckdb;
    const pseudo = path === ':memory:' ? undefined : pseudoFilesystem(resolve(path));
    if (pseudo) {
      throw new FloeError('config', `the DuckDB file ${resolve(path)} is under ${pseudo}, a kernel filesystem`, {
        hint: 'choose a path on a disk',
      });
    }
    return new DuckDbDestination({ path, ...settings, deleteMode: options.deleteMode, log: options.log ?? silentLogger });
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
