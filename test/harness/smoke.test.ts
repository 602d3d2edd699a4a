import { describe, it, expect } from 'vitest';
import { testClusters, createTestDatabase } from './database.js';

describe.each(testClusters('every'))('harness on PostgreSQL $major', (cluster) => {
  it('gives a logical-replication-ready database per file', async () => {
    const db = await createTestDatabase(cluster);
    const [row] = await db.sql<{ wal_level: string; v: string }>(
      `SELECT current_setting('wal_level') AS wal_level, current_setting('server_version_num') AS v`,
    );
    expect(row?.wal_level).toBe('logical');
    expect(Math.floor(Number(row?.v) / 10000)).toBe(cluster.major);
    await db.drop();
  });
});
