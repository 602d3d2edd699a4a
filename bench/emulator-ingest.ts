/**
 * `npm run bench:emulator-ingest`: how fast `floe emulator` (its own process) takes Snowpipe Streaming appends
 * and commits them, without floe in the loop, so the emulator can be shown not to be the bottleneck of
 * `npm run bench -- --destination emulator` (floe's target there: 40,000 rows/s, 15 MB/s of NDJSON).
 *
 * A journal table shaped like floe's journal of the bench table (id, 100-character payload, timestamp and
 * the _FLOE_* columns) gets `--rows` rows over `--channels` channels of its default pipe, each channel one
 * append in flight with its continuation token chained (as Snowflake requires), ~1 MB NDJSON per append,
 * uncompressed. The clock stops when every channel's committed offset token reaches its last batch.
 * Options: --rows N (200000), --channels N (4), --batch-rows N (2500), --commit-delay-ms N (200).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnEmulator, type EmulatorProcess } from './emulator-process.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    channels: { type: 'string', default: '4' },
    'batch-rows': { type: 'string', default: '2500' },
    'commit-delay-ms': { type: 'string', default: '200' },
  },
});
const ROWS = Number(values.rows);
const CHANNELS = Number(values.channels);
const BATCH = Number(values['batch-rows']);
const DELAY = Number(values['commit-delay-ms']);

const PIPE_PATH = '/v2/streaming/databases/BENCH/schemas/PUBLIC_FLOE_LANDING/pipes/PUBLIC_SF_BENCH-STREAMING';

function batchBody(first: number, count: number): string {
  const payload = 'x'.repeat(100);
  const at = new Date().toISOString();
  let s = '';
  for (let id = first; id < first + count; id++) {
    s +=
      JSON.stringify({
        ID: id,
        PAYLOAD: payload,
        AT: at,
        _FLOE_LSN: String(4_000_000_000 + id),
        _FLOE_ORDINAL: 0,
        _FLOE_OP: 'I',
        _FLOE_COMMIT_TIME: at,
        _FLOE_UNCHANGED: [],
        _FLOE_SEQ: String(id),
        _FLOE_RANGE: null,
      }) + '\n';
  }
  return s;
}

async function call(emu: EmulatorProcess, method: string, path: string, body: string, type: string): Promise<Record<string, unknown>> {
  const res = await fetch(emu.url + path, {
    method,
    headers: { authorization: `Bearer ${emu.jwt()}`, 'content-type': type, accept: 'application/json', 'user-agent': 'floe-bench/1' },
    body,
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status !== 200) throw new Error(`${method} ${path.split('?')[0]} → ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function channelLoad(emu: EmulatorProcess, name: string, batches: { first: number; count: number }[]): Promise<number> {
  const open = await call(emu, 'PUT', `${PIPE_PATH}/channels/${name}`, '{}', 'application/json');
  let token = String(open.next_continuation_token);
  let bytes = 0;
  for (const [k, b] of batches.entries()) {
    const body = batchBody(b.first, b.count);
    bytes += Buffer.byteLength(body);
    const q = `continuationToken=${encodeURIComponent(token)}&startOffsetToken=${k}&endOffsetToken=${k}`;
    const r = await call(
      emu,
      'POST',
      `/v2/streaming/data${PIPE_PATH.slice('/v2/streaming'.length)}/channels/${name}/rows?${q}`,
      body,
      'application/x-ndjson',
    );
    token = String(r.next_continuation_token);
  }
  return bytes;
}

async function committed(emu: EmulatorProcess, names: string[]): Promise<Record<string, string | null>> {
  const r = await call(emu, 'POST', `${PIPE_PATH}:bulk-channel-status`, JSON.stringify({ channel_names: names }), 'application/json');
  const statuses = r.channel_statuses as Record<string, { last_committed_offset_token: string | null }>;
  return Object.fromEntries(names.map((n) => [n, statuses[n]?.last_committed_offset_token ?? null]));
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'floe-emu-ingest-'));
  const emu = await spawnEmulator({ work, commitDelayMs: DELAY, channelRps: 0 });
  try {
    const cols = `"ID" NUMBER(19,0), "PAYLOAD" VARCHAR, "AT" TIMESTAMP_TZ(6), "_FLOE_LSN" NUMBER(20,0), "_FLOE_ORDINAL" NUMBER(10,0), "_FLOE_OP" VARCHAR(1), "_FLOE_COMMIT_TIME" TIMESTAMP_TZ(6), "_FLOE_UNCHANGED" ARRAY, "_FLOE_SEQ" NUMBER(38,0), "_FLOE_RANGE" NUMBER(10,0)`;
    await emu.sql('CREATE DATABASE IF NOT EXISTS BENCH');
    await emu.sql('CREATE SCHEMA IF NOT EXISTS BENCH.PUBLIC_FLOE_LANDING');
    await emu.sql(`CREATE TABLE BENCH.PUBLIC_FLOE_LANDING.PUBLIC_SF_BENCH (${cols})`);
    const names = Array.from({ length: CHANNELS }, (_, k) => `BENCH_${k}`);
    const plans = names.map(() => [] as { first: number; count: number }[]);
    for (let first = 1, k = 0; first <= ROWS; first += BATCH, k++)
      plans[k % CHANNELS]!.push({ first, count: Math.min(BATCH, ROWS - first + 1) });
    const last = Object.fromEntries(names.map((n, k) => [n, String(plans[k]!.length - 1)]));
    const cpu0 = emu.cpuSeconds();
    const t0 = performance.now();
    const bytes = (await Promise.all(names.map((n, k) => channelLoad(emu, n, plans[k]!)))).reduce((a, b) => a + b, 0);
    const appendSeconds = (performance.now() - t0) / 1000;
    for (;;) {
      const c = await committed(emu, names);
      if (names.every((n) => c[n] === last[n])) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpuSeconds = emu.cpuSeconds() - cpu0;
    const batches = await emu.batches();
    const [[count]] = (await emu.sql('SELECT COUNT(*) FROM BENCH.PUBLIC_FLOE_LANDING.PUBLIC_SF_BENCH')) as [[string]];
    if (Number(count) !== ROWS) throw new Error(`expected ${ROWS} rows committed, found ${count}`);
    const result = {
      rows: ROWS,
      channels: CHANNELS,
      batchRows: BATCH,
      commitDelayMs: DELAY,
      batches: batches.committed,
      batchesLoadedBySql: batches.loadedBySql,
      ndjsonMB: +(bytes / 1e6).toFixed(1),
      appendSeconds: +appendSeconds.toFixed(2),
      seconds: +seconds.toFixed(2),
      rowsPerSecond: Math.round(ROWS / seconds),
      ndjsonMBPerSecond: +(bytes / 1e6 / seconds).toFixed(1),
      // What the emulator could take with a core to itself: the shared machine makes wall time noisy.
      emulatorCpuSeconds: +cpuSeconds.toFixed(2),
      rowsPerEmulatorCpuSecond: Math.round(ROWS / cpuSeconds),
      ndjsonMBPerEmulatorCpuSecond: +(bytes / 1e6 / cpuSeconds).toFixed(1),
      cpus: cpus().length,
      loadAtStart: loadavg()[0]!.toFixed(2),
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    await emu.close();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
