/**
 * A console backend for one pipeline running in this process without a control plane (`floe demo`):
 * its figures come from the pipeline's events; the console is read-only (no actions, no sources or
 * destinations to list).
 */
import type { PipelineEvents } from '../pipeline/pipeline.js';
import type { PipelineStatusEntry, StatusReport } from '../cli/status.js';
import type { ConsoleBackend } from '../api/server.js';
import { formatLsn } from '../postgres/lsn.js';
import { PipelineHistory, RecentAlerts, SourceHealthBoard } from './history.js';

export class LocalPipelineStatus {
  #state = 'starting';
  #lagBytes: number | null = null;
  #durableLsn: string | null = null;
  #lastError: { text: string; at: string } | null = null;

  constructor(readonly info: { name: string; source: string; destination: string; publication: string; slot: string }) {}

  /** Feed these alongside the pipeline's other events (combine them). */
  readonly events: PipelineEvents = {
    phase: (p) => {
      this.#state = p === 'connecting' ? 'starting' : p;
    },
    batchWritten: (_rows, _bytes, durableLsn) => {
      this.#durableLsn = formatLsn(durableLsn);
    },
    acknowledged: (lsn, walEnd) => {
      this.#lagBytes = Number(walEnd > lsn ? walEnd - lsn : 0n);
    },
    retrying: (error) => {
      this.#lastError = { text: error.oneLine(), at: new Date().toISOString() };
    },
  };

  entry(): PipelineStatusEntry {
    return {
      ...this.info,
      status: 'START',
      state: this.#state,
      lag_bytes: this.#lagBytes,
      destination_breaker: null,
      slot_retained_bytes: null,
      slot_wal_status: null,
      lag_seconds: null,
      monitored_at: null,
      durable_lsn: this.#durableLsn,
      last_error: this.#lastError?.text ?? null,
      last_error_at: this.#lastError?.at ?? null,
      owner_worker: null,
      config_version: 1,
      tables: { total: 0, by_state: {}, skipped: 0, resync_requested: 0 },
    };
  }

  /** A read-only backend; `parts` are a Console's (floe replicate), fresh ones otherwise (floe demo). */
  backend(parts?: Pick<ConsoleBackend, 'history' | 'alerts' | 'sources'>): ConsoleBackend {
    const report = (): StatusReport => ({ pipelines: [this.entry()], workers: [], sources: [] });
    return {
      status: async () => report(),
      history: parts?.history ?? new PipelineHistory({ intervalMs: 2000 }),
      alerts: parts?.alerts ?? new RecentAlerts(undefined),
      sources: parts?.sources ?? new SourceHealthBoard({ warningMb: 0, dangerMb: 0 }),
    };
  }
}
