/**
 * One WAL monitor per source across `floe run` workers: a lease row per source in the control plane
 * (`floe.source_monitor`). The worker holding a source's lease checks it and raises its alerts; every other
 * worker running a pipeline on that source skips it, so N workers never mean N times the queries or alerts.
 *
 * - A worker takes the lease when it is free or expired, and renews it at each check (`claim`). It lasts
 *   `leaseMs` (three monitor intervals, at least 30 s in floe run), so a holder that dies is replaced
 *   at most that long after its last check, by the next worker whose monitor checks the source.
 * - `release` (the last pipeline on the source stopped here, or shutdown) expires it at once.
 * - The holder also writes the figures of each check there (for `floe status`: pg_wal size and the worst
 *   slot) and the slot figures of every pipeline on the source, wherever the pipeline runs.
 *
 * Time comes from the control-plane server (`now()`), so workers' clocks do not matter. The lease has no
 * fencing token: two watchers for a moment (a holder paused longer than the lease) cost at most a
 * duplicate alert, never data.
 */
import type { Queryable } from '../control/repository.js';
import type { MonitoredSource, SourceClaim, SourceHealth, SlotHealth } from './wal-monitor.js';

export interface SourceMonitorLeaseOptions {
  /** A pool on the control-plane database. */
  readonly db: Queryable;
  /** This worker's id. */
  readonly worker: string;
  /** How long a claim lasts without renewal. */
  readonly leaseMs: number;
}

/** What `floe status` shows of a source's worst slot (the row's `worst_slot`). */
export interface WorstSlot {
  readonly slot: string;
  readonly type: 'logical' | 'physical';
  readonly floe: boolean;
  readonly active: boolean;
  readonly owner: string | null;
  readonly retained_bytes: number | null;
  readonly wal_status: string;
}

export class SourceMonitorLease implements SourceClaim {
  readonly #o: SourceMonitorLeaseOptions;

  constructor(options: SourceMonitorLeaseOptions) {
    this.#o = options;
  }

  async claim(source: MonitoredSource): Promise<{ held: boolean; holder: string | null; floeSlots: readonly string[] }> {
    // The CTE's insert-or-renew only succeeds for the holder or when the lease ran out; the outer select
    // sees the row as it was before the statement, which is the other holder when we did not take it.
    const r = await this.#o.db.query<{ taken: string | null; holder: string | null; slots: string[] }>(
      `WITH taken AS (
         INSERT INTO floe.source_monitor AS m (source_name, worker, lease_until)
         VALUES ($1, $2, now() + $3 * interval '1 millisecond')
         ON CONFLICT (source_name) DO UPDATE SET worker = EXCLUDED.worker, lease_until = EXCLUDED.lease_until
          WHERE m.worker = EXCLUDED.worker OR m.lease_until < now()
         RETURNING worker)
       SELECT (SELECT worker FROM taken) AS taken,
              (SELECT worker FROM floe.source_monitor WHERE source_name = $1) AS holder,
              array(SELECT p.slot_name FROM floe.pipeline p JOIN floe.source s ON s.id = p.source_id WHERE s.name = $1) AS slots`,
      [source.id, this.#o.worker, this.#o.leaseMs],
    );
    const row = r.rows[0]!;
    const held = row.taken === this.#o.worker;
    return { held, holder: held ? this.#o.worker : row.holder, floeSlots: row.slots };
  }

  async report(health: SourceHealth): Promise<void> {
    const worst = worstSlot(health.slots);
    await this.#o.db.query(
      `UPDATE floe.source_monitor SET checked_at = $3, wal_dir_bytes = $4, wal_keep_bytes = $5, archive_failing = $6, worst_slot = $7
        WHERE source_name = $1 AND worker = $2`,
      [health.id, this.#o.worker, health.checkedAt, health.walDirBytes, health.walKeepSizeBytes, health.archiver?.failing ?? null, worst],
    );
    // Every pipeline on the source gets its slot's figures, wherever it runs: only the holder measures them.
    const figures = health.slots
      .filter((s) => s.floe)
      .map((s) => ({ slot: s.slot, retained: s.retainedBytes, status: s.walStatus, lag: s.confirmedFlushLagSeconds }));
    if (figures.length === 0) return;
    await this.#o.db.query(
      `UPDATE floe.pipeline p SET slot_retained_bytes = x.retained, slot_wal_status = x.status, lag_seconds = x.lag, monitored_at = now()
         FROM floe.source s, jsonb_to_recordset($2::jsonb) AS x(slot text, retained bigint, status text, lag double precision)
        WHERE s.id = p.source_id AND s.name = $1 AND p.slot_name = x.slot`,
      [health.id, JSON.stringify(figures)],
    );
  }

  async release(sourceId: string): Promise<void> {
    await this.#o.db.query(`UPDATE floe.source_monitor SET lease_until = '-infinity' WHERE source_name = $1 AND worker = $2`, [
      sourceId,
      this.#o.worker,
    ]);
  }
}

/** A lost slot first (the server already dropped its WAL), then the one retaining the most WAL. */
export function worstSlot(slots: readonly SlotHealth[]): WorstSlot | null {
  const real = slots.filter((s) => s.walStatus !== 'missing');
  const pick = real.find((s) => s.walStatus === 'lost') ?? [...real].sort((a, b) => (b.retainedBytes ?? -1) - (a.retainedBytes ?? -1))[0];
  if (!pick) return null;
  return {
    slot: pick.slot,
    type: pick.slotType,
    floe: pick.floe,
    active: pick.active,
    owner: pick.owner,
    retained_bytes: pick.retainedBytes,
    wal_status: pick.walStatus,
  };
}
