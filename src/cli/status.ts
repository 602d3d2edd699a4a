import { Command } from 'commander';
import type pg from 'pg';
import { listDestinations, listPipelineTables, listPipelines, listSources, listWorkers } from '../control/repository.js';
import { databaseUrlOption, formatTable, print, withControlPlane } from './control-plane.js';
import type { WorstSlot } from '../monitor/source-lease.js';

/**
 * `floe status --json` output. Field names are stable: scripts and dashboards read them.
 * Times are ISO 8601 strings, LSNs `X/Y`, absent values null.
 */
export interface StatusReport {
  readonly pipelines: readonly PipelineStatusEntry[];
  readonly workers: readonly WorkerStatusEntry[];
  /** Sources a WAL monitor has watched (floe.source_monitor), by name. */
  readonly sources: readonly SourceStatusEntry[];
}

/** The WAL monitor's last check of a source, written by the worker that watches it. */
export interface SourceStatusEntry {
  readonly name: string;
  /** The worker holding the source's monitor lease; null when it expired (no worker watches it now). */
  readonly watched_by: string | null;
  readonly checked_at: string | null;
  readonly wal_dir_bytes: number | null;
  readonly wal_keep_size_bytes: number | null;
  readonly archive_failing: boolean | null;
  /** The slot retaining the most WAL (a lost slot first), floe's or not. */
  readonly worst_slot: WorstSlot | null;
}

export interface PipelineStatusEntry {
  readonly name: string;
  readonly source: string | null;
  readonly destination: string | null;
  readonly publication: string;
  readonly slot: string;
  /** Requested: START, PAUSE, or DELETE (delete requested with --drop-slot, not done yet). */
  readonly status: 'START' | 'PAUSE' | 'DELETE';
  /** Reported by the worker: starting, snapshotting, streaming, paused, failed, stopped. */
  readonly state: string;
  readonly lag_bytes: number | null;
  /** The destination's circuit breaker (closed, half-open, open) while the pipeline runs; null otherwise. */
  readonly destination_breaker: string | null;
  /** From the WAL monitor of the worker watching the pipeline's source (as the floe_slot_* metrics): WAL the slot retains, its wal_status, confirmed-flush lag in seconds, and when it was measured. */
  readonly slot_retained_bytes: number | null;
  readonly slot_wal_status: string | null;
  readonly lag_seconds: number | null;
  readonly monitored_at: string | null;
  readonly durable_lsn: string | null;
  readonly last_error: string | null;
  readonly last_error_at: string | null;
  readonly owner_worker: string | null;
  readonly config_version: number;
  /** Table counts by state (`pending`: no state reported yet), plus skip and resync controls. */
  readonly tables: {
    readonly total: number;
    readonly by_state: Readonly<Record<string, number>>;
    readonly skipped: number;
    readonly resync_requested: number;
  };
}

export interface WorkerStatusEntry {
  readonly id: string;
  readonly host: string | null;
  readonly pid: number | null;
  readonly started_at: string | null;
  readonly heartbeat_at: string | null;
  readonly heartbeat_age_seconds: number | null;
  readonly max_pipelines: number | null;
  /** Pipelines whose owner_worker is this worker. */
  readonly pipelines: number;
}

export function statusCommand(): Command {
  return new Command('status')
    .description('every pipeline: requested status, state, lag, durable LSN, last error, owner worker; and the workers')
    .option('--json', 'machine-readable output (stable field names)')
    .addOption(databaseUrlOption())
    .action(async (opts: { json?: boolean; databaseUrl?: string }) => {
      const report = await withControlPlane(opts.databaseUrl, (db) => collectStatus(db));
      print(opts.json ? JSON.stringify(report, null, 2) : formatStatus(report));
    });
}

export async function collectStatus(db: pg.ClientBase): Promise<StatusReport> {
  // One snapshot for all reads, so counts and rows agree.
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const [pipelines, sources, destinations, tables, workers, now] = [
      await listPipelines(db),
      await listSources(db),
      await listDestinations(db),
      await listPipelineTables(db),
      await listWorkers(db),
      (await db.query<{ now: Date }>('SELECT now()')).rows[0]!.now,
    ];
    const monitored = await listMonitoredSources(db);
    const sourceNames = new Map(sources.map((s) => [s.id, s.name]));
    const destinationNames = new Map(destinations.map((d) => [d.id, d.name]));
    const entries: PipelineStatusEntry[] = pipelines.map((p) => {
      const own = tables.filter((t) => t.pipelineId === p.id);
      const byState: Record<string, number> = {};
      for (const t of own) byState[t.state ?? 'pending'] = (byState[t.state ?? 'pending'] ?? 0) + 1;
      return {
        name: p.name,
        source: sourceNames.get(p.sourceId) ?? null,
        destination: destinationNames.get(p.destinationId) ?? null,
        publication: p.publication,
        slot: p.slotName,
        status: p.deleteRequestedAt ? 'DELETE' : p.status === 'START' ? 'START' : 'PAUSE',
        state: p.state,
        lag_bytes: p.lagBytes,
        destination_breaker: p.destinationBreaker,
        slot_retained_bytes: p.slotRetainedBytes,
        slot_wal_status: p.slotWalStatus,
        lag_seconds: p.lagSeconds,
        monitored_at: p.monitoredAt?.toISOString() ?? null,
        durable_lsn: p.durableLsn,
        last_error: p.lastError,
        last_error_at: p.lastErrorAt?.toISOString() ?? null,
        owner_worker: p.ownerWorker,
        config_version: p.configVersion,
        tables: {
          total: own.length,
          by_state: byState,
          skipped: own.filter((t) => t.skip).length,
          resync_requested: own.filter((t) => t.resyncRequestedAt !== null).length,
        },
      };
    });
    return {
      pipelines: entries,
      workers: workers.map((w) => ({
        id: w.id,
        host: w.host,
        pid: w.pid,
        started_at: w.startedAt?.toISOString() ?? null,
        heartbeat_at: w.heartbeatAt?.toISOString() ?? null,
        heartbeat_age_seconds: w.heartbeatAt ? Math.max(0, Math.round((now.getTime() - w.heartbeatAt.getTime()) / 1000)) : null,
        max_pipelines: w.maxPipelines,
        pipelines: pipelines.filter((p) => p.ownerWorker === w.id).length,
      })),
      sources: monitored,
    };
  } finally {
    await db.query('COMMIT').catch(() => undefined);
  }
}

