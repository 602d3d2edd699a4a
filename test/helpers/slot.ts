import type { TestDatabase } from '../harness/database.js';
import { waitFor } from './wait.js';

/**
 * Waits until `slot` has confirmed everything written so far. The target is the WAL insert position: the
 * test clusters commit asynchronously (synchronous_commit off) and the walsender sends WAL once it is
 * flushed, so pg_current_wal_lsn() (the write position) can be behind the last commits, and a wait on it
 * could end before floe even received them.
 */
export async function waitForSlotPastWrites(db: TestDatabase, slot: string, timeoutMs = 60_000): Promise<void> {
  const [{ lsn }] = (await db.sql<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)) as [{ lsn: string }];
  await waitFor(
    `slot ${slot} to confirm ${lsn}`,
    async () =>
      (await db.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn`, [slot, lsn]))
        .length === 1,
    timeoutMs,
  );
}

/**
 * The START_REPLICATION command a pipeline's walsender runs, as the server recorded it (floe names its
 * replication connection floe-<pipeline>); undefined while none streams.
 */
export async function walsenderCommand(db: TestDatabase, pipeline: string): Promise<string | undefined> {
  const rows = await db.sql<{ query: string }>(
    `SELECT query FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1 AND query LIKE 'START_REPLICATION%'`,
    [`floe-${pipeline}`],
  );
  return rows[0]?.query;
}
