import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPipeline, type PipelineOptions } from '../../src/pipeline/pipeline.js';
import { DuckDbDestination } from '../../src/destination/duckdb/duckdb-destination.js';
import { MemoryStateStore } from '../../src/store/memory-store.js';
import type { StateStore } from '../../src/store/state-store.js';
import { createLogger, silentLogger } from '../../src/telemetry/logger.js';
import type { Destination } from '../../src/destination/destination.js';

export interface RunningPipeline {
  readonly destination: Destination;
  readonly store: StateStore;
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

export function tempDir(prefix = 'floe-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * A debug-level log kept in memory, its last `keep` lines: a test that fails in a loaded CI run (where
 * it cannot be re-run with FLOE_TEST_LOG) can show what the pipeline did.
 */
export function memoryLog(keep = 300, onLine?: (line: string) => void): { log: PipelineOptions['log']; tail(): string } {
  const lines: string[] = [];
  const log = createLogger({
    level: 'debug',
    registerEnvironment: false,
    destination: {
      write(chunk: string) {
        for (const line of chunk.split('\n')) {
          if (!line) continue;
          lines.push(line);
          onLine?.(line);
        }
        if (lines.length > keep) lines.splice(0, lines.length - keep);
        return true;
      },
    } as NodeJS.WritableStream,
  });
  return { log, tail: () => lines.join('\n') };
}

/** Runs a pipeline in this process; `stop()` aborts it gracefully and waits. */
export function startPipeline(
  options: Partial<PipelineOptions> & Pick<PipelineOptions, 'source' | 'publication' | 'slotName'>,
): RunningPipeline {
  const destination = options.destination ?? new DuckDbDestination({ path: ':memory:' });
  const store = options.store ?? new MemoryStateStore();
  const controller = new AbortController();
  const done = runPipeline(
    {
      name: options.slotName,
      // FLOE_TEST_LOG=debug shows the pipeline's log while a test runs.
      log: process.env.FLOE_TEST_LOG ? createLogger({ level: process.env.FLOE_TEST_LOG }) : silentLogger,
      batchMaxMs: 100,
      mergeIntervalMs: 200,
      statusIntervalMs: 500,
      ...options,
      destination,
      store,
    },
    controller.signal,
  );
  done.catch(() => undefined);
  return {
    destination,
    store,
    done,
    async stop() {
      controller.abort();
      await done;
    },
  };
}
