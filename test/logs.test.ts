/**
 * Logs never carry secrets: field redaction (URLs keep host and database, lose the password), the
 * line scrubber (credentials in URLs and PEM keys inside messages, secrets known from the environment),
 * the pretty format; and end to end, `floe replicate` with a password in the source URL and a Snowflake
 * private key and passphrase in its environment prints none of them, through snapshot, streaming, an
 * outage and a failed start.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { createLogger, prettyLine, registerSecret, registerUrlSecrets, scrubLine } from '../src/telemetry/logger.js';
import { redactUrl } from '../src/postgres/source.js';
import { testClusters, createTestDatabase, withAdmin, type TestDatabase } from './harness/database.js';
import { runFloe, startFloe } from './helpers/cli.js';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from '../src/postgres/local-cluster.js';

function captured(format: 'json' | 'pretty' = 'json') {
  const lines: string[] = [];
  const log = createLogger({
    format,
    level: 'trace',
    registerEnvironment: false,
    destination: new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  });
  return { log, text: () => lines.join('') };
}

const { privateKey } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'key-passphrase-42' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
const keyBody = privateKey.split('\n')[2]!; // one base64 line from the middle of the key

describe('log redaction', () => {
  it('redacts secret fields and keeps URLs without their password', () => {
    const { log, text } = captured();
    log.info(
      {
        source: 'postgres://app:pa55-in-url@db.example:5432/shop',
        password: 'field-password',
        config: { passphrase: 'nested-passphrase', privateKey: 'nested-key', token: 'tok-123456' },
        headers: { authorization: 'Bearer abcdef123456' },
        webhookSecret: 'hook-secret',
        table: 'public.orders',
      },
      'starting',
    );
    const line = JSON.parse(text()) as Record<string, unknown>;
    expect(line.source).toBe('postgres://app:***@db.example:5432/shop');
    expect(line.password).toBe('[redacted]');
    expect(line.config).toEqual({ passphrase: '[redacted]', privateKey: '[redacted]', token: '[redacted]' });
    expect(line.headers).toEqual({ authorization: '[redacted]' });
    expect(line.webhookSecret).toBe('[redacted]');
    expect(line.table).toBe('public.orders');
    for (const s of ['pa55-in-url', 'field-password', 'nested-passphrase', 'nested-key', 'tok-123456', 'abcdef123456', 'hook-secret']) {
      expect(text()).not.toContain(s);
    }
  });

  it('scrubs credentials, PEM keys and registered secrets from messages and error strings', () => {
    registerSecret('env-only-secret-value');
    const { log, text } = captured();
    log.error({ err: 'connect to redis://:redispw@cache:6379 failed; key ' + privateKey }, 'failed with env-only-secret-value inside');
    expect(text()).not.toContain('redispw');
    expect(text()).not.toContain(keyBody);
    expect(text()).not.toContain('env-only-secret-value');
    expect(text()).toContain('redis://:***@cache:6379');
    expect(text()).toContain('[redacted private key]');
    expect(scrubLine('https://user:p%40ss@host/x')).toBe('https://user:***@host/x');
  });

  it('pretty-prints one readable line per record', () => {
    const { log, text } = captured('pretty');
    log.warn({ pipeline: 'orders', table: 'public.items', rows: 3 }, 'table columns changed');
    expect(text()).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN  table columns changed pipeline=orders table=public.items rows=3\n$/);
    expect(prettyLine('not json')).toBe('not json');
  });
});

describe('secrets in a real run', () => {
  const cluster = testClusters()[0]!;
  let db: TestDatabase;
  const dir = tempDir();
  const role = `logs_${Math.random().toString(36).slice(2, 8)}`;
  const password = 'S3cret-source-pw!';
  beforeAll(async () => {
    db = await createTestDatabase(cluster);
    await withAdmin(cluster, (c) => c.query(`CREATE ROLE ${role} LOGIN REPLICATION SUPERUSER PASSWORD '${password}'`));
    await db.sql(`CREATE TABLE s (id int PRIMARY KEY, v text); INSERT INTO s VALUES (1, 'a'); CREATE PUBLICATION sp FOR TABLE s`);
  });
  afterAll(async () => {
    await db.dropSlot('sslot');
    await db.drop();
    await withAdmin(cluster, (c) => c.query(`DROP ROLE ${role}`));
    dir.remove();
  });

  it('prints no password, key or passphrase through snapshot, streaming, an outage and a failed start', async () => {
    const url = new URL(db.url);
    url.username = role;
    url.password = password;
    const env = {
      FLOE_SNOWFLAKE_PRIVATE_KEY: privateKey,
      FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE: 'key-passphrase-42',
      FLOE_ALERT_WEBHOOK_SECRET: 'webhook-secret-77',
      FLOE_ALERT_WEBHOOK_URL: 'http://127.0.0.1:1/hook',
      FLOE_WAL_WARNING_MB: '0.0001',
      FLOE_WAL_DANGER_MB: '0.0002',
    };
    const secrets = [password, encodeURIComponent(password), keyBody, 'key-passphrase-42', 'webhook-secret-77'];
    const port = await freePort();
    const p = startFloe(
      [
        'replicate',
        ...['--source', url.toString(), '--publication', 'sp', '--slot', 'sslot', '--log-level', 'trace'],
        ...['--destination', `duckdb:${join(dir.path, 's.duckdb')}`, '--metrics-port', String(port)],
        ...['--batch-max-ms', '50', '--status-interval-ms', '200', '--monitor-interval', '0.2', '--heartbeat-interval', '0.2'],
      ],
      env,
    );
    let stderr = '';
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor('ready', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200);
      await db.sql(`INSERT INTO s SELECT g, 'row-value-' || g FROM generate_series(2, 50) g`);
      await waitFor('streamed', async () => /op="i"\} 49/.test(await (await fetch(`${base}/metrics`)).text()));
      // An outage: every floe connection is cut; the retries log errors.
      await withAdmin(cluster, (c) =>
        c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'floe%'`, [db.name]),
      );
      await waitFor('reconnected', () => p.stderr().includes('pipeline failed, reconnecting'));
      await waitFor('ready again', async () => (await fetch(`${base}/readyz`)).status === 200, 60_000);
    } finally {
      p.kill('SIGTERM');
      const exit = await p.exited;
      stderr = exit.stderr;
      expect(exit.code, exit.stderr).toBe(0);
    }
    // A start that fails on an unreachable source: the error line names the URL without its password.
    const unreachable = new URL(url.toString());
    unreachable.port = '1';
    const failed = await runFloe(
      [
        'replicate',
        ...['--source', unreachable.toString(), '--publication', 'sp', '--slot', 'other_slot', '--metrics-port', '0'],
        ...['--destination', `duckdb:${join(dir.path, 'x.duckdb')}`, '--state', 'memory'],
      ],
      env,
    );
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`postgres://${role}:***@127.0.0.1:1/`);
    // Every log line is JSON and names its pipeline; monitor and heartbeat lines name their source.
    const records = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.length).toBeGreaterThan(5);
    expect(records.every((r) => r.pipeline === 'sslot')).toBe(true);
    expect(records.some((r) => typeof r.alert === 'string' && r.source === `127.0.0.1:${cluster.port}/${db.name}`)).toBe(true);
    const everything = stderr + failed.stdout + failed.stderr;
    expect(everything).toContain('alert'); // alerts were raised and their delivery failed: those lines were written too
    expect(everything).not.toContain('row-value-'); // and no row values at any level
    for (const s of secrets) expect(everything, `secret ${s.slice(0, 6)}... leaked`).not.toContain(s);
  });
});

describe('row values quoted in database errors', () => {
  it('are replaced in log and terminal lines unless FLOE_LOG_ROW_VALUES=1', () => {
    const lines = [
      '{"err":"invalid input syntax for type integer: \\"s3cret-row\\""}',
      'floe: error: invalid input syntax for type integer: "s3cret-row" (fix the column type)',
      '{"err":"Conversion Error: Could not convert string \'s3cret-row\' to INT32"}',
      '{"err":"Numeric value \'s3cret-row\' is not recognized"}',
      '{"err":"Duplicate key \\"id: s3cret-row\\" violates primary key constraint"}',
      'DETAIL: Key (id)=(s3cret-row) already exists.',
    ];
    for (const line of lines) {
      const out = scrubLine(line);
      expect(out).not.toContain('s3cret-row');
      expect(out).toContain('<value>');
    }
    // Names stay: only values are taken out.
    expect(scrubLine('{"msg":"relation \\"public.orders\\" does not exist"}')).toContain('public.orders');
    const before = process.env.FLOE_LOG_ROW_VALUES;
    process.env.FLOE_LOG_ROW_VALUES = '1';
    try {
      expect(scrubLine(lines[0]!)).toContain('s3cret-row');
    } finally {
      if (before === undefined) delete process.env.FLOE_LOG_ROW_VALUES;
      else process.env.FLOE_LOG_ROW_VALUES = before;
    }
  });
});

describe('URL parameters that name a file', () => {
  it('are paths, not secrets: an error about the key file shows which file', () => {
    const url = 'snowflake://floe@acct/db/s?private_key_file=/etc/floe/typo-key.p8&private_key_passphrase=pp-secret-123';
    registerUrlSecrets(url);
    expect(scrubLine('cannot read private_key_file /etc/floe/typo-key.p8: ENOENT')).toBe(
      'cannot read private_key_file /etc/floe/typo-key.p8: ENOENT',
    );
    expect(scrubLine('passphrase pp-secret-123 rejected')).not.toContain('pp-secret-123');
    const redacted = redactUrl('postgres://u@h/db?sslkey=/k.pem&sslpassword=pw-secret-9&private_key_file=/etc/k.p8');
    expect(redacted).toContain('private_key_file=%2Fetc%2Fk.p8');
    expect(redacted).not.toContain('pw-secret-9');
  });
});
