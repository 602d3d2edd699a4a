/**
 * Keeps source health in step with the pipelines a worker runs: while a pipeline runs, its source is
 * watched by the WAL monitor (with the slots of every pipeline here on that source), its heartbeat
 * writes to the source, and /readyz requires the source to answer. When the last pipeline of a source
 * stops here, the source is no longer monitored by this worker.
 */
import type { SourceConfig } from '../postgres/source.js';
import type { Logger } from '../telemetry/logger.js';
import type { FloeMetrics } from '../telemetry/metrics.js';
import type { ReadinessCheck } from '../telemetry/http.js';
import type { WalMonitor } from './wal-monitor.js';
import { Heartbeat } from './heartbeat.js';

export interface RunningPipelineSource {
  readonly pipeline: string;
  /** Stable name of the source (the control plane's source name): the monitor's id and metric label. */
  readonly sourceName: string;
  readonly source: SourceConfig;
  readonly slot: string;
}

export interface RunningSourcesOptions {
  /** Undefined when monitoring is off (`--monitor-interval 0`). */
  readonly monitor: WalMonitor | undefined;
  /** 0 turns the heartbeat off. */
  readonly heartbeatIntervalMs: number;
  readonly log: Logger;
  readonly metrics?: FloeMetrics;
}

export class RunningSources {
  readonly #o: RunningSourcesOptions;
  /** source name → (pipeline → what it runs with). */
  readonly #bySource = new Map<string, Map<string, RunningPipelineSource>>();

  constructor(options: RunningSourcesOptions) {
    this.#o = options;
  }

  /** Watches `p`'s source until `signal` aborts (the pipeline's attempt ended). */
  attach(p: RunningPipelineSource, signal: AbortSignal): void {
    if (signal.aborted) return;
    let pipelines = this.#bySource.get(p.sourceName);
    if (!pipelines) this.#bySource.set(p.sourceName, (pipelines = new Map()));
    pipelines.set(p.pipeline, p);
    this.#sync(p.sourceName);
    if (this.#o.heartbeatIntervalMs > 0) {
      const heartbeat = new Heartbeat({
        source: p.source,
        sourceName: p.sourceName,
        pipeline: p.pipeline,
        intervalMs: this.#o.heartbeatIntervalMs,
        log: this.#o.log.child({ pipeline: p.pipeline }),
        metrics: this.#o.metrics,
      });
      void heartbeat
        .run(signal)
        .catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message, pipeline: p.pipeline }, 'heartbeat stopped'));
    }
    signal.addEventListener(
      'abort',
      () => {
        // Only this attempt's entry: a restarted attempt may already have replaced it.
        if (pipelines.get(p.pipeline) === p) pipelines.delete(p.pipeline);
        if (pipelines.size === 0 && this.#bySource.get(p.sourceName) === pipelines) this.#bySource.delete(p.sourceName);
        this.#sync(p.sourceName);
      },
      { once: true },
    );
  }

  /** Pipelines running here on `sourceName` with replication slot `slot`. */
  pipelinesOn(sourceName: string, slot: string): string[] {
    return [...(this.#bySource.get(sourceName)?.values() ?? [])].filter((p) => p.slot === slot).map((p) => p.pipeline);
  }

  /** /readyz: every source a pipeline runs on here answers. */
  readonly check: ReadinessCheck = async () => {
    const monitor = this.#o.monitor;
    if (!monitor) return undefined;
    const names = [...this.#bySource.keys()];
    const failures = (await Promise.all(names.map(async (name) => ({ name, why: await monitor.probe(name) })))).filter((f) => f.why);
    return failures.length === 0 ? undefined : failures.map((f) => `source ${f.name}: ${f.why}`).join('; ');
  };

  #sync(sourceName: string): void {
    const monitor = this.#o.monitor;
    if (!monitor) return;
    const pipelines = this.#bySource.get(sourceName);
    if (!pipelines || pipelines.size === 0) {
      monitor.removeSource(sourceName);
      return;
    }
    const any = pipelines.values().next().value!;
    monitor.addSource({
      id: sourceName,
      name: sourceName,
      config: any.source,
      slots: [...new Set([...pipelines.values()].map((p) => p.slot))],
    });
  }
}
