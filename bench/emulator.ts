/**
 * `npm run bench -- --destination emulator`: floe streaming into the Snowflake emulator through the real
 * wire clients (JWT, Snowpipe Streaming channels, SQL API MERGE), at Snowflake-like commit latencies.
 *
 * Three processes: PostgreSQL, `floe emulator` (bench/emulator-process.ts) and `floe replicate` (the CLI
 * as users run it), so each one's CPU and memory are its own. For each emulator commit delay (0.2 s and
 * 5 s by default, `--commit-delays`), alternated `--repeat` times:
 *
 * 1. Throughput: `--changes` rows inserted in 1000-row transactions as fast as PostgreSQL takes them.
 *    The journal's row count is sampled every 250 ms; the rate is its slope between 10 % and 90 % of the
 *    rows (so the commit delay itself, a fixed shift, is not counted as slowness). NDJSON MB/s is floe's
 *    `floe_snowflake_bytes_appended_total` over the same span. floe's peak RSS is the child's VmHWM.
 * 2. Latency at a steady load (first repetition of each delay): 1000-row transactions at half the
 *    measured rate (or `--steady-rows-per-second`) for 20 s; per transaction, COMMIT returning → rows visible in the target
 *    (commit → Snowpipe commit → MERGE), p50/p95/max.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type pg from 'pg';
import { spawnEmulator, type EmulatorProcess } from './emulator-process.js';
import { launcherDefaults } from './launch-defaults.js';

export interface DelayRun {
  readonly commitDelayMs: number;
  readonly rows: number;
  readonly journalRowsPerSecond: number;
  readonly ndjsonMBPerSecond: number;
  readonly sourceRowsPerSecond: number;
  readonly peakRssMB: number;
  /** Sampled with the journal count while loading: V8's heap (live data plus garbage not yet collected) and Buffers. */
  readonly loadingHeapTotalMB: number;
  readonly loadingExternalMB: number;
  /** CPU seconds during the throughput phase (insert until the journal holds every row). */
  readonly floeCpuSeconds: number;
  readonly emulatorCpuSeconds: number;
  /** Append batches the emulator committed by the end of the load, and those it loaded by SQL alone (src/emulator/ndjson-body.ts). */
  readonly emulatorBatches: { committed: number; loadedBySql: number };
  readonly commitToTargetMs?: {
    readonly p50: number;
    readonly p95: number;
    readonly max: number;
    readonly samples: number;
    /** MERGE transactions during the steady load, and their mean duration (floe's merge histogram). */
    readonly merges?: number;
    readonly meanMergeMs?: number;
  };
}

export interface EmulatorBenchResult {
  readonly runs: readonly DelayRun[];
  readonly summary: readonly {
    readonly commitDelayMs: number;
    readonly journalRowsPerSecond: { readonly median: number; readonly min: number; readonly max: number };
    readonly ndjsonMBPerSecond: number;
    readonly peakRssMB: number;
    readonly commitToTargetMs?: DelayRun['commitToTargetMs'];
  }[];
  /** Median over repetitions of (rate at the longest delay ÷ rate at the shortest, same repetition). */
  readonly slowOverFastRatio: { readonly median: number; readonly min: number; readonly max: number };
}

export interface EmulatorBenchOptions {
  readonly url: string;
  readonly work: string;
  readonly rows: number;
  readonly repeat: number;
  readonly commitDelaysMs: readonly number[];
  readonly mergeIntervalMs: number;
  /** Rows/s of the latency run; default half the run's measured rate. A fixed rate compares runs at one load. */
  readonly steadyRowsPerSecond?: number;
  readonly batchMaxBytes?: number;
  readonly maxUncommittedBytes?: number;
  /** NODE_OPTIONS of the floe process (e.g. `--max-old-space-size=160`); default: the bench's own environment. */
  readonly floeNodeOptions?: string;
  readonly say: (m: string) => void;
}

const TXN = 1000;
const DATABASE = 'BENCH';

