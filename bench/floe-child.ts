/**
 * One floe pipeline in its own process, driven by bench/run.ts over IPC, so
 * that its CPU time and peak RSS are floe's alone and a run that takes too
 * long can be killed.
 *
 *   argv[2]: JSON ChildConfig
 *   1. with `prime`, runs the pipeline until it streams (creating its slot and
 *      state, on a table that is still empty) and stops it;
 *   2. sends {type: 'ready', baselineRssBytes};
 *   3. on {type: 'go', target?} runs the pipeline again, with the same state,
 *      until its durable LSN reaches `target` (an LSN inside the last
 *      transaction, before its commit record) or, without target, until the
 *      snapshot is over (phase 'streaming'), and sends {type: 'result',
 *      ...ChildResult} right then; stops it gracefully; with `duckdbCheck`
 *      sends {type: 'check', value}; exits.
 */
import { Session } from 'node:inspector';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { runPipeline, type PipelineOptions } from '../src/pipeline/pipeline.js';
import { applyHeapGrowth } from '../src/cli/heap-growth.js';
import { EncodingSink } from '../src/destination/encoding/encoding-sink.js';
import type { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import type { Destination } from '../src/destination/destination.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { createLogger, silentLogger } from '../src/telemetry/logger.js';

export interface ChildConfig {
  readonly url: string;
  readonly publication: string;
  readonly slot: string;
  readonly destination: 'encoding' | 'duckdb';
  /** DuckDB database file (destination 'duckdb'). */
  readonly duckdbPath?: string;
  /** DuckDB memory_limit and threads (default: the destination's). */
  readonly duckdbMemoryLimit?: string;
  readonly duckdbThreads?: number;
  /** DuckDB: also journal keyed tables' snapshot rows (the destination's journalSnapshot). */
  readonly duckdbJournalSnapshot?: boolean;
  /** The pipeline's merge interval (default: the runtime's). */
  readonly mergeIntervalMs?: number;
  /** Create the slot on an empty table first, then wait for 'go'. */
  readonly prime: boolean;
  /** Write a .cpuprofile of the measured run here (inspector profiler, only while the clock runs). */
  readonly profile?: string;
  /** Query run on the DuckDB database after the run, its single value reported as `check`. */
  readonly duckdbCheck?: string;
  /** false: pgoutput protocol 1 (default: floe's, protocol 2 with streaming). */
  readonly streamLargeTransactions?: boolean;
  /** The pipeline's binary option (default: the runtime's). */
  readonly binary?: 'off' | 'on';
}

export interface ChildResult {
  readonly seconds: number;
  /** Rows the pipeline reported written (snapshot ranges and batches) when the goal was reached. */
  readonly rows: number;
  readonly ndjsonBytes?: number;
  /** Seconds from start to the end of the last snapshot range, and to the streaming phase. */
  readonly lastRangeSeconds?: number;
  readonly streamingSeconds?: number;
  /** CPU seconds (user + system, all threads) of this process during the measured run. */
  readonly cpuSeconds: number;
  readonly maxRssKB: number;
  readonly baselineRssBytes: number;
  readonly peakHeapBytes: number;
  /** File-backed part of the resident set (RssFile) when it was largest, sampled every 50 ms. */
  readonly peakRssFileKB: number;
}

// As `floe` itself does at start-up (FLOE_HEAP_GROWING_PERCENT), so the bench measures floe's defaults.
applyHeapGrowth();
const config = JSON.parse(process.argv[2] ?? 'null') as ChildConfig | null;
if (!config || !process.send) {
  process.stderr.write('usage: forked by bench/run.ts with a JSON config\n');
  process.exit(2);
}
const send = (m: object) => process.send!(m);
// Without the parent there is nobody to report to.
process.on('disconnect', () => process.exit(1));

const log = process.env.FLOE_BENCH_LOG ? createLogger({ level: process.env.FLOE_BENCH_LOG }) : silentLogger;
const store = new MemoryStateStore();
const base = {
  name: config.slot,
  source: { url: config.url },
  publication: config.publication,
  slotName: config.slot,
  store,
  log,
  streamLargeTransactions: config.streamLargeTransactions,
  binary: config.binary,
  ...(config.mergeIntervalMs !== undefined ? { mergeIntervalMs: config.mergeIntervalMs } : {}),
};

let peakHeap = 0;
/** The largest resident set seen, and how much of it was file-backed (code of node and libduckdb) then. */
const peakResident = { rssKB: 0, fileKB: 0 };
const sampler = setInterval(() => {
  peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  const status = readFileSync('/proc/self/status', 'utf8');
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
  if (rss > peakResident.rssKB) Object.assign(peakResident, { rssKB: rss, fileKB: Number(/^RssFile:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) });
}, 50);

// DuckDB's native module is loaded only when used: it would add to the RSS of the EncodingSink runs.
const DuckDb =
  config.destination === 'duckdb' ? (await import('../src/destination/duckdb/duckdb-destination.js')).DuckDbDestination : undefined;
const newDestination = (): Destination =>
  DuckDb
    ? new DuckDb({
        path: config.duckdbPath!,
        memoryLimit: config.duckdbMemoryLimit,
        threads: config.duckdbThreads,
        journalSnapshot: config.duckdbJournalSnapshot,
      })
    : new EncodingSink();

interface Run {
  seconds: number;
  rows: number;
  /** Rows written when the goal was reached (more may follow while the pipeline stops). */
  rowsAtGoal: number;
  cpuSeconds: number;
  marks: Record<string, number>;
}

async function runUntil(
  destination: Destination,
  done: (phase: string | undefined, durableLsn: bigint | undefined) => boolean,
  profile?: string,
  onGoal?: (run: Run) => void,
): Promise<Run> {
  const controller = new AbortController();
  const stopProfile = await startProfile(profile);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const run: Run = { seconds: 0, rows: 0, rowsAtGoal: 0, cpuSeconds: 0, marks: {} };
  let reached: () => void = () => undefined;
  const goal = new Promise<void>((resolve) => (reached = resolve));
  const hit = (phase: string | undefined, lsn: bigint | undefined) => {
    if (run.seconds === 0 && done(phase, lsn)) {
      run.seconds = (performance.now() - t0) / 1000;
      run.rowsAtGoal = run.rows;
      const cpu = process.cpuUsage(cpu0);
      run.cpuSeconds = (cpu.user + cpu.system) / 1e6;
      onGoal?.(run);
      reached();
    }
  };
  const events: PipelineOptions['events'] = {
    phase: (p) => {
      run.marks[p] = (performance.now() - t0) / 1000;
      hit(p, undefined);
    },
    snapshotRange: (_t, n) => {
      run.rows += n;
      run.marks.lastRange = (performance.now() - t0) / 1000;
    },
    batchWritten: (n, _b, lsn) => {
      run.rows += n;
      hit(undefined, lsn);
    },
  };
  const running = runPipeline({ ...base, destination, events }, controller.signal);
  try {
    await Promise.race([
      goal,
      running.then(() => {
        throw new Error('pipeline stopped before reaching its goal');
      }),
    ]);
  } finally {
    await stopProfile();
    controller.abort();
    await running.catch((err) => {
      if (run.seconds === 0) throw err;
    });
  }
  return run;
}

/** Starts the inspector's CPU profiler; the returned function stops it and writes the profile. */
async function startProfile(file: string | undefined): Promise<() => Promise<void>> {
  if (!file) return async () => undefined;
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 500 });
  await post('Profiler.start');
  return async () => {
    const { profile } = (await post('Profiler.stop')) as { profile: object };
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  };
}

