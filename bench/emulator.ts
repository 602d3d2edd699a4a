/**
 * `npm run bench -- --destination emulator`: floe streaming into the Snowflake emulator (`floe emulator`,
 * in this process) through the real wire clients — JWT, Snowpipe Streaming channels, SQL API MERGE.
 *
 * 1. Throughput: `--changes` rows inserted in 1000-row transactions as fast as PostgreSQL takes them;
 *    rows/s until every row is committed in the journal, and until every row is merged into the target.
 * 2. Latency at a steady load: 1000-row transactions at half the measured journal rate for 20 s; for each
 *    transaction, the time from its COMMIT returning to its rows being visible in the target table
 *    (commit → Snowpipe commit → MERGE), p50/p95/max.
 *
 * The emulator (DuckDB) runs in the same process and shares the CPU with floe: these numbers bound floe
 * plus a local Snowflake, not a real account (whose ingest-to-query latency is 5–10 s by itself).
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { startEmulator } from '../src/emulator/emulator.js';
import { parseSnowflakeUrl } from '../src/destination/snowflake/config.js';
import { createSnowflakeDestination } from '../src/destination/snowflake/snowflake-destination.js';
import { runPipeline } from '../src/pipeline/pipeline.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { silentLogger } from '../src/telemetry/logger.js';

export interface EmulatorBenchResult {
  readonly rows: number;
  readonly journalRowsPerSecond: number;
  readonly targetRowsPerSecond: number;
  readonly steadyRowsPerSecond: number;
  readonly commitToTargetMs: { readonly p50: number; readonly p95: number; readonly max: number; readonly samples: number };
}

const TXN = 1000;

export async function emulatorBench(
  url: string,
  c: pg.Client,
  work: string,
  rows: number,
  say: (m: string) => void,
  batchMaxBytes?: number,
): Promise<EmulatorBenchResult> {
  const emulator = await startEmulator({ commitDelayMs: 200 });
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(work, 'bench_key.p8');
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  emulator.addUser('BENCH', publicKey.export({ type: 'spki', format: 'pem' }).toString());
  const destination = createSnowflakeDestination(
    parseSnowflakeUrl(
      `snowflake://bench@${emulator.account}/BENCH/PUBLIC?private_key_file=${keyFile}&warehouse=COMPUTE_WH&merge_interval=1s&channels_per_table=4&base_url=${emulator.url}`,
    ),
    { log: silentLogger },
  );
  await c.query(
    `CREATE TABLE sf_bench (id bigint PRIMARY KEY, payload text, at timestamptz); CREATE PUBLICATION sf_bench_pub FOR TABLE sf_bench`,
  );
  const controller = new AbortController();
  let phase = '';
  const done = runPipeline(
    {
      name: 'sf_bench',
      source: { url },
      publication: 'sf_bench_pub',
      slotName: 'sf_bench',
      destination,
      store: new MemoryStateStore(),
      log: silentLogger,
      mergeIntervalMs: 250,
      batchMaxBytes,
      events: { phase: (p) => (phase = p) },
    },
    controller.signal,
  );
  const count = async (table: string) => Number((await emulator.query(`SELECT COUNT(*) FROM "BENCH".${table}`)).rows[0]![0]);
  const journal = '"PUBLIC_FLOE_LANDING"."PUBLIC_SF_BENCH"';
  const target = '"PUBLIC"."PUBLIC_SF_BENCH"';
  const until = async (what: string, check: () => Promise<boolean>) => {
    const deadline = Date.now() + 600_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    await until('streaming', async () => phase === 'streaming');
    say(`emulator: inserting ${rows} rows in ${TXN}-row transactions`);
    const insert = async (lo: number) =>
      c.query(`INSERT INTO sf_bench SELECT g, repeat('x', 100), now() FROM generate_series(${lo}, ${lo + TXN - 1}) g`);
    const t0 = performance.now();
    for (let lo = 1; lo <= rows; lo += TXN) await insert(lo);
    await until('journal', async () => (await count(journal)) >= rows);
    const journalSeconds = (performance.now() - t0) / 1000;
    await until('target', async () => (await count(target)) >= rows);
    const targetSeconds = (performance.now() - t0) / 1000;
    const journalRate = rows / journalSeconds;
    say(`emulator: ${Math.round(journalRate)} rows/s into the journal, ${Math.round(rows / targetSeconds)} rows/s merged`);

    // Steady load at half the journal rate: commit → visible in the target, per transaction.
    const txnsPerSecond = Math.max(1, journalRate / 2 / TXN);
    const latencies: number[] = [];
    const pending = new Map<number, number>();
    let next = rows + 1;
    const end = Date.now() + 20_000;
    say(`emulator: steady load of ${Math.round(txnsPerSecond * TXN)} rows/s for 20 s`);
    const poller = (async () => {
      while (Date.now() < end + 30_000 && (Date.now() < end || pending.size > 0)) {
        const ids = [...pending.keys()];
        if (ids.length > 0) {
          const seen = await emulator.query(`SELECT "ID" FROM "BENCH".${target} WHERE "ID" IN (${ids.join(', ')})`);
          const now = performance.now();
          for (const [id] of seen.rows) {
            const at = pending.get(Number(id));
            if (at !== undefined) {
              latencies.push(now - at);
              pending.delete(Number(id));
            }
          }
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const steadyStart = performance.now();
    let sent = 0;
    while (Date.now() < end) {
      const due = steadyStart + (sent * 1000) / txnsPerSecond;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await insert(next);
      // The transaction's last row marks it.
      pending.set(next + TXN - 1, performance.now());
      next += TXN;
      sent++;
    }
    const steadySeconds = (performance.now() - steadyStart) / 1000;
    await poller;
    latencies.sort((a, b) => a - b);
    const pct = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN);
    return {
      rows,
      journalRowsPerSecond: Math.round(journalRate),
      targetRowsPerSecond: Math.round(rows / targetSeconds),
      steadyRowsPerSecond: Math.round((sent * TXN) / steadySeconds),
      commitToTargetMs: { p50: pct(0.5), p95: pct(0.95), max: Math.round(latencies.at(-1) ?? NaN), samples: latencies.length },
    };
  } finally {
    controller.abort();
    await done.catch(() => undefined);
    await destination.close();
    await c.query(`SELECT pg_drop_replication_slot('sf_bench')`).catch(() => undefined);
    await emulator.close();
  }
}
