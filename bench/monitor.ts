/**
 * `npm run bench:monitor`: one WAL monitor watching many sources (default 200 entries spread over 20
 * databases of one throwaway cluster) under a connection cap. Reports the time per monitoring round
 * and the most monitoring connections the server ever saw (pg_stat_activity, sampled continuously).
 *
 * Options: --sources N (200), --databases N (20), --cap N (10), --concurrency N (10), --rounds N (5),
 * --pg-major 15|18.
 */
import { parseArgs } from 'node:util';
import { cpus, loadavg } from 'node:os';
import pg from 'pg';
import { availableMajors, startCluster } from '../src/postgres/local-cluster.js';
import { WalMonitor } from '../src/monitor/wal-monitor.js';
import { silentLogger } from '../src/telemetry/logger.js';

const { values: args } = parseArgs({
  options: {
    sources: { type: 'string', default: '200' },
    databases: { type: 'string', default: '20' },
    cap: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '5' },
    'pg-major': { type: 'string' },
  },
});
const sources = Number(args.sources);
const databases = Number(args.databases);
const cap = Number(args.cap);
const rounds = Number(args.rounds);
const major = args['pg-major'] ? Number(args['pg-major']) : Math.max(...availableMajors());

const cluster = await startCluster({ major });
const admin = new pg.Client({ connectionString: cluster.url() });
await admin.connect();
try {
  for (let i = 0; i < databases; i++) await admin.query(`CREATE DATABASE bench_monitor_${i}`);
  const monitor = new WalMonitor({
    minIntervalPerSourceMs: 0,
    concurrency: Number(args.concurrency),
    maxConnections: cap,
    log: silentLogger,
  });
  for (let i = 0; i < sources; i++) {
    monitor.addSource({ id: `s${i}`, name: `s${i}`, config: { url: cluster.url(`bench_monitor_${i % databases}`) }, slots: [`slot_${i}`] });
  }
  let seen = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const r = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'floe-monitor'`);
      seen = Math.max(seen, r.rows[0]!.n);
    }
  })();
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    await monitor.tick();
    times.push((performance.now() - t) / 1000);
  }
  sampling = false;
  await sampler;
  await monitor.close();
  const unreachable = monitor.snapshot().filter((h) => !h.reachable).length;
  console.log(
    JSON.stringify(
      {
        machine: { cpus: cpus().length, load: loadavg().map((l) => Math.round(l * 10) / 10) },
        postgres: major,
        sources,
        databases,
        cap,
        roundSeconds: times.map((s) => Math.round(s * 100) / 100),
        maxMonitorConnectionsSeenByServer: seen,
        unreachable,
      },
      null,
      2,
    ),
  );
} finally {
  await admin.end();
  await cluster.stop();
}
