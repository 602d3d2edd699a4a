/** Readiness probes of PostgreSQL services (state store, control plane) for /readyz. */
import { createPool } from '../postgres/pool.js';
import { coerceError } from '../errors.js';
import type { ReadinessCheck } from './http.js';

/**
 * A probe that runs `SELECT 1` on one small kept connection (application_name `floe-health`,
 * statement timeout), reconnecting after a failure.
 */
export function postgresReachable(url: string, options: { timeoutMs?: number } = {}): { check: ReadinessCheck; close(): Promise<void> } {
  const timeoutMs = options.timeoutMs ?? 2000;
  const pool = createPool({
    connectionString: url,
    application_name: 'floe-health',
    options: `-c statement_timeout=${timeoutMs}`,
    connectionTimeoutMillis: timeoutMs,
    max: 1,
    idleTimeoutMillis: 60_000,
    allowExitOnIdle: true,
  });
  return {
    check: async () => {
      try {
        await pool.query('SELECT 1');
        return undefined;
      } catch (err) {
        return coerceError(err).message;
      }
    },
    close: () => pool.end().catch(() => undefined),
  };
}

/** A probe of any state store: one cheap read (a pipeline's progress), its error as the reason. */
export function stateStoreReachable(store: { getProgress(pipeline: string): Promise<unknown> }, pipeline: string): ReadinessCheck {
  return async () => {
    try {
      await store.getProgress(pipeline);
      return undefined;
    } catch (err) {
      return coerceError(err).message;
    }
  };
}
