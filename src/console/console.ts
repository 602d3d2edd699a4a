/**
 * The console of one floe process: the in-memory figures (history.ts), the sampling loop that fills
 * them, and the HTTP routes (api/server.ts), either on the metrics server or on a listener of its own.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import { FloeError } from '../errors.js';
import type { AlertSink } from '../monitor/alerts.js';
import type { SourceHealth } from '../monitor/wal-monitor.js';
import type { Logger } from '../telemetry/logger.js';
import { authPolicyFromEnv, type AuthPolicy } from '../api/auth.js';
import { registerConsole, type ConsoleBackend } from '../api/server.js';
import { PipelineHistory, RecentAlerts, SourceHealthBoard } from './history.js';

export interface ConsoleOptions {
  /** Own listener port; undefined: mounted on the metrics server. 0: no console. */
  readonly port?: number;
  /** Own listener host (default 127.0.0.1). */
  readonly host?: string;
  readonly publicRead: boolean;
  readonly readOnly: boolean;
  /** How often the charts take a sample. */
  readonly sampleIntervalMs?: number;
  readonly webRoot?: string;
}

export class Console {
  readonly history: PipelineHistory;
  readonly alerts: RecentAlerts;
  readonly sources: SourceHealthBoard;
  readonly auth: AuthPolicy;
  readonly #sampleMs: number;
  #server: FastifyInstance | undefined;

  constructor(
    readonly options: ConsoleOptions,
    parts: { alertSink: AlertSink | undefined; thresholds: { warningMb: number; dangerMb: number } },
  ) {
    this.auth = authPolicyFromEnv({ publicRead: options.publicRead, readOnly: options.readOnly });
    this.#sampleMs = options.sampleIntervalMs ?? 10_000;
    this.history = new PipelineHistory({ intervalMs: this.#sampleMs });
    this.alerts = new RecentAlerts(parts.alertSink);
    this.sources = new SourceHealthBoard(parts.thresholds);
  }

  readonly onSourceHealth = (health: SourceHealth): void => this.sources.update(health);

  /** Adds the routes to the metrics server (when the console has no port of its own). */
  async mount(app: FastifyInstance, backend: ConsoleBackend): Promise<void> {
    await registerConsole(app, { backend, auth: this.auth, ...(this.options.webRoot ? { webRoot: this.options.webRoot } : {}) });
  }

  /** Starts the console's own listener, if it has a port; returns the URL it serves. */
  async listen(backend: ConsoleBackend): Promise<string | undefined> {
    if (this.options.port === undefined || this.options.port === 0) return undefined;
    const app = Fastify({ logger: false, bodyLimit: 256 * 1024 });
    await this.mount(app, backend);
    const host = this.options.host ?? '127.0.0.1';
    try {
      await app.listen({ port: this.options.port, host });
    } catch (err) {
      await app.close().catch(() => undefined);
      throw new FloeError(
        'config',
        `cannot serve the console on ${host}:${this.options.port}: ${(err as { code?: string }).code ?? (err as Error).message}`,
        {
          cause: err,
          hint: 'choose another --console-port (or 0 to turn the console off)',
        },
      );
    }
    this.#server = app;
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : this.options.port;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  }

  /** Samples every pipeline's figures until `signal` aborts. A failed read skips one sample. */
  async run(backend: ConsoleBackend, signal: AbortSignal, log: Logger): Promise<void> {
    while (!signal.aborted) {
      try {
        this.history.record((await backend.status()).pipelines);
      } catch (err) {
        log.debug({ err: (err as Error).message }, 'console: could not sample pipeline figures');
      }
      await sleep(this.#sampleMs, undefined, { signal }).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await this.#server?.close().catch(() => undefined);
  }
}
