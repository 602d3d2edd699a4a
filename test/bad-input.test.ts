/**
 * The bad-input suite: replicate, run, doctor, emulator (its flags) and the control-plane commands, run
 * in this process through the same command tree and error handling as bin/floe.js (src/cli/program.ts).
 * Every case: exit code 2, one line on stderr saying what to fix, nothing written (control-plane tables,
 * replication slots, files), and a bounded time to fail.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { buildProgram, failure } from '../src/cli/program.js';

type Result = { code: number; stdout: string; stderr: string; ms: number };

/** Runs `floe ...args` in this process with `env` added to (or, for '', removed from) the environment. */
async function floe(args: string[], env: Record<string, string> = {}): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const program = buildProgram({ writeOut: (t) => (stdout += t), writeErr: (t) => (stderr += t) });
  const saved = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === '') delete process.env[k];
    else process.env[k] = v;
  }
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`floe ${args.join(' ')} did not fail within 30 s`)), 30_000);
    });
    await Promise.race([program.parseAsync(['node', 'floe', ...args]), timeout]);
    return { code: Number(process.exitCode ?? 0), stdout, stderr, ms: Date.now() - started };
  } catch (err) {
    const { code, line } = failure(err);
    return { code, stdout, stderr: stderr + (line ?? ''), ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
    process.exitCode = undefined;
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

const cluster = testClusters()[0]!;

describe('bad input', () => {
  let src: TestDatabase;
  let ctl: TestDatabase;
  const dir = tempDir();
  const out = () => join(dir.path, 'w.duckdb');
  const sf = 'snowflake://floe@acct/db/s';

  beforeAll(async () => {
    src = await createTestDatabase(cluster, 'badsrc');
    ctl = await createTestDatabase(cluster, 'badctl');
    await src.sql(`CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t`);
    expect((await floe(['migrate', '--database-url', ctl.url])).code).toBe(0);
    for (const args of [
      ['source', 'add', 'app', '--url', src.url],
      ['destination', 'add', 'wh', '--type', 'duckdb', '--path', join(dir.path, 'ctl.duckdb')],
      ['pipeline', 'add', 'p', '--source', 'app', '--destination', 'wh', '--publication', 'pub'],
    ]) {
      const r = await floe(args, { FLOE_DATABASE_URL: ctl.url });
      expect(r.code, r.stderr).toBe(0);
    }
  });
  afterAll(async () => {
    await src.drop();
    await ctl.drop();
    dir.remove();
  });

  // A flag given twice is not what these cases test: the case's --destination replaces the default one.
  const replicate = (...extra: string[]) => [
    'replicate',
    '--source',
    src.url,
    '--publication',
    'pub',
    '--slot',
    'floe_bad',
    '--state',
    'memory',
    '--metrics-port',
    '0',
    ...(extra.includes('--destination') ? [] : ['--destination', `duckdb:${out()}`]),
    ...extra,
  ];
  const choices = (flag: string, value: string) => new RegExp(`option '${flag} <[a-z]+>' argument '${value}' is invalid`);

  const cases: [string, () => string[], RegExp, Record<string, string>?][] = [
    // ---- replicate
    [
      'replicate: parallelism too high',
      () => replicate('--snapshot-parallelism', '100000'),
      /--snapshot-parallelism must be an integer from 1 to 64/,
    ],
    [
      'replicate: interval overflows a timer',
      () => replicate('--status-interval-ms', '99999999999'),
      /--status-interval-ms must be an integer from 1 to 600000/,
    ],
    [
      'replicate: a password with unencoded # ? / in the source URL',
      () => [...replicate().map((a) => (a === src.url ? src.url.replace('postgres@', 'postgres:hunter2#a?b/c@') : a))],
      /a connection URL is not a valid URL.*percent-encode/,
    ],
    [
      'replicate: a webhook URL with user:password@',
      () => replicate(),
      /FLOE_ALERT_WEBHOOK_URL \(entry 1\) carries user:password@/,
      { FLOE_ALERT_WEBHOOK_URL: 'https://alerts:hunter2@hooks.example/x' },
    ],
    [
      'replicate: a DuckDB file under /proc',
      () => replicate('--destination', 'duckdb:/proc/floe.duckdb'),
      /under \/proc, a kernel filesystem/,
    ],
    ['replicate: zero batch time', () => replicate('--batch-max-ms', '0'), /--batch-max-ms must be an integer from 1 to 3600000/],
    ['replicate: batch bytes not a number', () => replicate('--batch-max-bytes', 'lots'), /--batch-max-bytes must be an integer/],
    [
      'replicate: batch bytes too big',
      () => replicate('--batch-max-bytes', String(2 ** 40)),
      /--batch-max-bytes must be an integer from 1 to 268435456/,
    ],
    ['replicate: negative merge interval', () => replicate('--merge-interval-ms', '-1'), /--merge-interval-ms must be an integer/],
    ['replicate: fractional range pages', () => replicate('--snapshot-range-pages', '1.5'), /--snapshot-range-pages must be an integer/],
    [
      'replicate: metrics port out of range',
      () => replicate('--metrics-port', '70000'),
      /--metrics-port must be an integer from 0 to 65535/,
    ],
    ['replicate: unknown log level', () => replicate('--log-level', 'loud'), choices('--log-level', 'loud')],
    ['replicate: unknown log format', () => replicate('--log-format', 'xml'), choices('--log-format', 'xml')],
    ['replicate: unknown delete mode', () => replicate('--delete-mode', 'archive'), choices('--delete-mode', 'archive')],
    [
      'replicate: MongoDB state store',
      () => replicate('--state', 'mongodb://x'),
      /unsupported state store "mongodb".*--state takes 'source', 'memory'/,
    ],
    [
      'replicate: unknown FLOE_STATE_STORE',
      () => replicate(),
      /FLOE_STATE_STORE must be postgres or redis, not "etcd"/,
      { FLOE_STATE_STORE: 'etcd' },
    ],
    [
      'replicate: duckdb without a path',
      () => replicate('--destination', 'duckdb:'),
      /the DuckDB destination names no file.*duckdb:\.\/warehouse\.duckdb/,
    ],
    ['replicate: unsupported destination', () => replicate('--destination', 'mysql://x'), /unsupported destination "mysql"/],
    [
      'replicate: unknown DuckDB parameter',
      () => replicate('--destination', `duckdb:${out()}?colour=red`),
      /unknown DuckDB destination parameter "colour"/,
    ],
    [
      'replicate: bad DuckDB memory limit',
      () => replicate('--destination', `duckdb:${out()}?memory_limit=lots`),
      /invalid memory_limit "lots"/,
    ],
    ['replicate: Snowflake without a key', () => replicate('--destination', sf), /private_key_file is required/],
    [
      'replicate: Snowflake base_url in plain http elsewhere',
      () => replicate('--destination', `${sf}?private_key_file=/k.p8&base_url=http://evil.example`),
      /base_url may use plain http only to a loopback address/,
    ],
    [
      'replicate: Snowflake unknown parameter',
      () => replicate('--destination', `${sf}?private_key_file=/k.p8&wharehouse=x`),
      /unknown Snowflake destination parameter "wharehouse"/,
    ],
    [
      'replicate: Snowflake bad channels',
      () => replicate('--destination', `${sf}?private_key_file=/k.p8&channels_per_table=99`),
      /channels_per_table must be between 1 and 16/,
    ],
    ['replicate: bad slot name', () => replicate('--slot', 'Bad-Name'), /invalid slot name/],
    ['replicate: negative heartbeat', () => replicate('--heartbeat-interval', '-1'), /--heartbeat-interval must be a number from 0/],
    ['replicate: monitor interval not a number', () => replicate('--monitor-interval', 'often'), /--monitor-interval must be a number/],
    ['replicate: stall-after too big', () => replicate('--stall-after', '1e12'), /--stall-after must be a number from 0 to 2147483/],
    ['replicate: unknown flag', () => replicate('--frobnicate'), /unknown option '--frobnicate'/],
    [
      'replicate: no publication',
      () => ['replicate', '--source', src.url, '--slot', 's', '--destination', `duckdb:${out()}`],
      /required option '--publication <name>' not specified/,
    ],
    [
      'replicate: no slot',
      () => ['replicate', '--source', src.url, '--publication', 'pub', '--destination', `duckdb:${out()}`],
      /required option '--slot <name>' not specified/,
    ],
    [
      'replicate: no source',
      () => ['replicate', '--publication', 'pub', '--slot', 's', '--destination', `duckdb:${out()}`],
      /required option '--source <url>' not specified/,
      { FLOE_SOURCE_URL: '' },
    ],
    [
      'replicate: no destination',
      () => ['replicate', '--source', src.url, '--publication', 'pub', '--slot', 's'],
      /required option '--destination <url>' not specified/,
    ],
    // ---- run
    ['run: no pipelines allowed', () => ['run', '--max-pipelines', '0'], /--max-pipelines must be an integer from 1 to 1000/],
    ['run: too many pipelines', () => ['run', '--max-pipelines', '100000'], /--max-pipelines must be an integer from 1 to 1000/],
    ['run: zero poll interval', () => ['run', '--poll-interval-ms', '0'], /--poll-interval-ms must be an integer from 1/],
    ['run: lease ttl not a number', () => ['run', '--lease-ttl-ms', 'long'], /--lease-ttl-ms must be an integer/],
    ['run: negative metrics port', () => ['run', '--metrics-port', '-1'], /--metrics-port must be an integer from 0 to 65535/],
    ['run: unknown log level', () => ['run', '--log-level', 'loud'], choices('--log-level', 'loud')],
    [
      'run: no control plane',
      () => ['run', '--metrics-port', '0'],
      /no control-plane database given \(set FLOE_DATABASE_URL or pass --database-url\)/,
      { FLOE_DATABASE_URL: '' },
    ],
    [
      'run: control plane not PostgreSQL',
      () => ['run', '--metrics-port', '0', '--database-url', 'mysql://x/y'],
      /control-plane database URL must start with postgres:\/\//,
    ],
    ['run: unknown flag', () => ['run', '--workers', '3'], /unknown option '--workers'/],
    // ---- doctor
    ['doctor: source without publication', () => ['doctor', '--source', src.url], /--source needs --publication/],
    ['doctor: unknown flag', () => ['doctor', '--fix'], /unknown option '--fix'/],
    // ---- emulator (flags only)
    ['emulator: port out of range', () => ['emulator', '--port', '70000'], /--port must be an integer from 0 to 65535/],
    ['emulator: port not a number', () => ['emulator', '--port', 'http'], /--port must be an integer/],
    ['emulator: negative commit delay', () => ['emulator', '--commit-delay-ms', '-5'], /--commit-delay-ms must be an integer/],
    ['emulator: channel rps not a number', () => ['emulator', '--channel-rps', 'fast'], /--channel-rps must be an integer/],
    ['emulator: unknown flag', () => ['emulator', '--tls'], /unknown option '--tls'/],
    // ---- control plane
    ['source add: bad name', () => ['source', 'add', 'App!', '--url', 'postgres://u@h/db'], /invalid source name "App!"/],
    [
      'source add: password in the URL',
      () => ['source', 'add', 'x', '--url', 'postgres://u:hunter2@h/db'],
      /the source URL contains a password/,
    ],
    [
      'source add: plain-text password',
      () => ['source', 'add', 'x', '--url', 'postgres://u@h/db', '--password', 'hunter2'],
      /--password is not a secret reference/,
    ],
    [
      'source add: not PostgreSQL',
      () => ['source', 'add', 'x', '--url', 'mysql://u@h/db'],
      /must start with postgres:\/\/ or postgresql:\/\//,
    ],
    ['source add: no user', () => ['source', 'add', 'x', '--url', 'postgres://h/db'], /the source URL names no user/],
    [
      'source add: unknown option',
      () => ['source', 'add', 'x', '--url', 'postgres://u@h/db', '--option', 'timeout=5'],
      /unknown source option "timeout"/,
    ],
    [
      'source add: option out of range',
      () => ['source', 'add', 'x', '--url', 'postgres://u@h/db', '--option', 'connect_timeout_ms=99999999'],
      /connect_timeout_ms must be an integer from 100 to 600000/,
    ],
    ['source add: existing name', () => ['source', 'add', 'app', '--url', 'postgres://u@h/db'], /source "app" already exists/],
    ['source remove: unknown', () => ['source', 'remove', 'nope'], /no source named "nope"/],
    ['source remove: in use', () => ['source', 'remove', 'app'], /source "app" is used by pipeline p/],
    [
      'destination add: duckdb without path',
      () => ['destination', 'add', 'x', '--type', 'duckdb'],
      /a duckdb destination needs --path <file>/,
    ],
    [
      'destination add: base_url in a row',
      () => ['destination', 'add', 'x', '--type', 'snowflake', '--url', `${sf}?base_url=https://elsewhere.example`],
      /base_url is not allowed in a control-plane destination URL/,
    ],
    [
      'destination add: Snowflake password secret',
      () => ['destination', 'add', 'x', '--type', 'snowflake', '--url', sf, '--secret', 'password=env:FLOE_SECRET_X'],
      /does not use the password secret.*key pair only/,
    ],
    [
      'destination add: Snowflake OAuth secret',
      () => ['destination', 'add', 'x', '--type', 'snowflake', '--url', sf, '--secret', 'oauth_token=env:FLOE_SECRET_X'],
      /does not use the oauth_token secret/,
    ],
    [
      'destination add: DuckDB secret',
      () => ['destination', 'add', 'x', '--type', 'duckdb', '--path', out(), '--secret', 'private_key=env:FLOE_SECRET_X'],
      /the duckdb destination takes no secret "private_key"/,
    ],
    [
      'destination add: key in the URL',
      () => ['destination', 'add', 'x', '--type', 'snowflake', '--url', `${sf}?private_key_file=/k.p8`],
      /the Snowflake destination URL contains a secret/,
    ],
    [
      'destination add: unknown type',
      () => ['destination', 'add', 'x', '--type', 'bigquery', '--path', out()],
      /argument 'bigquery' is invalid/,
    ],
    [
      'pipeline add: unknown source',
      () => ['pipeline', 'add', 'q', '--source', 'nope', '--destination', 'wh', '--publication', 'pub'],
      /no source named "nope"/,
    ],
    [
      'pipeline add: option out of range',
      () => [
        'pipeline',
        'add',
        'q',
        '--source',
        'app',
        '--destination',
        'wh',
        '--publication',
        'pub',
        '--option',
        'snapshot_parallelism=1000',
      ],
      /snapshot_parallelism must be an integer from 1 to 64/,
    ],
    ['pipeline set: unknown pipeline', () => ['pipeline', 'set', 'nope', '--option', 'batch_max_ms=5'], /no pipeline named "nope"/],
    [
      'pipeline set: unknown option',
      () => ['pipeline', 'set', 'p', '--option', 'batch_max_msec=5'],
      /unknown pipeline option "batch_max_msec"/,
    ],
    ['pipeline start: unknown pipeline', () => ['pipeline', 'start', 'nope'], /no pipeline named "nope"/],
    ['pipeline: unknown subcommand', () => ['pipeline', 'frobnicate', 'p'], /unknown command 'frobnicate'/],
    ['secret encrypt: for no row', () => ['secret', 'encrypt', '--url', 'postgres://u@h/db'], /say which row the secret is for/],
    [
      'secret encrypt: bad source URL',
      () => ['secret', 'encrypt', '--source', 'x', '--url', 'mysql://u@h/db'],
      /must start with postgres:\/\//,
    ],
    [
      'status: control plane not PostgreSQL',
      () => ['status', '--database-url', 'mysql://x/y'],
      /control-plane database URL must start with postgres:\/\//,
    ],
    [
      'migrate: control plane not PostgreSQL',
      () => ['migrate', '--database-url', 'mysql://db/x'],
      /control-plane database URL must start with postgres:\/\//,
    ],
  ];

  const contents = () =>
    ctl.sql(`SELECT (SELECT json_agg(s ORDER BY id) FROM floe.source s) AS s, (SELECT json_agg(d ORDER BY id) FROM floe.destination d) AS d,
                    (SELECT json_agg(p ORDER BY id) FROM floe.pipeline p) AS p`);

  it(`has at least 60 cases (${cases.length})`, () => expect(cases.length).toBeGreaterThanOrEqual(60));

  it.each(cases)('%s', async (_name, args, expected, env) => {
    const before = await contents();
    const files = readdirSync(dir.path).sort();
    const r = await floe(args(), { FLOE_DATABASE_URL: ctl.url, ...env });
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(r.code, r.stderr).toBe(2);
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^floe: (error: )?/);
    expect(lines[0]).toMatch(expected);
    expect(lines[0]).not.toContain('hunter2');
    expect(r.ms).toBeLessThan(20_000);
    expect(await contents()).toEqual(before);
    expect(readdirSync(dir.path).sort()).toEqual(files);
    expect(await src.sql(`SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`)).toEqual([]);
    const [schema] = await src.sql<{ n: number }>(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'floe'`);
    expect(schema!.n).toBe(0);
  });

  it('a control-plane role without grants gets a hint about the control plane, not the replication user', async () => {
    const role = `floe_noacl_${ctl.name}`;
    await ctl.sql(`CREATE ROLE ${role} LOGIN`);
    try {
      const url = new URL(ctl.url);
      url.username = role;
      const r = await floe(['source', 'list'], { FLOE_DATABASE_URL: url.toString() });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/permission denied/);
      expect(r.stderr).toMatch(/control-plane role needs USAGE on schema floe/);
      expect(r.stderr).not.toMatch(/replication user/);
    } finally {
      await ctl.sql(`DROP ROLE ${role}`);
    }
  });

  it('tells how to keep passwords off the command line in --help', async () => {
    for (const command of ['replicate', 'doctor']) {
      const r = await floe([command, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/PGPASSWORD/);
      expect(r.stdout).toMatch(/FLOE_SOURCE_URL/);
    }
    const run = await floe(['run', '--help']);
    expect(run.stdout).toMatch(/--metrics-host/);
    expect(run.stdout).toMatch(/--readyz-details/);
  });
});
