/**
 * Control-plane rows are data, not authority over the worker host (design.md invariant 9): a row cannot
 * make a worker read environment variables or files its operator did not set aside for floe, reuse an
 * encrypted secret made for another row or host, redirect the Snowflake endpoint, or send a password in
 * cleartext to a server that TLS did not verify.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createCipheriv, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import {
  resolvePipelineConfig,
  resolveSource,
  secretBinding,
  type DestinationRow,
  type PipelineRow,
  type SourceRow,
} from '../src/control/config.js';
import { encryptSecret, loadSecretKey, resolveSecret, MAX_SECRET_FILE_BYTES } from '../src/control/secrets.js';
import { parseSnowflakeUrl } from '../src/destination/snowflake/config.js';
import { connectSource } from '../src/postgres/source.js';
import { connectReplication } from '../src/postgres/replication.js';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { FloeError } from '../src/errors.js';
import { testClusters } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';

const KEY = randomBytes(32).toString('base64');
const SECRET = 'Tr0ub4dor&3-secret';
const dir = tempDir();
const secretsDir = join(dir.path, 'secrets');
mkdirSync(secretsDir);
afterAll(() => dir.remove());

const source = (over: Partial<SourceRow> = {}): SourceRow => ({
  id: '1',
  name: 'app',
  url: 'postgres://floe@db.example:5432/app',
  password: null,
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
const pipeline = (): PipelineRow => ({
  id: '3',
  name: 'p',
  sourceId: '1',
  destinationId: '2',
  publication: 'pub',
  slotName: 'floe_p',
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
  configVersion: 1,
  deleteRequestedAt: null,
  dropSlot: false,
  createdAt: new Date(),
  updatedAt: new Date(),
});

/** Resolves a source row's password as a worker would, returning the error text or the value. */
function resolvePassword(password: string, env: Record<string, string>, over: Partial<SourceRow> = {}): string {
  try {
    const { config } = resolveSource(source({ password, ...over }), env);
    return `resolved:${decodeURIComponent(new URL(config.url).password)}`;
  } catch (err) {
    expect(err).toBeInstanceOf(FloeError);
    const line = (err as FloeError).oneLine();
    expect(line).not.toContain('\n');
    return line;
  }
}

describe('env: references', () => {
  const env = { FLOE_SECRET_KEY: KEY, HOME_SECRET: SECRET, FLOE_SECRET_APP_PW: SECRET, PGPASSWORD: SECRET };

  it('read only variables with the operator prefix (default FLOE_SECRET_), never FLOE_SECRET_KEY', () => {
    expect(resolvePassword('env:FLOE_SECRET_APP_PW', env)).toBe(`resolved:${SECRET}`);
    for (const name of ['HOME_SECRET', 'PGPASSWORD', 'FLOE_SECRET_KEY']) {
      const out = resolvePassword(`env:${name}`, env);
      expect(out).toMatch(new RegExp(`environment variable ${name} may not be read by a secret reference`));
      expect(out).not.toContain(SECRET);
      expect(out).not.toContain(KEY);
    }
  });

  it('follow FLOE_SECRET_ENV_PREFIX, which still never opens FLOE_SECRET_KEY', () => {
    const custom = { ...env, FLOE_SECRET_ENV_PREFIX: 'FLOE_' };
    expect(resolvePassword('env:FLOE_SECRET_APP_PW', custom)).toBe(`resolved:${SECRET}`);
    expect(resolvePassword('env:FLOE_SECRET_KEY', custom)).toMatch(/FLOE_SECRET_KEY may not be read/);
    expect(resolvePassword('env:PGPASSWORD', custom)).toMatch(/start with FLOE_/);
  });
});