export async function emulatorBench(c: pg.Client, o: EmulatorBenchOptions): Promise<EmulatorBenchResult> {
  const runs: DelayRun[] = [];
  let n = 0;
  for (let rep = 0; rep < o.repeat; rep++) {
    // Alternate which delay goes first, so a drift in the machine's load does not favour one.
    const order = rep % 2 === 0 ? o.commitDelaysMs : [...o.commitDelaysMs].reverse();
    for (const delay of order) {
      runs.push(await oneRun(c, o, delay, ++n, rep === 0));
    }
  }
  const delays = [...o.commitDelaysMs].sort((a, b) => a - b);
  const summary = delays.map((d) => {
    const mine = runs.filter((r) => r.commitDelayMs === d);
    const rates = mine.map((r) => r.journalRowsPerSecond);
    return {
      commitDelayMs: d,
      journalRowsPerSecond: { median: median(rates), min: Math.min(...rates), max: Math.max(...rates) },
      ndjsonMBPerSecond: median(mine.map((r) => r.ndjsonMBPerSecond)),
      peakRssMB: Math.max(...mine.map((r) => r.peakRssMB)),
      ...(mine.find((r) => r.commitToTargetMs) ? { commitToTargetMs: mine.find((r) => r.commitToTargetMs)!.commitToTargetMs } : {}),
    };
  });
  const fast = runs.filter((r) => r.commitDelayMs === delays[0]);
  const slow = runs.filter((r) => r.commitDelayMs === delays.at(-1));
  const ratios = slow.map((s, i) => s.journalRowsPerSecond / (fast[i]?.journalRowsPerSecond ?? NaN));
  return {
    runs,
    summary,
    slowOverFastRatio: { median: round2(median(ratios)), min: round2(Math.min(...ratios)), max: round2(Math.max(...ratios)) },
  };
}

