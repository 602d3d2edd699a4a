/**
 * Source names a destination cannot keep apart. PostgreSQL names are case-sensitive; DuckDB compares
 * identifiers case-insensitively and floe's Snowflake objects are upper-cased, so `"Orders"` and
 * `orders` (tables) or `V` and `v` (columns) would land in one object and silently mix their rows.
 * floe's own columns start with `_floe_`: a source column of that name would collide with them. Both
 * destinations refuse such tables with the same one-line error, before a row is written.
 */
import { FloeError } from '../errors.js';
import { qualifiedName, type TableSchema } from '../model.js';

/** Prefix of floe's bookkeeping columns in journals and targets (compared case-insensitively). */
export const RESERVED_COLUMN_PREFIX = '_floe_';

/**
 * Checks a table's column names for a destination whose names are `fold(name)`: a column named with
 * floe's reserved prefix, or two columns folding to one name, is refused.
 */
export function checkColumnNames(table: TableSchema, destination: string, fold: (name: string) => string): void {
  const source = qualifiedName(table);
  const reserved = table.columns.find((c) => c.name.toLowerCase().startsWith(RESERVED_COLUMN_PREFIX));
  if (reserved) {
    throw new FloeError(
      'schema',
      `column "${reserved.name}" of ${source} uses the prefix ${RESERVED_COLUMN_PREFIX}, which floe reserves for its own columns`,
      {
        hint: 'rename the column at the source, or leave it out of the publication with a column list (PostgreSQL 15+)',
        retry: 'manual',
      },
    );
  }
  const seen = new Map<string, string>();
  for (const c of table.columns) {
    const other = seen.get(fold(c.name));
    if (other !== undefined) {
      throw new FloeError(
        'schema',
        `columns "${other}" and "${c.name}" of ${source} map to the same ${destination} column ${fold(c.name)}`,
        {
          hint: 'rename one of the columns at the source, or leave one out of the publication with a column list (PostgreSQL 15+)',
          retry: 'manual',
        },
      );
    }
    seen.set(fold(c.name), c.name);
  }
}

/** The error for two source tables that fold to one destination table. */
export function tableNameClash(a: string, b: string, destination: string, object: string): FloeError {
  return new FloeError('schema', `${a} and ${b} map to the same ${destination} table ${object}`, {
    hint: `rename one of the tables at the source, or leave one out of the publication`,
    retry: 'manual',
  });
}