describe('file: references', () => {
  const inside = join(secretsDir, 'pw');
  writeFileSync(inside, `${SECRET}\n`);
  const outside = join(dir.path, 'outside-pw');
  writeFileSync(outside, SECRET);
  const env = { FLOE_SECRETS_DIR: secretsDir };

  it('are off unless the worker has FLOE_SECRETS_DIR', () => {
    expect(resolvePassword(`file:${inside}`, {})).toMatch(/file: secret references are off on this worker \(FLOE_SECRETS_DIR is not set\)/);
    expect(resolvePassword(`file:${inside}`, env)).toBe(`resolved:${SECRET}`);
  });

  it('read nothing outside FLOE_SECRETS_DIR, also through symbolic links or ..', () => {
    symlinkSync(outside, join(secretsDir, 'link-out'));
    symlinkSync('/etc/passwd', join(secretsDir, 'passwd'));
    for (const path of [outside, '/etc/passwd', join(secretsDir, 'link-out'), join(secretsDir, 'passwd'), `${secretsDir}/../outside-pw`]) {
      const out = resolvePassword(`file:${path}`, env);
      expect(out).toMatch(/is outside FLOE_SECRETS_DIR/);
      expect(out).not.toContain(SECRET);
    }
  });

  it('refuse devices, FIFOs and big files at once, without reading them whole', () => {
    // An operator who set the directory too wide still gets no /dev/zero read into memory.
    expect(resolvePassword('file:/dev/zero', { FLOE_SECRETS_DIR: '/dev' })).toMatch(/secret file \/dev\/zero is not a regular file/);
    const fifo = join(secretsDir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    expect(resolvePassword(`file:${fifo}`, env)).toMatch(/is not a regular file/);
    expect(Date.now() - started).toBeLessThan(5000);
    const big = join(secretsDir, 'big');
    writeFileSync(big, Buffer.alloc(MAX_SECRET_FILE_BYTES + 1, 'a'));
    expect(resolvePassword(`file:${big}`, env)).toMatch(/is larger than 64 KiB/);
    const pem = join(secretsDir, 'key.p8');
    writeFileSync(pem, Buffer.alloc(MAX_SECRET_FILE_BYTES, 'k'));
    expect(resolvePassword(`file:${pem}`, env)).toBe(`resolved:${'k'.repeat(MAX_SECRET_FILE_BYTES)}`);
  });
});

describe('TLS files in control-plane source URLs', () => {
  const ca = join(secretsDir, 'ca.crt');
  writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');
  const env = { FLOE_SECRETS_DIR: secretsDir };
  const resolve = (url: string, e: Record<string, string>) => {
    try {
      return resolveSource(source({ url }), e).config.url;
    } catch (err) {
      return (err as Error).message;
    }
  };

  it('are read only inside FLOE_SECRETS_DIR, like file: references', () => {
    const base = 'postgres://floe@db.example:5432/app?sslmode=verify-full';
    expect(resolve(`${base}&sslrootcert=${ca}`, env)).toContain('sslrootcert');
    expect(resolve(`${base}&sslrootcert=${ca}`, {})).toMatch(
      /TLS files in control-plane URLs are off on this worker \(FLOE_SECRETS_DIR is not set\)/,
    );
    for (const key of ['sslrootcert', 'sslcert', 'sslkey']) {
      expect(resolve(`${base}&${key}=/etc/passwd`, env)).toMatch(
        new RegExp(`source app: ${key}: file /etc/passwd is outside FLOE_SECRETS_DIR`),
      );
    }
  });
});

describe('enc: references are bound to their row, setting and host', () => {
  const env = { FLOE_SECRET_KEY: KEY };
  const key = () => loadSecretKey(env);
  const forApp = encryptSecret(SECRET, key(), secretBinding({ kind: 'source', name: 'app', url: source().url }));

  it('decrypt for the row they were made for', () => {
    expect(forApp).toMatch(/^enc:v2:/);
    // The URL may change in ways that keep the host (another database, sslmode).
    expect(resolvePassword(forApp, env, { url: 'postgres://floe@DB.example/app2?sslmode=require' })).toBe(`resolved:${SECRET}`);
  });

  it('do not decrypt when copied to another row or left in a row pointing at another host', () => {
    for (const over of [
      { name: 'other' },
      { url: 'postgres://floe@attacker.example:5432/app' },
      { url: 'postgres://floe@db.example:5433/app' },
    ]) {
      const out = resolvePassword(forApp, env, over);
      expect(out).toMatch(/cannot decrypt the enc:v2: secret \(it was encrypted for another row, setting or host/);
      expect(out).not.toContain(SECRET);
    }
    // A destination secret made for one setting does not serve as another.
    const url = 'snowflake://floe@acme-xy123/analytics/public?warehouse=load';
    const passphrase = encryptSecret(
      SECRET,
      key(),
      secretBinding({ kind: 'destination', name: 'wh', secret: 'private_key_passphrase', url }),
    );
    const r = resolvePipelineConfig(
      {
        pipeline: pipeline(),
        source: source(),
        destination: destination({ type: 'snowflake', url, secrets: { private_key: passphrase } }),
      },
      env,
    );
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.oneLine()).toMatch(/destination wh: secret private_key: cannot decrypt the enc:v2: secret/);
  });

  it('refuse unbound enc:v1 values unless the operator allows them while migrating', () => {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', Buffer.from(KEY, 'base64'), iv);
    cipher.setAAD(Buffer.from('floe secret v1'));
    const body = Buffer.concat([cipher.update(SECRET, 'utf8'), cipher.final()]);
    const v1 = `enc:v1:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
    expect(resolvePassword(v1, env)).toMatch(/enc:v1: secrets are not bound to their row and are refused \(re-encrypt it/);
    expect(resolvePassword(v1, { ...env, FLOE_ALLOW_ENC_V1: '1' })).toBe(`resolved:${SECRET}`);
  });

  it('need a binding to decrypt at all', () => {
    expect(() => resolveSecret(forApp, 'password', env, 'source/app/password@db.example:5433')).toThrow(/cannot decrypt/);
  });
});

describe('Snowflake base_url', () => {
  const url = 'snowflake://floe@acme-xy123/analytics/public?warehouse=load';

  it('is refused in a control-plane row; the worker operator sets FLOE_SNOWFLAKE_BASE_URL instead', () => {
    const rows = { pipeline: pipeline(), source: source() };
    const r = resolvePipelineConfig(
      { ...rows, destination: destination({ type: 'snowflake', url: `${url}&base_url=https://attacker.example` }) },
      {},
    );
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.oneLine()).toMatch(/base_url is not allowed in a control-plane destination URL.*FLOE_SNOWFLAKE_BASE_URL/);
    const ok = resolvePipelineConfig(
      { ...rows, destination: destination({ type: 'snowflake', url }) },
      { FLOE_SNOWFLAKE_BASE_URL: 'http://127.0.0.1:8080' },
    );
    if (!ok.ok) throw ok.error;
    expect(new URL(ok.config.destination.url).searchParams.get('base_url')).toBe('http://127.0.0.1:8080');
  });

  it('takes plain http only to loopback, from anyone', () => {
    const key = join(dir.path, 'k.p8');
    execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key], { stdio: 'ignore' });
    const withBase = (base: string) => () => parseSnowflakeUrl(`${url}&private_key_file=${key}&base_url=${base}`, {});
    expect(withBase('http://attacker.example:8080')).toThrow(/base_url may use plain http only to a loopback address/);
    expect(withBase('http://10.0.0.1')).toThrow(/loopback/);
    expect(withBase('http://127.0.0.1:8080')().accountUrl).toBe('http://127.0.0.1:8080');
    expect(withBase('http://localhost:8080')().accountUrl).toBe('http://localhost:8080');
    expect(withBase('http://[::1]:8080')().accountUrl).toBe('http://[::1]:8080');
    expect(withBase('https://privatelink.example')().accountUrl).toBe('https://privatelink.example');
  });
});

