/**
 * The operator endpoints: /metrics (Prometheus text), /healthz (the process is alive) and /readyz
 * (every pipeline is snapshotting or streaming; 503 with a JSON reason otherwise).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { FloeError } from '../errors.js';
import type { FloeMetrics } from './metrics.js';

export interface Readiness {
  ready(): { ok: true } | { ok: false; reason: string };
}

export async function startTelemetryServer(options: {
  port: number;
  host?: string;
  metrics: FloeMetrics;
  readiness: Readiness;
}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', options.metrics.registry.contentType);
    return options.metrics.registry.metrics();
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = options.readiness.ready();
    if (r.ok) return { status: 'ready' };
    reply.code(503);
    return { status: 'not ready', reason: r.reason };
  });
  try {
    await app.listen({ port: options.port, host: options.host ?? '0.0.0.0' });
  } catch (err) {
    await app.close().catch(() => undefined);
    const code = (err as { code?: string }).code;
    throw new FloeError('config', `cannot serve metrics on port ${options.port}: ${code ?? (err as Error).message}`, {
      cause: err,
      hint: 'choose another --metrics-port (or FLOE_METRICS_PORT), or 0 to turn the endpoint off',
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

  ready(): { ok: true } | { ok: false; reason: string } {
    if (this.#phase === 'streaming' || this.#phase === 'snapshotting') return { ok: true };
    return { ok: false, reason: this.#lastError ? `pipeline is ${this.#phase}: ${this.#lastError}` : `pipeline is ${this.#phase}` };
  }
}
