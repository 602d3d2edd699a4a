import { DuckDBInstance } from '@duckdb/node-api';

/** Runs one query on a DuckDB file that no other process holds open, and closes it again. */
export async function duck(path: string, sql: string): Promise<unknown[][]> {
  const inst = await DuckDBInstance.create(path);
  const c = await inst.connect();
  try {
    return (await c.runAndReadAll(sql)).getRowsJS() as unknown[][];
  } finally {
    c.closeSync();
    inst.closeSync();
  }
}
