/**
 * Bad input reaches the user as one clear line on stderr and a non-zero exit,
 * and nothing is written: no destination file, no slot, no state schema.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { runFloe } from './helpers/cli.js';

/** The last stderr line that is not a JSON log line. */
const errorLine = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => l.startsWith('floe: error:'))
    .join('\n');

const cluster = testClusters()[0]!;

describe('floe replicate refuses bad input', () => {
  let db: TestDatabase;
  let replicaCluster: RunningCluster;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    await db.sql(`CREATE TABLE ok (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text);
      CREATE PUBLICATION pub_ok FOR TABLE ok; CREATE PUBLICATION pub_nokey FOR TABLE ok, nokey;
      CREATE ROLE norepl LOGIN; GRANT SELECT ON ok TO norepl;`);
    // A second server: wal_level=replica and password authentication for role "app".
    replicaCluster = await startCluster({
      major: cluster.major,
      config: { wal_level: 'replica' },
      hba: ['host all app 127.0.0.1/32 scram-sha-256'],
    });
    const c = new pg.Client({ connectionString: replicaCluster.url() });
    await c.connect();
    await c.query(`CREATE ROLE app LOGIN REPLICATION SUPERUSER PASSWORD 'right-password'`);
    await c.end();
  });
  afterAll(async () => {
    await db.sql(`DROP ROLE IF EXISTS norepl`).catch(() => undefined);
    await db.drop();
    await replicaCluster?.stop();
    dir.remove();
  });

  const cases: [string, () => string[], RegExp][] = [
    [
      'wrong password',
      () => ['--source', `postgres://app:wrong-password@127.0.0.1:${replicaCluster.port}/postgres`, '--publication', 'p'],
      /password authentication failed.*check the user name and password/,
    ],
    [
      'wal_level=replica',
      () => ['--source', `postgres://app:right-password@127.0.0.1:${replicaCluster.port}/postgres`, '--publication', 'p'],
      /wal_level is 'replica'.*wal_level = 'logical'/,
    ],
    ['missing publication', () => ['--source', db.url, '--publication', 'nope'], /publication "nope" does not exist/],
    [
      'table without replica identity',
      () => ['--source', db.url, '--publication', 'pub_nokey'],
      /public\.nokey has no usable replica identity.*REPLICA IDENTITY FULL/,
    ],
    [
      'user without REPLICATION',
      () => ['--source', db.url.replace('postgres@', 'norepl@'), '--publication', 'pub_ok'],
      /lacks the REPLICATION attribute/,
    ],
    [
      'unreachable host',
      () => ['--source', 'postgres://u:pw@127.0.0.1:1/db', '--publication', 'p'],
      /cannot connect to the source.*reachable/,
    ],
    [
      'bad destination',
      () => ['--source', db.url, '--publication', 'pub_ok', '--destination', 'mysql://x'],
      /unsupported destination "mysql"/,
    ],
    [
      'bad DuckDB parameter',
      () => ['--source', db.url, '--publication', 'pub_ok', '--destination', 'duckdb:./x.duckdb?memory_limit=lots'],
      /invalid memory_limit "lots"/,
    ],
    [
      'bad DuckDB threads',
      () => ['--source', db.url, '--publication', 'pub_ok', '--destination', 'duckdb:./x.duckdb?threads=many'],
      /invalid threads "many"/,
    ],
    ['bad slot name', () => ['--source', db.url, '--publication', 'pub_ok', '--slot', 'Bad-Name'], /invalid slot name/],
    [
      'bad number',
      () => ['--source', db.url, '--publication', 'pub_ok', '--batch-max-ms', '-5'],
      /--batch-max-ms must be an integer from 1 to 3600000/,
    ],
  ];

  it.each(cases)('%s', async (_name, args, expected) => {
    const out = join(dir.path, `${_name.replaceAll(' ', '_')}.duckdb`);
    const full = ['replicate', '--metrics-port', '0', '--slot', 'floe_bad', '--destination', `duckdb:${out}`, ...args()];
    const r = await runFloe(full);
    expect(r.code).not.toBe(0);
    const line = errorLine(r.stderr) || r.stderr;
    expect(line).toMatch(expected);
    expect(line.split('\n').length).toBe(1);
    // Secrets never reach the terminal.
    expect(r.stderr).not.toContain('wrong-password');
    expect(r.stderr).not.toContain('right-password');
    // Nothing written: no destination file, no slot, no state schema in the source.
    expect(existsSync(out)).toBe(false);
    const [slots] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM pg_replication_slots WHERE database = current_database()`);
    expect(Number(slots!.n)).toBe(0);
    const [schema] = await db.sql<{ n: string }>(`SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'floe'`);
    expect(Number(schema!.n)).toBe(0);
  });

  it('documents every flag in --help', async () => {
    const r = await runFloe(['replicate', '--help']);
    expect(r.code).toBe(0);
    for (const flag of [
      '--source',
      '--publication',
      '--slot',
      '--destination',
      '--state',
      '--delete-mode',
      '--snapshot-parallelism',
      '--batch-max-bytes',
      '--merge-interval-ms',
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });
});