const go = new Promise<{ target?: string }>((resolve) => {
  process.on('message', (m: { type?: string; target?: string }) => {
    if (m.type === 'go') resolve(m);
  });
});

try {
  if (config.prime) {
    const d = newDestination();
    await runUntil(d, (phase) => phase === 'streaming');
    await d.close();
  }
  const baselineRssBytes = process.memoryUsage().rss;
  send({ type: 'ready', baselineRssBytes });
  const { target } = await go;
  const goal = target === undefined ? undefined : BigInt(target);
  const destination = newDestination();
  // Reported at the goal: stopping (a final merge, for DuckDB) is not part of the measurement.
  const report = (run: Run) => {
    const result: ChildResult = {
      seconds: run.seconds,
      rows: run.rowsAtGoal,
      ndjsonBytes: destination instanceof EncodingSink ? destination.bytes : undefined,
      lastRangeSeconds: run.marks.lastRange,
      streamingSeconds: run.marks.streaming,
      cpuSeconds: run.cpuSeconds,
      maxRssKB: process.resourceUsage().maxRSS,
      baselineRssBytes,
      peakHeapBytes: Math.max(peakHeap, process.memoryUsage().heapUsed),
      peakRssFileKB: peakResident.fileKB,
    };
    send({ type: 'result', ...result });
  };
  await runUntil(
    destination,
    (phase, lsn) => (goal === undefined ? phase === 'streaming' : lsn !== undefined && lsn >= goal),
    config.profile,
    report,
  );
  clearInterval(sampler);
  if (DuckDb && config.duckdbCheck) {
    const rows = await (destination as DuckDbDestination).query(config.duckdbCheck);
    send({ type: 'check', value: String(rows[0]?.[0]) });
  }
  await destination.close();
} catch (err) {
  send({ type: 'error', message: (err as Error).message });
} finally {
  clearInterval(sampler);
  process.removeAllListeners('disconnect');
  process.disconnect?.();
}