async function listMonitoredSources(db: pg.ClientBase): Promise<SourceStatusEntry[]> {
  const r = await db.query<{
    source_name: string;
    watched_by: string | null;
    checked_at: Date | null;
    wal_dir_bytes: string | null;
    wal_keep_bytes: string | null;
    archive_failing: boolean | null;
    worst_slot: WorstSlot | null;
  }>(
    `SELECT source_name, CASE WHEN lease_until > now() THEN worker END AS watched_by, checked_at, wal_dir_bytes::text,
            wal_keep_bytes::text, archive_failing, worst_slot
       FROM floe.source_monitor ORDER BY source_name`,
  );
  const num = (v: string | null) => (v === null ? null : Number(v));
  return r.rows.map((row) => ({
    name: row.source_name,
    watched_by: row.watched_by,
    checked_at: row.checked_at?.toISOString() ?? null,
    wal_dir_bytes: num(row.wal_dir_bytes),
    wal_keep_size_bytes: num(row.wal_keep_bytes),
    archive_failing: row.archive_failing,
    worst_slot: row.worst_slot,
  }));
}

/** The worst slot in one cell: name, retained WAL, whose it is and what it is doing. */
function formatWorstSlot(w: WorstSlot | null): string {
  if (!w) return '-';
  const status = w.wal_status !== 'reserved' ? ` ${w.wal_status}` : '';
  const retained = w.retained_bytes === null ? '' : ` ${formatBytes(w.retained_bytes)}`;
  const who = `${w.floe ? 'floe' : 'not floe'}, ${w.type}, ${w.active ? `active${w.owner ? ` ${w.owner}` : ''}` : 'inactive'}`;
  return `${w.slot}${retained}${status} (${who})`;
}

export function formatStatus(report: StatusReport): string {
  if (report.pipelines.length === 0 && report.workers.length === 0) return 'no pipelines and no workers\n';
  const out: string[] = [];
  if (report.pipelines.length === 0) out.push('no pipelines\n');
  else {
    out.push(
      formatTable(
        ['PIPELINE', 'STATUS', 'STATE', 'LAG', 'SLOT WAL', 'DURABLE LSN', 'OWNER', 'TABLES', 'LAST ERROR'],
        report.pipelines.map((p) => [
          p.name,
          p.status,
          p.destination_breaker && p.destination_breaker !== 'closed' ? `${p.state} (breaker ${p.destination_breaker})` : p.state,
          p.lag_bytes === null ? '-' : formatBytes(p.lag_bytes),
          p.slot_retained_bytes === null
            ? '-'
            : `${formatBytes(p.slot_retained_bytes)}${p.slot_wal_status && p.slot_wal_status !== 'reserved' ? ` ${p.slot_wal_status}` : ''}`,
          p.durable_lsn ?? '-',
          p.owner_worker ?? '-',
          formatTables(p.tables),
          p.last_error ? oneLine(`${p.last_error_at ?? ''} ${p.last_error}`.trim(), 100) : '-',
        ]),
      ),
    );
  }
  if (report.sources.length > 0) {
    out.push(
      '\n' +
        formatTable(
          ['SOURCE', 'WATCHED BY', 'CHECKED', 'PG_WAL', 'ARCHIVING', 'WORST SLOT'],
          report.sources.map((s) => [
            s.name,
            s.watched_by ?? '-',
            s.checked_at ?? '-',
            s.wal_dir_bytes === null ? '-' : formatBytes(s.wal_dir_bytes),
            s.archive_failing === null ? '-' : s.archive_failing ? 'FAILING' : 'ok',
            formatWorstSlot(s.worst_slot),
          ]),
        ),
    );
  }
  if (report.workers.length === 0) out.push('\nno workers\n');
  else {
    out.push(
      '\n' +
        formatTable(
          ['WORKER', 'HOST', 'PID', 'STARTED', 'HEARTBEAT', 'PIPELINES'],
          report.workers.map((w) => [
            w.id,
            w.host ?? '-',
            w.pid === null ? '-' : String(w.pid),
            w.started_at ?? '-',
            w.heartbeat_age_seconds === null ? '-' : `${w.heartbeat_age_seconds}s ago`,
            w.max_pipelines === null ? String(w.pipelines) : `${w.pipelines}/${w.max_pipelines}`,
          ]),
        ),
    );
  }
  return out.join('');
}

function formatTables(t: PipelineStatusEntry['tables']): string {
  if (t.total === 0) return '-';
  const parts = Object.entries(t.by_state)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, n]) => `${n} ${state}`);
  if (t.resync_requested > 0) parts.push(`${t.resync_requested} resync requested`);
  return parts.join(', ');
}

function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