async function oneRun(c: pg.Client, o: EmulatorBenchOptions, delayMs: number, n: number, withLatency: boolean): Promise<DelayRun> {
  const table = `sf_bench${n}`;
  const slot = `sf_bench${n}`;
  const emulator = await spawnEmulator({ work: o.work, commitDelayMs: delayMs });
  await c.query(
    `CREATE TABLE ${table} (id bigint PRIMARY KEY, payload text, at timestamptz); CREATE PUBLICATION ${table}_pub FOR TABLE ${table}`,
  );
  const metricsPort = await freePort();
  const floe = startReplicate(o, emulator, table, slot, metricsPort);
  const journal = `"${DATABASE}"."PUBLIC_FLOE_LANDING"."PUBLIC_${table.toUpperCase()}"`;
  const target = `"${DATABASE}"."PUBLIC"."PUBLIC_${table.toUpperCase()}"`;
  const count = async (t: string) => Number((await emulator.sql(`SELECT COUNT(*) FROM ${t}`))[0]?.[0] ?? 0);
  try {
    await until('floe to stream', () => Promise.resolve(floe.stderr().includes('"phase":"streaming"')), floe);
    o.say(`emulator ${delayMs} ms: inserting ${o.rows} rows in ${TXN}-row transactions`);
    const insert = (lo: number) =>
      c.query(`INSERT INTO ${table} SELECT g, repeat('x', 100), now() FROM generate_series(${lo}, ${lo + TXN - 1}) g`);
    const floeCpu0 = cpuSeconds(floe.pid);
    const emuCpu0 = emulator.cpuSeconds();
    const t0 = performance.now();
    const inserting = (async () => {
      for (let lo = 1; lo <= o.rows; lo += TXN) await insert(lo);
      return (performance.now() - t0) / 1000;
    })();
    // The journal's row count over time.
    const samples: { t: number; rows: number }[] = [];
    const memory = { heap: 0, external: 0, rss: 0 };
    for (;;) {
      const rows = await count(journal);
      samples.push({ t: (performance.now() - t0) / 1000, rows });
      memory.heap = Math.max(memory.heap, await metric(metricsPort, 'floe_nodejs_heap_size_total_bytes'));
      memory.external = Math.max(memory.external, await metric(metricsPort, 'floe_nodejs_external_memory_bytes'));
      memory.rss = Math.max(memory.rss, await metric(metricsPort, 'floe_process_resident_memory_bytes'));
      if (rows >= o.rows) break;
      if (floe.exited()) throw new Error(`floe exited: ${floe.stderr().slice(-500)}`);
      if (performance.now() - t0 > 600_000) throw new Error('timed out waiting for the journal');
      await new Promise((r) => setTimeout(r, 250));
    }
    const sourceSeconds = await inserting;
    const a = samples.find((s) => s.rows >= o.rows * 0.1)!;
    const b = samples.find((s) => s.rows >= o.rows * 0.9)!;
    const rate = (b.rows - a.rows) / Math.max(0.001, b.t - a.t);
    // Appends run a commit delay ahead of the journal count: bytes per row times the row rate.
    const mbps = ((await metric(metricsPort, 'floe_snowflake_bytes_appended_total')) / o.rows) * (rate / 1e6);
    const floeCpu = cpuSeconds(floe.pid) - floeCpu0;
    const emulatorCpu = emulator.cpuSeconds() - emuCpu0;
    const emulatorBatches = await emulator.batches();
    o.say(`emulator ${delayMs} ms: ${Math.round(rate)} rows/s, ${mbps.toFixed(1)} MB/s NDJSON into the journal`);
    const mb = (x: number) => Math.round(x / 1048576);
    o.say(`  floe while loading: V8 heap ≤ ${mb(memory.heap)} MB, Buffers ≤ ${mb(memory.external)} MB, RSS ≤ ${mb(memory.rss)} MB`);
    const merges0 = {
      n: await metric(metricsPort, 'floe_snowflake_merges_total'),
      s: await metric(metricsPort, 'floe_snowflake_merge_seconds_sum'),
    };
    const latency = withLatency ? await steadyLatency(c, o, table, target, emulator, rate, o.rows + 1) : undefined;
    const merges = (await metric(metricsPort, 'floe_snowflake_merges_total')) - merges0.n;
    const mergeSeconds = (await metric(metricsPort, 'floe_snowflake_merge_seconds_sum')) - merges0.s;
    const peakRssMB = peakRss(floe.pid);
    return {
      commitDelayMs: delayMs,
      rows: o.rows,
      journalRowsPerSecond: Math.round(rate),
      ndjsonMBPerSecond: round2(mbps),
      sourceRowsPerSecond: Math.round(o.rows / sourceSeconds),
      peakRssMB,
      loadingHeapTotalMB: Math.round(memory.heap / 1048576),
      loadingExternalMB: Math.round(memory.external / 1048576),
      floeCpuSeconds: round2(floeCpu),
      emulatorCpuSeconds: round2(emulatorCpu),
      emulatorBatches,
      ...(latency
        ? { commitToTargetMs: { ...latency, merges, meanMergeMs: Math.round((mergeSeconds * 1000) / Math.max(1, merges)) } }
        : {}),
    };
  } finally {
    await floe.stop();
    await c.query(`SELECT pg_drop_replication_slot('${slot}')`).catch(() => undefined);
    await c.query(`DROP PUBLICATION IF EXISTS ${table}_pub; DROP TABLE IF EXISTS ${table}`);
    await emulator.close();
  }
}

