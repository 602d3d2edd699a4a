/**
 * `floe doctor`: each finding has a severity and, for problems, a fix; the exit code says whether
 * anything is an error. Against the Snowflake emulator (a healthy account, a wrong key, a warehouse
 * that does not exist), a real PostgreSQL source, and DuckDB paths.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { runFloe } from './helpers/cli.js';
import { checkDestination, checkSource, formatFindings } from '../src/cli/doctor.js';

const cluster = testClusters()[0]!;

describe('floe doctor', () => {
  let sf: SnowflakeFixture;
  let db: TestDatabase;
  beforeAll(async () => {
    sf = await snowflakeFixture();
    db = await createTestDatabase(cluster, 'doctor');
    await db.sql(`CREATE TABLE ok_t (id int PRIMARY KEY); CREATE TABLE nokey (v int); CREATE PUBLICATION good FOR TABLE ok_t`);
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('a healthy Snowflake account: credentials, role, warehouse, schemas, privileges and streaming are ok', async () => {
    const findings = await checkDestination(sf.url());
    expect(findings.filter((f) => f.severity === 'error')).toEqual([]);
    expect(findings.map((f) => f.check)).toEqual(
      expect.arrayContaining(['credentials', 'role', 'warehouse', 'CREATE TABLE, INSERT', 'Snowpipe Streaming', 'CREATE PIPE', 'pipes']),
    );
    // No role= in the URL: a warning with the fix.
    expect(findings.find((f) => f.check === 'role')).toMatchObject({ severity: 'warn', fix: expect.stringContaining('role=') });
    expect(findings.find((f) => f.check === 'CREATE PIPE')).toMatchObject({ severity: 'ok' });
    // The probe table and pipe are gone again.
    expect((await sf.emulator.state()).tables.some((t) => t.name === '_FLOE_DOCTOR_PROBE')).toBe(false);
    expect(await sf.rows(`SHOW PIPES LIKE '_FLOE_DOCTOR_PIPE' IN ACCOUNT`)).toEqual([]);
  }, 60_000);

  it('a key the account does not know: an error naming the fingerprint floe presents', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const wrong = join(sf.dir.path, 'doctor-wrong.p8');
    writeFileSync(wrong, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const findings = await checkDestination(sf.url().replace(/private_key_file=[^&]+/, `private_key_file=${wrong}`));
    expect(findings).toHaveLength(1);
    expect(findings[0]).toMatchObject({ check: 'credentials', severity: 'error' });
    expect(findings[0]!.detail).toMatch(/SHA256:/);
    expect(findings[0]!.fix).toMatch(/ALTER USER FLOE SET RSA_PUBLIC_KEY=.*fingerprint must be SHA256:/);
  }, 30_000);

  it('a warehouse that does not exist is an error with a fix', async () => {
    const findings = await checkDestination(sf.url().replace('warehouse=COMPUTE_WH', 'warehouse=NO_SUCH_WH'));
    const errors = findings.filter((f) => f.severity === 'error');
    expect(errors.length).toBeGreaterThan(0);
    expect(formatFindings(findings)).toMatch(/error .*\n\s+fix: /);
  }, 30_000);

  it('a bad destination URL is one error finding, without secrets', async () => {
    const findings = await checkDestination(`${sf.url()}&private_key_passphrase=hunter2-secret&bogus=1`);
    expect(findings).toEqual([expect.objectContaining({ check: 'destination URL', severity: 'error' })]);
    expect(JSON.stringify(findings)).not.toContain('hunter2-secret');
  });

  it('the source: preflight passes for a good publication, fails with a fix for a missing one', async () => {
    const good = await checkSource(db.url, 'good');
    // The test clusters keep max_slot_wal_keep_size unlimited: the one warning a plain setup gets.
    expect(good.filter((f) => f.severity !== 'ok').map((f) => f.check)).toEqual(['max_slot_wal_keep_size']);
    expect(good.find((f) => f.check === 'max_slot_wal_keep_size')!.fix).toMatch(/max_slot_wal_keep_size/);
    const missing = await checkSource(db.url, 'nope');
    expect(missing.find((f) => f.check === 'source preflight')).toMatchObject({
      severity: 'error',
      detail: expect.stringContaining('publication "nope" does not exist'),
      fix: expect.stringContaining('CREATE PUBLICATION'),
    });
  });

  it('the source: FOR ALL TABLES and numeric columns Snowflake cannot hold as NUMBER are warnings with fixes', async () => {
    await db.sql(`CREATE TABLE money (id int PRIMARY KEY, amount numeric, exact numeric(40,2), fits numeric(12,2));
      CREATE PUBLICATION everything FOR ALL TABLES`);
    const findings = await checkSource(db.url, 'everything');
    // The hazard itself: FOR ALL TABLES pulled in this file's keyless table, which preflight refuses.
    expect(findings.filter((f) => f.severity === 'error')).toEqual([
      expect.objectContaining({ check: 'source preflight', detail: expect.stringContaining('public.nokey') }),
    ]);
    expect(findings.find((f) => f.check === 'FOR ALL TABLES')).toMatchObject({
      severity: 'warn',
      fix: expect.stringContaining('FOR TABLE'),
    });
    const wide = findings.find((f) => f.check === 'wide numeric columns')!;
    expect(wide.severity).toBe('warn');
    expect(wide.detail).toContain('public.money.amount');
    expect(wide.detail).toContain('public.money.exact');
    expect(wide.detail).not.toContain('fits');
    await db.sql(`DROP PUBLICATION everything; DROP TABLE money`);
  });

  it('works for a least-privilege replication role (no superuser, no pg_monitor): no permission errors', async () => {
    const role = `floe_lp_${db.name}`;
    await db.sql(`CREATE TABLE lp_money (id int PRIMARY KEY, amount numeric); CREATE PUBLICATION lp_pub FOR TABLE lp_money;
      CREATE ROLE ${role} LOGIN REPLICATION; GRANT SELECT ON lp_money TO ${role}`);
    try {
      const url = new URL(db.url);
      url.username = role;
      const findings = await checkSource(url.toString(), 'lp_pub');
      expect(JSON.stringify(findings)).not.toMatch(/permission denied/);
      expect(findings.filter((f) => f.severity === 'error')).toEqual([]);
      expect(findings.find((f) => f.check === 'wide numeric columns')?.detail).toContain('public.lp_money.amount');
    } finally {
      await db.sql(`DROP PUBLICATION lp_pub; DROP TABLE lp_money; DROP ROLE ${role}`);
    }
  });

  it('DuckDB: a path under /proc is an error, even for root (access(2) says writable there)', async () => {
    const [finding] = await checkDestination('duckdb:/proc/floe.duckdb');
    expect(finding).toMatchObject({ severity: 'error', detail: expect.stringContaining('/proc') });
  });

  it('DuckDB: a writable path is ok, an unwritable directory is an error', async () => {
    expect(await checkDestination(`duckdb:${join(sf.dir.path, 'new', 'w.duckdb')}`)).toEqual([expect.objectContaining({ severity: 'ok' })]);
    const ro = join(sf.dir.path, 'ro');
    mkdirSync(ro);
    chmodSync(ro, 0o500);
    const findings = await checkDestination(`duckdb:${join(ro, 'w.duckdb')}`);
    // root may write anywhere: then the path is fine.
    expect(findings[0]!.severity).toBe(process.getuid?.() === 0 ? 'ok' : 'error');
  });

  it('the command prints the findings and exits 1 on errors, 0 otherwise', async () => {
    const ok = await runFloe([
      'doctor',
      '--source',
      db.url,
      '--publication',
      'good',
      '--destination',
      `duckdb:${join(sf.dir.path, 'c.duckdb')}`,
    ]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^ok {4}source connection: PostgreSQL \d+/m);
    const bad = await runFloe(['doctor', '--source', db.url, '--publication', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/^error source preflight: .*\n\s+fix: /m);
  }, 60_000);
});
