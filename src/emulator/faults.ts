/**
 * Fault injection: what the admin route `/_emulator/faults` configures and
 * the request pipeline consults. Every field is optional; an empty config is
 * a healthy server. docs/emulator.md documents the JSON shape.
 */
import { z } from 'zod';

export const ROUTES = ['hostname', 'token', 'open', 'append', 'drop', 'status', 'sql', 'sql-status', 'cancel'] as const;
export type RouteName = (typeof ROUTES)[number];

const routeFault = z
  .object({
    /** Probability (0..1) that a request gets the injected error. */
    errorRate: z.number().min(0).max(1).optional(),
    /** HTTP status of the injected error. (Default: 503) */
    status: z.number().int().min(400).max(599).optional(),
    /** Snowflake code of the injected error. (Default: ERR_GENERAL_EXCEPTION_RETRY_REQUEST, SQL API 390503) */
    code: z.string().optional(),
    message: z.string().optional(),
    /** Added latency before the request is handled. */
    latencyMs: z.number().int().min(0).optional(),
    /** Destroy the connection: 'before' the request is handled, or 'after' it was fully applied (ambiguous outcome). */
    drop: z.enum(['before', 'after']).optional(),
    /** Probability (0..1) of `drop`. (Default: 1) */
    dropRate: z.number().min(0).max(1).optional(),
    /** Apply the error/drop to this many requests only, then stop. */
    count: z.number().int().min(1).optional(),
  })
  .strict();

export const faultConfigSchema = z
  .object({
    routes: z.partialRecord(z.enum([...ROUTES, '*']), routeFault).optional(),
    /** Every route fails: 'http503' answers 503, 'refuse' closes the listener (connection refused) for durationMs. */
    outage: z
      .object({ mode: z.enum(['http503', 'refuse']), durationMs: z.number().int().min(1).optional() })
      .strict()
      .optional(),
    /** Offset tokens stop advancing: appended batches stay pending until cleared. */
    stallCommits: z.boolean().optional(),
    /** Set the status code of channels (all, or the one named) so they must be reopened; one-shot. */
    invalidateChannels: z.object({ channel: z.string().optional(), code: z.string().optional() }).strict().optional(),
    compat: z
      .object({
        /** Hostname body: 'json' ({"hostname": ...}, documented; default), 'text' (observed live) or 'quoted' (a JSON string). */
        hostname: z.enum(['text', 'json', 'quoted']).optional(),
        /** Hostname returned with '_' in place of '-' (to test the client's underscore fix). */
        hostnameUnderscores: z.boolean().optional(),
        /** Token body: 'json' ({"token": ...}, documented; default) or 'text' (the bare token, observed live). */
        token: z.enum(['text', 'json']).optional(),
        /** Error body shape of the streaming API: 'code' (default), 'error_code', 'error', 'string'. */
        errorShape: z.enum(['code', 'error_code', 'error', 'string']).optional(),
        /** Healthy channel_status_code: 'SUCCESS' (default) or 'ACTIVE'. */
        healthyStatus: z.enum(['SUCCESS', 'ACTIVE']).optional(),
        /** Reject requests without `Accept: application/json` with 391902 (default true; false accepts any). */
        requireAccept: z.boolean().optional(),
        /** Rows per SQL API result partition (small values exercise `?partition=n` paging). */
        partitionRows: z.number().int().min(1).optional(),
        /** Lifetime of scoped tokens issued by /oauth/token, seconds. */
        oauthTtlSeconds: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type FaultConfig = z.infer<typeof faultConfigSchema>;
export type RouteFault = z.infer<typeof routeFault>;

/** What to do with one request. */
export interface FaultDecision {
  latencyMs: number;
  dropBefore: boolean;
  dropAfter: boolean;
  error: { status: number; code: string | undefined; message: string | undefined } | undefined;
}

export class Faults {
  #config: FaultConfig = {};
  readonly #used = new Map<string, number>();

  get config(): FaultConfig {
    return this.#config;
  }

  /** Merges a new configuration over the current one. */
  set(config: FaultConfig): void {
    const routes = { ...this.#config.routes, ...config.routes };
    this.#config = { ...this.#config, ...config, routes, compat: { ...this.#config.compat, ...config.compat } };
    for (const k of Object.keys(config.routes ?? {})) this.#used.delete(k);
  }

  clear(): void {
    this.#config = {};
    this.#used.clear();
  }

  decide(route: RouteName, random: () => number = Math.random): FaultDecision {
    const key = this.#config.routes?.[route] ? route : '*';
    const f = this.#config.routes?.[key];
    const d: FaultDecision = { latencyMs: f?.latencyMs ?? 0, dropBefore: false, dropAfter: false, error: undefined };
    if (!f) return d;
    const used = this.#used.get(key) ?? 0;
    if (f.count !== undefined && used >= f.count) return d;
    let hit = false;
    if (f.drop && random() < (f.dropRate ?? 1)) {
      if (f.drop === 'before') d.dropBefore = true;
      else d.dropAfter = true;
      hit = true;
    } else if (f.errorRate !== undefined && random() < f.errorRate) {
      d.error = { status: f.status ?? 503, code: f.code, message: f.message };
      hit = true;
    }
    if (hit) this.#used.set(key, used + 1);
    return d;
  }
}
