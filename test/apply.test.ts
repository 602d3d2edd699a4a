/**
 * `floe apply -f` and `floe export` against a real control plane: a file applied twice changes nothing
 * the second time, a changed pipeline option restarts only that pipeline (a running `floe run` worker
 * restarts it and not the other), --dry-run and --prune, export round trips, and bad files change nothing.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { runFloe, startFloe, type FloeProcess } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { migrate } from '../src/control/schema.js';

const cluster = testClusters().at(-1)!;

describe(`floe apply and floe export on PostgreSQL ${cluster.major}`, () => {
  let control: TestDatabase;
  let source: TestDatabase;
  let db: pg.Pool;
  let worker: FloeProcess | undefined;
  const dir = tempDir();
  const file = join(dir.path, 'floe.yaml');
  let env: Record<string, string>;

  const yaml = (p1Options: string, extra = '') => `
sources:
  shop:
    url: ${source.url}
    password: env:FLOE_SECRET_APPLY_TEST
destinations:
  wh:
    type: duckdb
    path: ${join(dir.path, 'wh.duckdb')}
  wh2:
    type: duckdb
    url: duckdb:${join(dir.path, 'wh2.duckdb')}
pipelines:
  p1:
    source: shop
    destination: wh
    publication: pub
    status: START
    options: { ${p1Options} }
  p2:
    source: shop
    destination: wh2
    publication: pub
    status: START
    options: { batch_max_ms: 100, status_interval_ms: 500 }
${extra}`;

  const apply = async (text: string, ...flags: string[]) => {
    writeFileSync(file, text);
    return runFloe(['apply', '-f', file, ...flags], env);
  };
  const rows = async () =>
    (await db.query(`SELECT name, config_version::int AS v, status, options, updated_at FROM floe.pipeline ORDER BY name`)).rows;
  const everything = async () => {
    const out: unknown[] = [];
    for (const t of ['source', 'destination']) out.push((await db.query(`SELECT * FROM floe.${t} ORDER BY 1`)).rows);
    // What users control (workers keep reporting state, lag and slot figures meanwhile).
    const user = `name, source_id, destination_id, publication, slot_name, options, status, config_version, delete_requested_at, updated_at`;
    out.push((await db.query(`SELECT ${user} FROM floe.pipeline ORDER BY 1`)).rows);
    return JSON.stringify(out);
  };

  beforeAll(async () => {
    control = await createTestDatabase(cluster, 'ctl');
    source = await createTestDatabase(cluster, 'src');
    await source.sql(`CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 10) g;
      CREATE PUBLICATION pub FOR TABLE t;`);
    db = new pg.Pool({ connectionString: control.url, max: 2 });
    const c = await db.connect();
    await migrate(c);
    c.release();
    env = { FLOE_DATABASE_URL: control.url, FLOE_SECRET_APPLY_TEST: 'unused-by-trust', FLOE_LOG_LEVEL: 'info' };
  });

  afterAll(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await db?.end();
    for (const slot of ['floe_p1', 'floe_p2']) await source?.dropSlot(slot).catch(() => undefined);
    await source?.drop();
    await control?.drop();
    dir.remove();
  });

  it('creates everything, then applying the same file again is a no-op', async () => {
    const first = await apply(yaml('batch_max_ms: 100, status_interval_ms: 500'));
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('+ source shop\n+ destination wh\n+ destination wh2\n+ pipeline p1\n+ pipeline p2\n');
    expect(first.stdout).toContain('plan: 5 to create, 0 to change, 0 to remove, 0 unchanged\napplied');
    const before = await everything();
    const second = await apply(yaml('batch_max_ms: 100, status_interval_ms: 500'));
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('plan: 0 to create, 0 to change, 0 to remove, 5 unchanged\nnothing to change');
    // Not one row written: config versions and updated_at as they were.
    expect(await everything()).toBe(before);
  });

  it('restarts only the pipeline whose option changed; --dry-run changes nothing', async () => {
    worker = startFloe(['run', '--worker-id', 'w1', '--poll-interval-ms', '500', '--metrics-port', '0'], env);
    await waitFor(
      'both pipelines to stream',
      async () =>
        (await rows()).every((r) => (r as { status: string }).status === 'START') &&
        (await db.query(`SELECT 1 FROM floe.pipeline WHERE state = 'streaming'`)).rowCount === 2,
      90_000,
    );
    const before = await rows();
    const dry = await apply(yaml('batch_max_ms: 250, status_interval_ms: 500'), '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('~ pipeline p1 (options)\n= pipeline p2 (unchanged)\n');
    expect(dry.stdout).toContain('dry run: nothing was changed');
    expect(await rows()).toEqual(before);

    const changed = await apply(yaml('batch_max_ms: 250, status_interval_ms: 500'));
    expect(changed.code, changed.stderr).toBe(0);
    const after = await rows();
    expect(after.map((r) => [r.name, r.v])).toEqual([
      ['p1', before[0]!.v + 1],
      ['p2', before[1]!.v],
    ]);
    expect(after[0]!.options).toEqual({ batch_max_ms: 250, status_interval_ms: 500 });
    const restarted = () =>
      worker!
        .stderr()
        .split('\n')
        .filter((l) => l.includes('configuration changed; restarting the pipeline'))
        .map((l) => (JSON.parse(l) as { pipeline: string }).pipeline);
    await waitFor('the worker to restart p1', () => restarted().includes('p1'));
    await waitFor(
      'p1 to stream again',
      async () => (await db.query(`SELECT 1 FROM floe.pipeline WHERE state = 'streaming'`)).rowCount === 2,
      60_000,
    );
    expect(restarted()).toEqual(['p1']);
  });

  it('exports a file that applies as a no-op, with secrets as references', async () => {
    const out = join(dir.path, 'exported.yaml');
    const r = await runFloe(['export', '-f', out], env);
    expect(r.code, r.stderr).toBe(0);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('password: env:FLOE_SECRET_APPLY_TEST');
    expect(text).not.toContain('unused-by-trust');
    const again = await runFloe(['apply', '-f', out], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('nothing to change');
  });

  it('refuses bad files with one line and changes nothing', async () => {
    const before = await everything();
    const cases: [string, RegExp][] = [
      ['sources: [1, 2', /not valid YAML/],
      ['colour: blue\n', /unknown key "colour"/],
      [yaml('batch_max_ms: 0'), /pipeline p1: pipeline option batch_max_ms must be an integer from 1/],
      [
        yaml('batch_max_ms: 100', '  p3: { source: nosuch, destination: wh, publication: pub }'),
        /pipeline p3: names source "nosuch", which the file does not define/,
      ],
      [
        yaml('batch_max_ms: 100', '  p3: { source: shop, destination: wh, publication: pub, slot: floe_p1 }'),
        /slot "floe_p1" is already used by pipeline p1/,
      ],
      [yaml('batch_max_ms: 100').replace('password: env:FLOE_SECRET_APPLY_TEST', 'password: hunter2'), /source shop: .*password/],
      [yaml('batch_max_ms: 100').replace('status: START', 'status: GO'), /status: must be START or PAUSE/],
    ];
    for (const [text, message] of cases) {
      const r = await apply(text);
      expect(r.code, `${text}\n${r.stdout}`).toBe(2);
      expect(r.stderr, text).toMatch(message);
      expect(r.stderr.trim().split('\n'), text).toHaveLength(1);
    }
    expect(await everything()).toBe(before);
  });

  it('--prune removes what the file no longer names', async () => {
    // Keep the slot: the worker still runs p2 until it notices.
    const text = yaml('batch_max_ms: 250, status_interval_ms: 500')
      .replace(/ {2}p2:[\s\S]*$/, '')
      .replace(/ {2}wh2:\n.*\n.*\n/, '');
    const plan = await apply(text, '--prune', '--dry-run');
    expect(plan.stdout).toContain('- pipeline p2\n- destination wh2\n');
    const r = await apply(text, '--prune');
    expect(r.code, r.stderr).toBe(0);
    expect((await rows()).map((x) => x.name)).toEqual(['p1']);
    expect((await db.query(`SELECT name FROM floe.destination`)).rows).toEqual([{ name: 'wh' }]);
  });
});