describe('cleartext passwords', () => {
  const cluster = testClusters()[0]!;
  let server: RunningCluster;
  beforeAll(async () => {
    // A real server that asks role "app" for its password in cleartext, as a hostile one would.
    server = await startCluster({ major: cluster.major, hba: ['host all app 127.0.0.1/32 password'] });
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    await c.query(`CREATE ROLE app LOGIN REPLICATION PASSWORD '${SECRET}'`);
    await c.end();
  });
  afterAll(async () => server?.stop());

  const row = () => source({ url: `postgres://app@127.0.0.1:${server.port}/postgres`, password: 'env:FLOE_SECRET_APP_PW' });

  it('are not sent for a control-plane source over a connection TLS did not verify', async () => {
    const { config } = resolveSource(row(), { FLOE_SECRET_APP_PW: SECRET });
    for (const connect of [() => connectSource(config), () => connectReplication(config)]) {
      const err = await connect().then(
        (c) => c.end().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(FloeError);
      expect((err as FloeError).oneLine()).toMatch(/server asked for the password in cleartext without verified TLS; it was not sent/);
      expect((err as FloeError).oneLine()).not.toContain(SECRET);
    }
  });

  it("are sent where the worker operator allows it, and from the operator's own command line", async () => {
    const { config } = resolveSource(row(), {
      FLOE_SECRET_APP_PW: SECRET,
      FLOE_CLEARTEXT_PASSWORD_HOSTS: `other, 127.0.0.1:${server.port}`,
    });
    const c = await connectSource(config);
    await c.end();
    const own = await connectSource({ url: `postgres://app:${encodeURIComponent(SECRET)}@127.0.0.1:${server.port}/postgres` });
    await own.end();
  });
});
