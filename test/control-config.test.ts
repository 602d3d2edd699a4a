/**
 * Validation of control-plane rows and secret references: what a hand-inserted row can get wrong is
 * reported clearly, and no error ever carries a secret.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import {
  checkDestination,
  checkSourceUrl,
  resolvePipelineConfig,
  type DestinationRow,
  type PipelineRow,
  type SourceRow,
} from '../src/control/config.js';
import { encryptSecret, loadSecretKey, redactSecrets, resolveSecret } from '../src/control/secrets.js';
import { secretBinding } from '../src/control/config.js';
import { FloeError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'floe-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY = randomBytes(32).toString('base64');
const PASSWORD = 'p@ss:w/o%rd with space';
// The binding of a source password (secretBinding in config.ts); trust-boundary.test.ts covers binding itself.
const B = 'source/app/password@db.example:5432';

const source = (over: Partial<SourceRow> = {}): SourceRow => ({
  id: '1',
  name: 'app',
  url: 'postgres://floe@db.example:5432/app',
  password: 'env:FLOE_SECRET_APP_PG_PASSWORD',
  options: {},
  ...over,
});
const destination = (over: Partial<DestinationRow> = {}): DestinationRow => ({
  id: '2',
  name: 'wh',
  type: 'duckdb',
  url: 'duckdb:/var/lib/floe/wh.duckdb',
  secrets: {},
  options: {},
  ...over,
});
const pipeline = (over: Partial<PipelineRow> = {}): PipelineRow => ({
  id: '3',
  name: 'app_to_wh',
  sourceId: '1',
  destinationId: '2',
  publication: 'app_pub',
  slotName: 'floe_app_to_wh',
  options: {},
  status: 'START',
  state: 'stopped',
  lastError: null,
  lastErrorAt: null,
  lagBytes: null,
  destinationBreaker: null,
  slotRetainedBytes: null,
  slotWalStatus: null,
  lagSeconds: null,
  monitoredAt: null,
  durableLsn: null,
  ownerWorker: null,
  configVersion: 7,
  deleteRequestedAt: null,
  dropSlot: false,
  createdAt: new Date(),
  updatedAt: new Date(),
  ...over,
});

function resolveError(rows: Parameters<typeof resolvePipelineConfig>[0], env: Record<string, string> = {}): FloeError {
  const r = resolvePipelineConfig(rows, env);
  if (r.ok) throw new Error('expected the configuration to be refused');
  return r.error;
}

describe('resolvePipelineConfig', () => {
  it('resolves a valid pipeline into what the runtime needs', () => {
    const r = resolvePipelineConfig(
      {
        pipeline: pipeline({
          options: {
            batch_max_bytes: 2097152,
            merge_interval_ms: '250',
            delete_mode: 'soft',
            max_uncommitted_bytes: 268435456,
            binary: 'on',
          },
        }),
        source: source({ options: { connect_timeout_ms: 3000 } }),
        destination: destination(),
      },
      { FLOE_SECRET_APP_PG_PASSWORD: PASSWORD },
    );
    if (!r.ok) throw r.error;
    const c = r.config;
    expect(c).toMatchObject({
      name: 'app_to_wh',
      publication: 'app_pub',
      slotName: 'floe_app_to_wh',
      status: 'START',
      configVersion: 7,
      sourceName: 'app',
      destination: { type: 'duckdb', url: 'duckdb:/var/lib/floe/wh.duckdb', deleteMode: 'soft', secrets: {} },
      runtime: { batchMaxBytes: 2097152, mergeIntervalMs: 250, batchMaxMs: undefined, maxUncommittedBytes: 268435456, binary: 'on' },
    });
    expect(c.source.connectTimeoutMs).toBe(3000);
    // The password travels inside the URL, encoded so that pg decodes it back exactly.
    const u = new URL(c.source.url);
    expect(decodeURIComponent(u.password)).toBe(PASSWORD);
    expect(u.username).toBe('floe');
    expect(u.host).toBe('db.example:5432');
    expect(c.secretValues).toEqual([PASSWORD]);
    // An accidental log line of the whole config leaks nothing.
    for (const text of [JSON.stringify(c), inspect(c, { depth: 5 })]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(encodeURIComponent(PASSWORD));
      expect(text).toContain('postgres://floe:***@db.example:5432/app');
    }
  });

  it('accepts a source without a password (trust, certificates, .pgpass)', () => {
    const r = resolvePipelineConfig({ pipeline: pipeline(), source: source({ password: null }), destination: destination() }, {});
    if (!r.ok) throw r.error;
    expect(r.config.source.url).toBe('postgres://floe@db.example:5432/app');
  });

  it('resolves destination secrets from files and encrypted values', () => {
    const keyFile = join(dir, 'key.p8');
    writeFileSync(keyFile, '\n-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n\n');
    const url = 'snowflake://floe@acme-xy123/analytics/public?warehouse=load';
    const binding = secretBinding({ kind: 'destination', name: 'wh', secret: 'private_key_passphrase', url });
    const enc = encryptSecret('passphrase-123', loadSecretKey({ FLOE_SECRET_KEY: KEY }), binding);
    const r = resolvePipelineConfig(
      {
        pipeline: pipeline(),
        source: source({ password: null }),
        destination: destination({
          type: 'snowflake',
          url,
          secrets: { private_key: `file:${keyFile}`, private_key_passphrase: enc },
        }),
      },
      { FLOE_SECRET_KEY: KEY, FLOE_SECRETS_DIR: dir },
    );
    if (!r.ok) throw r.error;
    expect(r.config.destination.secrets).toEqual({
      private_key: '-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----',
      private_key_passphrase: 'passphrase-123',
    });
  });

  const invalid: [string, () => Parameters<typeof resolvePipelineConfig>[0], RegExp][] = [
    ['missing source', () => ({ pipeline: pipeline(), destination: destination() }), /pipeline app_to_wh: source 1 does not exist/],
    ['missing destination', () => ({ pipeline: pipeline(), source: source() }), /destination 2 does not exist/],
    [
      'unknown destination type',
      () => ({ pipeline: pipeline(), source: source(), destination: destination({ type: 'bigquery' }) }),
      /destination wh: unknown destination type "bigquery".*duckdb, snowflake/,
    ],
    [
      'bad duckdb URL',
      () => ({ pipeline: pipeline(), source: source(), destination: destination({ url: 'file:/tmp/x.duckdb' }) }),
      /DuckDB destination URL has the form duckdb:/,
    ],
    [
      'bad duckdb parameter',
      () => ({ pipeline: pipeline(), source: source(), destination: destination({ url: 'duckdb:/x.duckdb?cache=4' }) }),
      /unknown DuckDB destination parameter "cache"/,
    ],
    [
      'bad source URL',
      () => ({ pipeline: pipeline(), source: source({ url: 'mysql://floe@db/app' }), destination: destination() }),
      /source app: the source URL must start with postgres:\/\//,
    ],
    [
      'password inside the source URL',
      () => ({ pipeline: pipeline(), source: source({ url: 'postgres://floe:hunter2@db/app' }), destination: destination() }),
      /source app: the source URL contains a password/,
    ],
    [
      'plain-text password in the row',
      () => ({ pipeline: pipeline(), source: source({ password: 'hunter2' }), destination: destination() }),
      /source app: password is not a secret reference/,
    ],
    [
      'option of the wrong type',
      () => ({ pipeline: pipeline({ options: { batch_max_ms: 'soon' } }), source: source(), destination: destination() }),
      /pipeline option batch_max_ms must be an integer from 1 to 3600000/,
    ],
    [
      'option out of range',
      () => ({ pipeline: pipeline({ options: { snapshot_parallelism: 1000 } }), source: source(), destination: destination() }),
      /snapshot_parallelism must be an integer from 1 to 64/,
    ],
    [
      'unknown option',
      () => ({ pipeline: pipeline({ options: { batch_max_msec: 5 } }), source: source(), destination: destination() }),
      /unknown pipeline option "batch_max_msec".*known: batch_max_bytes/,
    ],
    [
      'bad delete mode',
      () => ({ pipeline: pipeline({ options: { delete_mode: 'archive' } }), source: source(), destination: destination() }),
      /delete_mode must be hard or soft/,
    ],
    [
      'bad binary mode',
      () => ({ pipeline: pipeline({ options: { binary: 'true' } }), source: source(), destination: destination() }),
      /binary must be off or on/,
    ],
    [
      'options not an object',
      () => ({ pipeline: pipeline({ options: [1, 2] }), source: source(), destination: destination() }),
      /pipeline options must be a JSON object/,
    ],
    [
      'illegal slot name',
      () => ({ pipeline: pipeline({ slotName: 'Floe-Slot' }), source: source(), destination: destination() }),
      /invalid slot name "Floe-Slot"/,
    ],
    [
      'unknown status',
      () => ({ pipeline: pipeline({ status: 'RUN' }), source: source(), destination: destination() }),
      /status "RUN" is neither START nor PAUSE/,
    ],
    [
      'secret a destination does not take',
      () => ({ pipeline: pipeline(), source: source(), destination: destination({ secrets: { password: 'env:X' } }) }),
      /the duckdb destination takes no secret "password"/,
    ],
    [
      'plain-text destination secret',
      () => ({
        pipeline: pipeline(),
        source: source(),
        destination: destination({ type: 'snowflake', url: 'snowflake://a@acct/db/s', secrets: { private_key_passphrase: 'hunter2' } }),
      }),
      /destination secret private_key_passphrase is not a secret reference/,
    ],
    [
      'Snowflake password secret (key pair only)',
      () => ({
        pipeline: pipeline(),
        source: source(),
        destination: destination({ type: 'snowflake', url: 'snowflake://a@acct/db/s', secrets: { password: 'env:FLOE_SECRET_X' } }),
      }),
      /the snowflake destination does not use the password secret \(the Snowflake destination authenticates with a key pair only/,
    ],
    [
      'Snowflake oauth_token secret (key pair only)',
      () => ({
        pipeline: pipeline(),
        source: source(),
        destination: destination({ type: 'snowflake', url: 'snowflake://a@acct/db/s', secrets: { oauth_token: 'env:FLOE_SECRET_X' } }),
      }),
      /does not use the oauth_token secret.*key pair only/,
    ],
  ];

  it.each(invalid)('refuses %s with a clear message', (_name, rows, message) => {
    const e = resolveError(rows(), { FLOE_SECRET_APP_PG_PASSWORD: PASSWORD, X: 'x' });
    expect(e).toBeInstanceOf(FloeError);
    expect(e.kind).toBe('config');
    expect(e.retry).toBe('none');
    expect(e.oneLine()).toMatch(message);
    expect(e.oneLine()).not.toContain('hunter2');
    expect(e.oneLine()).not.toContain(PASSWORD);
  });
});

describe('secret references', () => {
  it('names a missing environment variable without any value', () => {
    const e = resolveError({ pipeline: pipeline(), source: source(), destination: destination() }, { OTHER: PASSWORD });
    expect(e.oneLine()).toBe(
      'pipeline app_to_wh: source app: password: environment variable FLOE_SECRET_APP_PG_PASSWORD is not set (set FLOE_SECRET_APP_PG_PASSWORD in the environment of every floe worker)',
    );
  });

  it('reads files trimmed, and names an unreadable file', () => {
    const f = join(dir, 'pw');
    const env = { FLOE_SECRETS_DIR: dir };
    writeFileSync(f, `  ${PASSWORD}\n`);
    expect(resolveSecret(`file:${f}`, 'password', env, B)).toBe(PASSWORD);
    expect(() => resolveSecret(`file:${join(dir, 'missing')}`, 'password', env, B)).toThrow(
      /secret file .*missing cannot be read \(ENOENT\)/,
    );
    expect(() => resolveSecret('file:relative/pw', 'password', env, B)).toThrow(/not a secret reference/);
    writeFileSync(f, '\n');
    expect(() => resolveSecret(`file:${f}`, 'password', env, B)).toThrow(/is empty/);
  });

  it('round-trips enc:v2 values, each encryption different', () => {
    const key = () => loadSecretKey({ FLOE_SECRET_KEY: KEY });
    const a = encryptSecret(PASSWORD, key(), B);
    const b = encryptSecret(PASSWORD, key(), B);
    expect(a).toMatch(/^enc:v2:[A-Za-z0-9+/]+=*$/);
    expect(a).not.toBe(b);
    expect(a).not.toContain(Buffer.from(PASSWORD).toString('base64'));
    expect(resolveSecret(a, 'password', { FLOE_SECRET_KEY: KEY }, B)).toBe(PASSWORD);
    // Hex keys work the same.
    const hex = Buffer.from(KEY, 'base64').toString('hex');
    expect(resolveSecret(b, 'password', { FLOE_SECRET_KEY: hex }, B)).toBe(PASSWORD);
  });

  it('refuses a wrong key, a tampered value and a missing key, without the secret', () => {
    const enc = encryptSecret(PASSWORD, loadSecretKey({ FLOE_SECRET_KEY: KEY }), B);
    const otherKey = randomBytes(32).toString('base64');
    const wrong = () => resolveSecret(enc, 'password', { FLOE_SECRET_KEY: otherKey }, B);
    expect(wrong).toThrow(/password: cannot decrypt the enc:v2: secret/);
    try {
      wrong();
    } catch (err) {
      expect((err as FloeError).oneLine()).not.toContain(PASSWORD);
      expect((err as FloeError).hint).toMatch(/or under another FLOE_SECRET_KEY/);
    }
    const blob = Buffer.from(enc.slice('enc:v2:'.length), 'base64');
    blob[blob.length - 1]! ^= 1;
    expect(() => resolveSecret(`enc:v2:${blob.toString('base64')}`, 'password', { FLOE_SECRET_KEY: KEY }, B)).toThrow(/cannot decrypt/);
    expect(() => resolveSecret(enc, 'password', {}, B)).toThrow(/FLOE_SECRET_KEY is not set/);
    expect(() => loadSecretKey({ FLOE_SECRET_KEY: randomBytes(16).toString('base64') })).toThrow(/must be 32 bytes/);
    expect(() => loadSecretKey({ FLOE_SECRET_KEY: 'not a key' })).toThrow(/must be 32 bytes/);
  });

  it('redacts secret values, raw and URL-encoded, from error texts', () => {
    const text = `connect to postgres://floe:${encodeURIComponent(PASSWORD)}@db/app failed; password was ${PASSWORD}`;
    const out = redactSecrets(text, [PASSWORD]);
    expect(out).toBe('connect to postgres://floe:***@db/app failed; password was ***');
  });
});

describe('URL checks', () => {
  it('wants a user and no password in source URLs', () => {
    expect(checkSourceUrl('postgresql://floe@db/app?sslmode=require')).toBe('postgresql://floe@db/app?sslmode=require');
    expect(() => checkSourceUrl('postgres://db/app')).toThrow(/names no user/);
    expect(() => checkSourceUrl('postgres://floe@db/app?password=x')).toThrow(/contains a password/);
    expect(() => checkSourceUrl('not a url')).toThrow(/not a valid URL/);
  });

  it('checks destination URLs without opening them', () => {
    expect(checkDestination('duckdb', 'duckdb:/data/wh.duckdb?memory_limit=2GB')).toBe('duckdb');
    expect(() => checkDestination('duckdb', 'duckdb:/data/wh.duckdb?memory_limit=lots')).toThrow(/invalid memory_limit "lots"/);
    expect(checkDestination('duckdb', 'duckdb:/data/wh.duckdb?memory_limit=256MB&threads=2')).toBe('duckdb');
    expect(() => checkDestination('duckdb', 'duckdb:/data/wh.duckdb?threads=0')).toThrow(/invalid threads "0"/);
    expect(checkDestination('duckdb', 'duckdb:/data/wh.duckdb?checkpoint_threshold=256MB')).toBe('duckdb');
    expect(() => checkDestination('duckdb', 'duckdb:/data/wh.duckdb?checkpoint_threshold=often')).toThrow(
      /invalid checkpoint_threshold "often"/,
    );
    expect(checkDestination('duckdb', 'duckdb:/data/wh.duckdb?journal_snapshot=true')).toBe('duckdb');
    expect(() => checkDestination('duckdb', 'duckdb:/data/wh.duckdb?journal_snapshot=yes')).toThrow(/invalid journal_snapshot "yes"/);
    expect(() => checkDestination('duckdb', 'duckdb:/data/wh.duckdb?wal=1')).toThrow(/unknown DuckDB destination parameter "wal"/);
    expect(() => checkDestination('duckdb', 'duckdb://')).toThrow(/names no file/);
    expect(() => checkDestination('duckdb', 'snowflake://floe@acct/db')).toThrow(/has the form duckdb:/);
    expect(checkDestination('snowflake', 'snowflake://floe@acme-xy123/db/schema?warehouse=w')).toBe('snowflake');
    expect(() => checkDestination('snowflake', 'snowflake:///db')).toThrow(/names no account/);
    expect(() => checkDestination('snowflake', 'snowflake://floe:pw@acct/db')).toThrow(/contains a secret/);
    expect(() => checkDestination('snowflake', 'snowflake://floe@acct/db?private_key=abc')).toThrow(/contains a secret/);
    expect(() => checkDestination('snowflake', 'https://acct.snowflakecomputing.com')).toThrow(/must start with snowflake:\/\//);
  });
});
