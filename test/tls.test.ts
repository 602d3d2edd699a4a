/**
 * TLS to the source, for the SQL and the replication connections, and to a PostgreSQL state store:
 * a local server with ssl = on and a certificate from a self-signed CA (openssl), which refuses
 * unencrypted connections. sslmode=require encrypts; verify-full checks the CA and the host name; a
 * wrong CA or host name fails with one line that says what to fix.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chownSync, chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { testClusters } from './harness/database.js';
import { startPipeline, tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { connectSource } from '../src/postgres/source.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { FloeError } from '../src/errors.js';

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, a server certificate for DNS:localhost signed by it, and an unrelated CA. */
function makeCertificates(dir: string): void {
  const days = ['-days', '2'];
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=floe test CA', ...days],
    dir,
  );
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-subj', '/CN=other CA', ...days],
    dir,
  );
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName = DNS:localhost\n');
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.crt',
      '-extfile',
      'san.ext',
      ...days,
    ],
    dir,
  );
}

const major = testClusters().at(-1)!.major;

describe(`TLS connections (PostgreSQL ${major})`, () => {
  const dir = tempDir('floe-tls-');
  let cluster: RunningCluster;
  const url = (host: string, query: string, database = 'postgres') => `postgres://postgres@${host}:${cluster.port}/${database}?${query}`;
  const ca = () => join(dir.path, 'ca.crt');
  const other = () => join(dir.path, 'other.crt');

  beforeAll(async () => {
    makeCertificates(dir.path);
    // The server runs as the postgres OS user when we are root: it must own its key (mode 0600).
    chmodSync(dir.path, 0o755);
    for (const f of ['server.crt', 'server.key', 'ca.crt']) {
      if (process.getuid?.() === 0) {
        const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
        chownSync(join(dir.path, f), id('-u'), id('-g'));
      }
      chmodSync(join(dir.path, f), 0o600);
    }
    cluster = await startCluster({
      major,
      config: { ssl: 'on', ssl_cert_file: `'${join(dir.path, 'server.crt')}'`, ssl_key_file: `'${join(dir.path, 'server.key')}'` },
      // Unencrypted connections are refused, so a passing test proves TLS was used.
      hba: ['hostnossl all all 127.0.0.1/32 reject', 'hostnossl replication all 127.0.0.1/32 reject'],
    });
    const admin = new pg.Client({ connectionString: url('localhost', 'sslmode=require&uselibpqcompat=true') });
    await admin.connect();
    await admin.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'); CREATE PUBLICATION tls_pub FOR TABLE t`);
    await admin.end();
  });
  afterAll(async () => {
    await cluster?.stop();
    dir.remove();
  });

  it('refuses a connection without TLS (the server requires it)', async () => {
    await expect(connectSource({ url: url('127.0.0.1', 'sslmode=disable') })).rejects.toThrow(/no encryption|pg_hba/);
  });

  it('replicates over sslmode=require (SQL and replication connections) with the state store over TLS too', async () => {
    const store = new PostgresStateStore(url('127.0.0.1', 'sslmode=require'));
    const destination = new DuckDbDestination({ path: ':memory:' });
    const p = startPipeline({
      source: { url: url('127.0.0.1', 'sslmode=require') },
      publication: 'tls_pub',
      slotName: 'tls_slot',
      destination,
      store,
    });
    try {
      const q = async () => JSON.stringify(await destination.query(`SELECT id, v FROM public.t ORDER BY id`).catch(() => null));
      await waitFor('snapshot over TLS', async () => (await q()) === '[[1,"a"]]');
      const c = await connectSource({ url: url('127.0.0.1', 'sslmode=require') });
      const [row] = (
        await c.query<{ ssl: boolean }>(
          `SELECT bool_and(ssl) AS ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE backend_type = 'walsender'`,
        )
      ).rows;
      await c.query(`INSERT INTO t VALUES (2, 'b')`);
      await c.end();
      expect(row?.ssl).toBe(true);
      await waitFor('stream over TLS', async () => (await q()) === '[[1,"a"],[2,"b"]]');
    } finally {
      await p.stop();
      await destination.close();
      await store.close();
    }
  });

  it('verify-full accepts the right CA and host name', async () => {
    const c = await connectSource({ url: url('localhost', `sslmode=verify-full&sslrootcert=${ca()}`) });
    const [row] = (await c.query<{ ssl: boolean }>(`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`)).rows;
    await c.end();
    expect(row?.ssl).toBe(true);
  });

  it('fails with one actionable line for a wrong CA, a wrong host name, a missing CA file or sslmode=prefer', async () => {
    const failure = async (u: string): Promise<FloeError> => {
      const err = await connectSource({ url: u }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(FloeError);
      const fe = err as FloeError;
      expect(fe.oneLine()).not.toContain('\n');
      return fe;
    };
    const wrongCa = await failure(url('localhost', `sslmode=verify-full&sslrootcert=${other()}`));
    expect(wrongCa.hint).toMatch(/sslrootcert to the CA that signed it/);
    expect(wrongCa.retry).toBe('manual');
    const wrongHost = await failure(url('127.0.0.1', `sslmode=verify-full&sslrootcert=${ca()}`));
    expect(wrongHost.hint).toMatch(/does not name the host/);
    // verify-ca checks the CA only, so the same host name is accepted there.
    const c = await connectSource({ url: url('127.0.0.1', `sslmode=verify-ca&sslrootcert=${ca()}`) });
    await c.end();
    const missing = await failure(url('localhost', `sslmode=verify-full&sslrootcert=${join(dir.path, 'nope.crt')}`));
    expect(missing.kind).toBe('config');
    expect((await failure(url('localhost', 'sslmode=prefer'))).kind).toBe('config');
  });
});
