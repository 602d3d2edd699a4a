/** Table schemas built by hand, for destination tests that run without PostgreSQL. */
import { mapColumnType } from '../../src/schema/type-map.js';
import type { TableSchema } from '../../src/model.js';

/** Type OIDs of the built-in types these tests use. */
export const OID = { INT8: 20, BYTEA: 17, INT4: 23, TEXT: 25, TEXT_ARRAY: 1009, TIMESTAMPTZ: 1184, NUMERIC: 1700 } as const;

/** `public.<name>` with the given columns (name, type OID), keyed by the first. */
export function keyedTable(name: string, columns: readonly (readonly [string, number])[]): TableSchema {
  return {
    relationId: 1,
    schema: 'public',
    name,
    replicaIdentity: 'd',
    hasKey: true,
    columns: columns.map(([col, oid], i) => ({
      name: col,
      typeOid: oid,
      typeMod: -1,
      type: mapColumnType(oid, -1, () => undefined),
      isKey: i === 0,
    })),
  };
}
