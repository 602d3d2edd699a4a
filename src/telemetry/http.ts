/**
 * The operator endpoints: /metrics (Prometheus text), /healthz (the process is alive) and /readyz
 * (every readiness check passes: pipelines snapshotting or streaming, sources, state store and control
 * plane reachable; 503 with a JSON reason naming the failed checks otherwise).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { FloeError } from '../errors.js';
import type { FloeMetrics } from './metrics.js';

export type ReadinessResult = { ok: true } | { ok: false; reason: string };

export interface Readiness {
  ready(): ReadinessResult | Promise<ReadinessResult>;
}

/** A readiness check: resolves undefined when ready, or the reason it is not (or throws). */
export type ReadinessCheck = () => Promise<string | undefined> | string | undefined;

/**
 * Pluggable readiness: every named check must pass. Checks run in parallel, each bounded by
 * `timeoutMs`, and results are reused for `cacheMs` so a busy prober does not hammer the sources.
 * `floe replicate` adds the pipeline, source and state store; `floe run` adds the control plane.
 */
export class ReadinessChecks implements Readiness {
  readonly #checks = new Map<string, ReadinessCheck>();
  readonly #timeoutMs: number;
  readonly #cacheMs: number;
  #cached: { at: number; result: Promise<ReadinessResult & { checks: Record<string, string> }> } | undefined;

  constructor(options: { timeoutMs?: number; cacheMs?: number } = {}) {
    this.#timeoutMs = options.timeoutMs ?? 3000;
    this.#cacheMs = options.cacheMs ?? 1000;
  }

  addCheck(name: string, check: ReadinessCheck): this {
    this.#checks.set(name, check);
    this.#cached = undefined;
    return this;
  }

  removeCheck(name: string): void {
    this.#checks.delete(name);
    this.#cached = undefined;
  }

  ready(): Promise<ReadinessResult & { checks: Record<string, string> }> {
    const now = Date.now();
    if (!this.#cached || now - this.#cached.at >= this.#cacheMs) this.#cached = { at: now, result: this.#run() };
    return this.#cached.result;
  }

  async #run(): Promise<ReadinessResult & { checks: Record<string, string> }> {
    const entries = [...this.#checks.entries()];
    const outcomes = await Promise.all(
      entries.map(async ([name, check]) => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<string>((resolve) => {
          timer = setTimeout(() => resolve(`no answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
        });
        try {
          const reason = await Promise.race([Promise.resolve().then(check), timeout]);
          return [name, reason] as const;
        } catch (err) {
          return [name, (err as Error).message ?? String(err)] as const;
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const checks: Record<string, string> = {};
    const failed: string[] = [];
    for (const [name, reason] of outcomes) {
      checks[name] = reason ?? 'ok';
      if (reason !== undefined) failed.push(`${name}: ${reason}`);
    }
    return failed.length === 0 ? { ok: true, checks } : { ok: false, reason: failed.join('; '), checks };
  }
}

/** Where the operator endpoints listen unless told otherwise: the machine itself (design.md invariant 9). */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

/**
 * The /readyz body. Probes report driver errors, which name users, hosts and databases; the endpoint is
 * unauthenticated, so without `details` a body names only the checks that fail (the worker's log has why).
 */
function readinessBody(r: ReadinessResult & { checks?: Record<string, string> }, details: boolean): Record<string, unknown> {
  if (details)
    return { status: r.ok ? 'ready' : 'not ready', ...(r.ok ? {} : { reason: r.reason }), ...(r.checks ? { checks: r.checks } : {}) };
  const checks = r.checks
    ? Object.fromEntries(Object.entries(r.checks).map(([name, v]) => [name, v === 'ok' ? 'ok' : 'failing']))
    : undefined;
  if (r.ok) return { status: 'ready', ...(checks ? { checks } : {}) };
  const failing = checks ? Object.keys(checks).filter((name) => checks[name] !== 'ok') : [];
  const reason = failing.length > 0 ? `failing: ${failing.join(', ')} (details in the log, or with --readyz-details)` : 'not ready';
  return { status: 'not ready', reason, ...(checks ? { checks } : {}) };
}

export async function startTelemetryServer(options: {
  port: number;
  /** Address to bind. (Default: 127.0.0.1) */
  host?: string;
  /** Put the checks' error texts into /readyz bodies. (Default: false) */
  readyzDetails?: boolean;
  metrics: FloeMetrics;
  readiness: Readiness;
  /** More routes on the same port (the console, when it has no port of its own). */
  extend?: (app: FastifyInstance) => Promise<void>;
}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  await options.extend?.(app);
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', options.metrics.registry.contentType);
    return options.metrics.registry.metrics();
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = (await options.readiness.ready()) as ReadinessResult & { checks?: Record<string, string> };
    if (!r.ok) reply.code(503);
    return readinessBody(r, options.readyzDetails === true);
  });
  const host = options.host ?? DEFAULT_METRICS_HOST;
  try {
    await app.listen({ port: options.port, host });
  } catch (err) {
    await app.close().catch(() => undefined);
    const code = (err as { code?: string }).code;
    throw new FloeError('config', `cannot serve metrics on ${host} port ${options.port}: ${code ?? (err as Error).message}`, {
      cause: err,
      hint: 'choose another --metrics-port (or FLOE_METRICS_PORT) or --metrics-host, or port 0 to turn the endpoint off',
    });
  }
  return app;
}

/** Readiness of one pipeline from its phase events. */
export class PipelineReadiness implements Readiness {
  #phase = 'connecting';
  #lastError: string | undefined;

  readonly events = {
    phase: (p: string) => {
      this.#phase = p;
      if (p === 'streaming' || p === 'snapshotting') this.#lastError = undefined;
    },
    retrying: (error: FloeError) => {
      this.#phase = 'retrying';
      this.#lastError = error.message;
    },
  };

  /** As a named check for ReadinessChecks. */
  readonly check: ReadinessCheck = () => {
    const r = this.ready();
    return r.ok ? undefined : r.reason;
  };

  ready(): ReadinessResult {
    if (this.#phase === 'streaming' || this.#phase === 'snapshotting') return { ok: true };
    return { ok: false, reason: this.#lastError ? `pipeline is ${this.#phase}: ${this.#lastError}` : `pipeline is ${this.#phase}` };
  }
}