/** Steady load (half the measured rate, or --steady-rows-per-second) for 20 s: commit → visible in the target, per transaction. */
async function steadyLatency(
  c: pg.Client,
  o: EmulatorBenchOptions,
  table: string,
  target: string,
  emulator: EmulatorProcess,
  rate: number,
  firstId: number,
): Promise<NonNullable<DelayRun['commitToTargetMs']>> {
  const txnsPerSecond = Math.max(1, (o.steadyRowsPerSecond ?? rate / 2) / TXN);
  const latencies: number[] = [];
  const pending = new Map<number, number>();
  let next = firstId;
  const end = Date.now() + 20_000;
  o.say(`  steady load of ${Math.round(txnsPerSecond * TXN)} rows/s for 20 s`);
  const poller = (async () => {
    while (Date.now() < end + 60_000 && (Date.now() < end || pending.size > 0)) {
      const ids = [...pending.keys()];
      if (ids.length > 0) {
        const seen = await emulator.sql(`SELECT "ID" FROM ${target} WHERE "ID" IN (${ids.join(', ')})`);
        const now = performance.now();
        for (const [id] of seen) {
          const at = pending.get(Number(id));
          if (at === undefined) continue;
          latencies.push(now - at);
          pending.delete(Number(id));
        }
      }
      // Each probe is a query the emulator answers beside the merges: often enough for p50/p95, no more.
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const start = performance.now();
  let sent = 0;
  while (Date.now() < end) {
    const wait = start + (sent * 1000) / txnsPerSecond - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await c.query(`INSERT INTO ${table} SELECT g, repeat('x', 100), now() FROM generate_series(${next}, ${next + TXN - 1}) g`);
    // The transaction's last row marks it.
    pending.set(next + TXN - 1, performance.now());
    next += TXN;
    sent++;
  }
  await poller;
  latencies.sort((x, y) => x - y);
  const pct = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN);
  return { p50: pct(0.5), p95: pct(0.95), max: Math.round(latencies.at(-1) ?? NaN), samples: latencies.length };
}

interface ReplicateChild {
  readonly pid: number;
  stderr(): string;
  exited(): boolean;
  stop(): Promise<void>;
}

/** `floe replicate` into the emulator, as a user runs it. */
function startReplicate(
  o: EmulatorBenchOptions,
  emulator: EmulatorProcess,
  table: string,
  slot: string,
  metricsPort: number,
): ReplicateChild {
  const url =
    `snowflake://${emulator.user}@${emulator.account}/${DATABASE}/PUBLIC?private_key_file=${emulator.keyFile}` +
    `&warehouse=COMPUTE_WH&merge_interval=${o.mergeIntervalMs}ms&channels_per_table=4&base_url=${emulator.url}`;
  const args = [
    ...['bin/floe.js', 'replicate', '--source', o.url, '--publication', `${table}_pub`, '--slot', slot, '--destination', url],
    // No --merge-interval-ms: the runtime asks as often as the Snowflake destination prefers; merge_interval decides.
    ...['--metrics-port', String(metricsPort), '--log-level', 'info'],
    ...(o.batchMaxBytes ? ['--batch-max-bytes', String(o.batchMaxBytes)] : []),
    ...(o.maxUncommittedBytes ? ['--max-uncommitted-bytes', String(o.maxUncommittedBytes)] : []),
  ];
  // As the `floe` command (bin/floe) starts floe: the bench measures floe's memory defaults.
  const launch = launcherDefaults(o.floeNodeOptions === undefined ? process.env : { ...process.env, NODE_OPTIONS: o.floeNodeOptions });
  const child = spawn(process.execPath, [...launch.execArgv, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: launch.env });
  let stderr = '';
  let exited = false;
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-200_000)));
  const done = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  return {
    pid: child.pid!,
    stderr: () => stderr,
    exited: () => exited,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await done;
      clearTimeout(timer);
    },
  };
}

async function until(what: string, check: () => Promise<boolean>, floe: ReplicateChild): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!(await check())) {
    if (floe.exited()) throw new Error(`floe exited while waiting for ${what}: ${floe.stderr().slice(-500)}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A metric of floe's /metrics, summed over its label sets. */
async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) total += Number(m[1]);
  return total;
}

/** Peak resident set of a process (VmHWM), in MB. */
function peakRss(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(m?.[1] ?? 0) / 1024);
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round2 = (x: number): number => Math.round(x * 100) / 100;
