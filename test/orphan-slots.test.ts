/**
 * A destination that fails on the first start (here a DuckDB file that cannot be created) leaves no
 * replication slot behind: the slot that start created is dropped, and the error says so.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { runFloe } from './helpers/cli.js';

const cluster = testClusters()[0]!;

describe('slots of a failed first start', () => {
  let db: TestDatabase;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'orphan');
    await db.sql(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'); CREATE PUBLICATION pub FOR TABLE t`);
  });
  afterAll(async () => {
    await db.dropSlot('floe_orphan').catch(() => undefined);
    await db.drop();
    dir.remove();
  });

  it('are dropped when the destination cannot be opened, and the error says so', async () => {
    // A file where the DuckDB file's directory should be: the destination fails after the slot exists.
    const blocker = join(dir.path, 'not-a-dir');
    writeFileSync(blocker, 'x');
    const started = Date.now();
    const r = await runFloe(
      ['replicate', '--source', db.url, '--publication', 'pub', '--slot', 'floe_orphan', '--state', 'memory', '--metrics-port', '0'].concat(
        ['--destination', `duckdb:${join(blocker, 'w.duckdb')}`],
      ),
      {},
      120_000,
    );
    expect(r.code, r.stderr).not.toBe(0);
    const line = r.stderr.split('\n').find((l) => l.startsWith('floe: error:'));
    expect(line, r.stderr).toMatch(/the replication slot "floe_orphan" this start created was dropped/);
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(await db.sql(`SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`)).toEqual([]);
  });
});
