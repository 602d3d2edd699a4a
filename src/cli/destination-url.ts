import { FloeError } from '../errors.js';
import type { DeleteMode, Destination } from '../destination/destination.js';
import { DuckDbDestination } from '../destination/duckdb/duckdb-destination.js';

/** `duckdb:./path.duckdb`, `duckdb:///abs/path.duckdb` or `duckdb::memory:`. */
export function parseDestination(url: string, options: { deleteMode: DeleteMode }): Destination {
  const m = /^duckdb:(?:\/\/)?(.+)$/.exec(url);
  if (m) {
    const path = m[1]!;
    return new DuckDbDestination({ path, deleteMode: options.deleteMode });
  }
  if (url.startsWith('snowflake://')) {
    throw new FloeError('config', 'the Snowflake destination is not available in this build yet', {
      hint: 'use --destination duckdb:./warehouse.duckdb',
    });
  }
  throw new FloeError('config', `unsupported destination "${url.split(':')[0]}"`, {
    hint: 'use --destination duckdb:./warehouse.duckdb',
  });
}
