/** The console's calls to /api/v1: the token goes in a header (never a cookie), kept for this tab only. */

export interface ApiErrorBody {
  readonly error: { readonly kind: string; readonly message: string; readonly hint: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody['error'],
  ) {
    super(body.hint ? `${body.message} (${body.hint})` : body.message);
  }
}

const TOKEN_KEY = 'floe-api-token';

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
  });
  const text = await res.text();
  const data = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) {
    const err = (data as ApiErrorBody | undefined)?.error ?? { kind: 'internal', message: `HTTP ${res.status}`, hint: null };
    throw new ApiError(res.status, err);
  }
  return data as T;
}

export interface Session {
  readonly token_configured: boolean;
  readonly public_read: boolean;
  readonly read_only: boolean;
}

export interface PipelineEntry {
  readonly name: string;
  readonly source: string | null;
  readonly destination: string | null;
  readonly publication: string;
  readonly slot: string;
  readonly status: string;
  readonly state: string;
  readonly lag_bytes: number | null;
  readonly lag_seconds: number | null;
  readonly slot_retained_bytes: number | null;
  readonly slot_wal_status: string | null;
  readonly destination_breaker: string | null;
  readonly durable_lsn: string | null;
  readonly last_error: string | null;
  readonly last_error_at: string | null;
  readonly owner_worker: string | null;
  readonly throughput_bytes_per_second?: number | null;
  readonly tables: { readonly total: number; readonly by_state: Record<string, number> };
}

export interface HistorySample {
  readonly t: number;
  readonly lag_bytes: number | null;
  readonly lag_seconds: number | null;
  readonly retained_wal_bytes: number | null;
  readonly throughput_bytes_per_second: number | null;
}

export interface TableState {
  readonly table: string;
  readonly state: string;
  readonly skip: boolean;
  readonly resync_requested_at: string | null;
  readonly rows_snapshotted: number | null;
  readonly last_error: string | null;
}

export interface Alert {
  readonly type: string;
  readonly severity: string;
  readonly source: string;
  readonly slot: string;
  readonly message: string;
  readonly timestamp: string;
}

export interface PipelineDetail extends PipelineEntry {
  readonly options: Record<string, unknown>;
  readonly table_states: readonly TableState[];
  readonly history: readonly HistorySample[];
  readonly alerts: readonly Alert[];
}

export interface SlotHealth {
  readonly slot: string;
  readonly walStatus: string;
  readonly active: boolean;
  readonly retainedBytes: number | null;
  readonly safeWalSizeBytes: number | null;
  readonly confirmedFlushLagSeconds: number | null;
  readonly retainedGrowthBytesPerSecond: number | null;
  readonly secondsUntilDanger: number | null;
  readonly secondsUntilSafeWalExhausted: number | null;
  readonly stalledSeconds: number | null;
}

export interface SourceHealth {
  readonly name: string;
  readonly reachable: boolean;
  readonly error: string | null;
  readonly checkedAt: string | null;
  readonly walDirBytes: number | null;
  readonly walDirPrivilege: boolean;
  readonly walGrowthBytesPerSecond: number | null;
  readonly slots: readonly SlotHealth[];
}
