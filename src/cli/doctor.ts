/**
 * `floe doctor`: checks a source and/or a destination before anything streams, and prints each
 * finding with a severity (ok, warn, error) and, for problems, what to do. Exit code 1 when any check
 * failed with an error.
 *
 * Source (`--source --publication`): the pipeline's own preflight (PostgreSQL version, wal_level,
 * REPLICATION, the publication, replica identity and SELECT on every published table).
 *
 * Snowflake destination: credentials (the key-pair JWT is accepted), role and warehouse in use,
 * database and schemas (exist or can be created), privileges by doing what floe does on a probe
 * table in the landing schema (CREATE TABLE, INSERT, Snowpipe Streaming through its default pipe up
 * to a committed offset token, DROP), and the pipes there.
 *
 * DuckDB destination: the file opens (or its directory is writable).
 */
import type pg from 'pg';
import { Command } from 'commander';
import { accessSync, constants, existsSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { FloeError, coerceError } from '../errors.js';
import { connectSource, preflight, serverInfo } from '../postgres/source.js';
import { parseSnowflakeUrl, type SnowflakeConfig } from '../destination/snowflake/config.js';
import { createSnowflakeClients } from '../destination/snowflake/snowflake-destination.js';
import { createPipe, literal, quoteSf } from '../destination/snowflake/sql.js';
import { silentLogger } from '../telemetry/logger.js';
import { pseudoFilesystem } from '../destination/duckdb/duckdb-destination.js';

export type Severity = 'ok' | 'warn' | 'error';

export interface Finding {
  readonly check: string;
  readonly severity: Severity;
  readonly detail: string;
  /** What to do about a warn or error. */
  readonly fix?: string;
}

export function doctorCommand(): Command {
  return new Command('doctor')
    .description('check a source and/or destination: credentials, privileges, settings; exit 1 on errors')
    .option(
      '--source <url>',
      'source PostgreSQL URL without a password (use PGPASSWORD, ~/.pgpass or FLOE_SOURCE_URL: ps shows command lines)',
      process.env.FLOE_SOURCE_URL,
    )
    .option('--publication <name>', 'publication to check on the source')
    .option('--destination <url>', 'destination URL (snowflake://... or duckdb:...)')
    .option('--json', 'print the findings as JSON')
    .action(async (opts: { source?: string; publication?: string; destination?: string; json?: boolean }) => {
      if (!opts.source && !opts.destination) {
        throw new FloeError('config', 'nothing to check', { hint: 'give --source and --publication, --destination, or both' });
      }
      if (opts.source && !opts.publication) throw new FloeError('config', '--source needs --publication');
      const findings: Finding[] = [];
      if (opts.source) findings.push(...(await checkSource(opts.source, opts.publication!)));
      if (opts.destination) findings.push(...(await checkDestination(opts.destination)));
      process.stdout.write(opts.json ? JSON.stringify(findings, null, 2) + '\n' : formatFindings(findings));
      if (findings.some((f) => f.severity === 'error')) process.exitCode = 1;
    });
}

export function formatFindings(findings: readonly Finding[]): string {
  return findings
    .map((f) => `${f.severity.padEnd(5)} ${f.check}: ${f.detail}${f.fix && f.severity !== 'ok' ? `\n      fix: ${f.fix}` : ''}\n`)
    .join('');
}

const fromError = (check: string, err: unknown, fallbackFix?: string): Finding => {
  const e = coerceError(err);
  return { check, severity: 'error', detail: e.message, fix: e.hint ?? fallbackFix };
};

export async function checkSource(url: string, publication: string): Promise<Finding[]> {
  let client;
  try {
    client = await connectSource({ url, applicationName: 'floe-doctor' });
  } catch (err) {
    return [fromError('source connection', err)];
  }
  try {
    const info = await serverInfo(client);
    const findings: Finding[] = [{ check: 'source connection', severity: 'ok', detail: `PostgreSQL ${info.major}` }];
    try {
      await preflight(client, publication);
      findings.push({
        check: 'source preflight',
        severity: 'ok',
        detail: `wal_level, REPLICATION and publication "${publication}" are usable`,
      });
    } catch (err) {
      findings.push(fromError('source preflight', err));
    }
    const slots = await client.query<{ free: string }>(
      `SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::text AS free`,
    );
    const free = Number(slots.rows[0]?.free ?? 0);
    findings.push(
      free > 0
        ? { check: 'replication slots', severity: 'ok', detail: `${free} free` }
        : {
            check: 'replication slots',
            severity: 'error',
            detail: 'max_replication_slots is used up',
            fix: 'drop an unused slot or raise max_replication_slots (restart needed)',
          },
    );
    findings.push(...(await sourceHazards(client, publication)));
    return findings;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Settings and shapes that do not stop replication but hurt later (design.md §3). One query each, all cheap. */
async function sourceHazards(client: pg.Client, publication: string): Promise<Finding[]> {
  const findings: Finding[] = [];
  const one = async <R extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<R | undefined> =>
    (await client.query<R>(sql, values)).rows[0];
  const senders = await one<{ free: number }>(
    `SELECT current_setting('max_wal_senders')::int - (SELECT count(*)::int FROM pg_stat_replication) AS free`,
  );
  findings.push(
    (senders?.free ?? 0) > 1
      ? { check: 'WAL senders', severity: 'ok', detail: `${senders!.free} free` }
      : {
          check: 'WAL senders',
          severity: 'warn',
          detail: `${senders?.free ?? 0} free; floe needs one per pipeline, and one more while a table is snapshotted`,
          fix: 'raise max_wal_senders (restart needed)',
        },
  );
  const keep = await one<{ v: string }>(`SELECT current_setting('max_slot_wal_keep_size') AS v`);
  findings.push(
    keep?.v === '-1'
      ? {
          check: 'max_slot_wal_keep_size',
          severity: 'warn',
          detail: 'unlimited: a slot whose consumer stops retains WAL until the disk is full',
          fix: 'set max_slot_wal_keep_size to what the disk can spare (floe resyncs a slot invalidated by it), and set FLOE_WAL_WARNING_MB/FLOE_WAL_DANGER_MB alerts below it',
        }
      : { check: 'max_slot_wal_keep_size', severity: 'ok', detail: keep?.v ?? 'unknown' },
  );
  const monitor = await one<{ ok: boolean; role: string }>(
    `SELECT (pg_has_role(current_user, 'pg_monitor', 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS ok, current_user AS role`,
  );
  findings.push(
    monitor?.ok
      ? { check: 'pg_monitor', severity: 'ok', detail: 'WAL directory size is readable' }
      : {
          check: 'pg_monitor',
          severity: 'warn',
          detail: 'the WAL monitor cannot read the pg_wal size (per-slot figures still work)',
          fix: `GRANT pg_monitor TO ${monitor?.role ?? '<role>'}`,
        },
  );
  const all = await one<{ all: boolean }>(`SELECT puballtables AS all FROM pg_publication WHERE pubname = $1`, [publication]);
  if (all?.all) {
    findings.push({
      check: 'FOR ALL TABLES',
      severity: 'warn',
      detail: `publication "${publication}" is FOR ALL TABLES: every new table joins it, and a new table without a primary key or replica identity then refuses UPDATE and DELETE`,
      fix: 'list the tables (CREATE PUBLICATION ... FOR TABLE ...), or give every new table a primary key',
    });
  }
  const wide = await client.query<{ col: string }>(
    `SELECT format('%s.%s.%s', c.schemaname, c.tablename, a.attname) AS col
       FROM pg_publication_tables c
       -- Catalog joins, not a regclass cast: a least-privilege role reads the catalogs of any schema.
       JOIN pg_namespace n ON n.nspname = c.schemaname
       JOIN pg_class r ON r.relnamespace = n.oid AND r.relname = c.tablename
       JOIN pg_attribute a ON a.attrelid = r.oid
      WHERE c.pubname = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'numeric'::regtype
        AND (a.atttypmod = -1 OR ((a.atttypmod - 4) >> 16) > 38)
      ORDER BY 1 LIMIT 20`,
    [publication],
  );
  if (wide.rows.length > 0) {
    findings.push({
      check: 'wide numeric columns',
      severity: 'warn',
      detail: `${wide.rows.map((r) => r.col).join(', ')}: unconstrained or wider than 38 digits, so Snowflake gets VARCHAR (exact text), not NUMBER`,
      fix: 'give the columns a precision of at most 38 (numeric(p,s)) if the values fit, or cast in Snowflake',
    });
  }
  const long = await one<{ n: number; oldest: number | null }>(
    `SELECT count(*)::int AS n, max(extract(epoch FROM now() - xact_start))::int AS oldest
       FROM pg_stat_activity WHERE xact_start < now() - interval '5 minutes' AND pid <> pg_backend_pid()`,
  );
  if ((long?.n ?? 0) > 0) {
    findings.push({
      check: 'long transactions',
      severity: 'warn',
      detail: `${long!.n} transaction(s) open for more than 5 minutes (oldest ${long!.oldest} s): creating a slot waits for them`,
      fix: 'end them (pg_stat_activity shows pid and query) before starting a new pipeline',
    });
  }
  return findings;
}

export async function checkDestination(url: string): Promise<Finding[]> {
  if (url.startsWith('snowflake://')) {
    let config: SnowflakeConfig;
    try {
      config = parseSnowflakeUrl(url);
    } catch (err) {
      return [fromError('destination URL', err)];
    }
    return checkSnowflake(config);
  }
  const m = /^duckdb:(?:\/\/)?([^?]+)/.exec(url);
  if (!m)
    return [{ check: 'destination URL', severity: 'error', detail: 'unsupported destination', fix: 'use snowflake://... or duckdb:...' }];
  return checkDuckDb(m[1]!);
}

async function checkDuckDb(path: string): Promise<Finding[]> {
  const check = 'DuckDB file';
  if (path === ':memory:') return [{ check, severity: 'ok', detail: 'in memory' }];
  const full = resolve(path);
  const pseudo = pseudoFilesystem(full);
  if (pseudo)
    return [{ check, severity: 'error', detail: `${full} is under ${pseudo}, a kernel filesystem`, fix: 'choose a path on a disk' }];
  if (!existsSync(full)) {
    let dir = dirname(full);
    while (!existsSync(dir)) dir = dirname(dir);
    // A real write, not access(2): root passes access() on read-only mounts and pseudo filesystems.
    const probe = join(dir, `.floe-doctor-${process.pid}-${Date.now()}`);
    try {
      writeFileSync(probe, '');
      rmSync(probe, { force: true });
      return [{ check, severity: 'ok', detail: `${full} will be created (${dir} is writable)` }];
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      return [{ check, severity: 'error', detail: `${dir} is not writable (${code})`, fix: 'choose a path in a writable directory' }];
    }
  }
  try {
    const { DuckDBInstance } = await import('@duckdb/node-api');
    const db = await DuckDBInstance.create(full);
    const conn = await db.connect();
    await conn.run('CREATE TEMP TABLE _floe_doctor (x INTEGER)');
    conn.closeSync();
    db.closeSync();
    accessSync(full, constants.W_OK);
    return [{ check, severity: 'ok', detail: `${full} opens and is writable` }];
  } catch (err) {
    return [
      {
        check,
        severity: 'error',
        detail: `${full} cannot be opened for writing: ${(err as Error).message.split('\n')[0]}`,
        fix: 'check its permissions and that no other process holds it open',
      },
    ];
  }
}

export async function checkSnowflake(config: SnowflakeConfig): Promise<Finding[]> {
  const { auth, sql, streaming } = createSnowflakeClients(config, { log: silentLogger });
  const findings: Finding[] = [];
  const db = quoteSf(config.database);
  try {
    // Credentials, role, warehouse.
    let who: (string | null)[];
    try {
      who = (await sql.query('SELECT CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE()')).rows[0] ?? [];
    } catch (err) {
      const e = coerceError(err);
      findings.push({
        check: 'credentials',
        severity: 'error',
        detail: `${e.message} (user ${config.user}, account ${config.account}, key fingerprint ${auth.fingerprint})`,
        fix:
          e.kind === 'auth'
            ? `register the public key of private_key_file for ${config.user}: ALTER USER ${config.user} SET RSA_PUBLIC_KEY='<base64 of the public key>' (its fingerprint must be ${auth.fingerprint})`
            : (e.hint ?? 'check the account in the URL (or base_url) and the network'),
      });
      return findings;
    }
    findings.push({
      check: 'credentials',
      severity: 'ok',
      detail: `key-pair JWT accepted for ${who[0] ?? config.user} (${auth.fingerprint})`,
    });
    const role = who[1];
    if (config.role && role !== config.role) {
      findings.push({
        check: 'role',
        severity: 'error',
        detail: `the session runs as ${role ?? 'no role'}, not ${config.role}`,
        fix: `GRANT ROLE ${config.role} TO USER ${config.user}`,
      });
    } else {
      findings.push({
        check: 'role',
        severity: config.role ? 'ok' : 'warn',
        detail: config.role ? `${role}` : `no role= in the URL; the user's default role ${role ?? '(none)'} is used`,
        fix: 'set role= in the destination URL so floe does not depend on the default role',
      });
    }
    const warehouse = who[2];
    if (!warehouse) {
      findings.push({
        check: 'warehouse',
        severity: 'error',
        detail: config.warehouse ? `warehouse ${config.warehouse} is not usable by the role` : 'no warehouse: merges cannot run',
        fix: config.warehouse
          ? `GRANT USAGE ON WAREHOUSE ${config.warehouse} TO ROLE ${config.role ?? '<role>'}`
          : 'set warehouse= in the destination URL',
      });
    } else {
      findings.push({ check: 'warehouse', severity: 'ok', detail: warehouse });
    }
    // Database and schemas.
    try {
      await sql.query(`CREATE DATABASE IF NOT EXISTS ${db}`);
      findings.push({ check: `database ${config.database}`, severity: 'ok', detail: 'exists or was created' });
    } catch (err) {
      findings.push(
        fromError(
          `database ${config.database}`,
          err,
          `create it, or GRANT USAGE ON DATABASE ${config.database} TO ROLE ${config.role ?? '<role>'}`,
        ),
      );
    }
    for (const schema of [config.schema, config.landingSchema]) {
      try {
        await sql.query(`CREATE SCHEMA IF NOT EXISTS ${db}.${quoteSf(schema)}`);
        findings.push({ check: `schema ${config.database}.${schema}`, severity: 'ok', detail: 'exists or was created' });
      } catch (err) {
        findings.push(
          fromError(
            `schema ${config.database}.${schema}`,
            err,
            `create it, or GRANT USAGE ON DATABASE ${config.database} and CREATE SCHEMA to the role`,
          ),
        );
      }
    }
    if (findings.some((f) => f.severity === 'error')) return findings;
    // Privileges, by doing what floe does: a probe table, loaded by Snowpipe Streaming.
    const probe = '_FLOE_DOCTOR_PROBE';
    const probeTable = `${db}.${quoteSf(config.landingSchema)}.${quoteSf(probe)}`;
    try {
      await sql.multi([
        `CREATE TABLE IF NOT EXISTS ${probeTable} ("ID" VARCHAR, "AT" VARCHAR)`,
        `INSERT INTO ${probeTable} VALUES ('sql', ${literal(new Date().toISOString())})`,
      ]);
      findings.push({ check: 'CREATE TABLE, INSERT', severity: 'ok', detail: `in ${config.database}.${config.landingSchema}` });
    } catch (err) {
      findings.push(
        fromError(
          'CREATE TABLE, INSERT',
          err,
          `GRANT CREATE TABLE ON SCHEMA ${config.database}.${config.landingSchema} TO ROLE ${config.role ?? '<role>'}`,
        ),
      );
      return findings;
    }
    try {
      const channel = await streaming.openChannel(
        { database: config.database, schema: config.landingSchema, pipe: `${probe}-STREAMING` },
        'FLOE_DOCTOR',
      );
      const token = String(Date.now()).padStart(20, '0');
      await channel.append([JSON.stringify({ ID: 'streaming', AT: new Date().toISOString() })], [token]);
      await channel.waitCommitted(token, AbortSignal.timeout(60_000));
      await channel.drop().catch(() => undefined);
      findings.push({ check: 'Snowpipe Streaming', severity: 'ok', detail: 'a row went through the default pipe and committed' });
    } catch (err) {
      findings.push(
        fromError(
          'Snowpipe Streaming',
          err,
          'the role needs INSERT on the journal tables and the account must allow Snowpipe Streaming (high-performance)',
        ),
      );
    }
    // A table whose Snowflake name is not upper-case-safe is loaded through a named pipe floe creates.
    const probePipe = `${db}.${quoteSf(config.landingSchema)}.${quoteSf('_FLOE_DOCTOR_PIPE')}`;
    try {
      await sql.query(createPipe(probePipe, probeTable));
      await sql.query(`DROP PIPE IF EXISTS ${probePipe}`);
      findings.push({ check: 'CREATE PIPE', severity: 'ok', detail: `in ${config.database}.${config.landingSchema}` });
    } catch (err) {
      findings.push({
        check: 'CREATE PIPE',
        severity: 'warn',
        detail: `${coerceError(err).message}; tables whose names are not upper case (e.g. "Orders") cannot be loaded`,
        fix: `GRANT CREATE PIPE ON SCHEMA ${config.database}.${config.landingSchema} TO ROLE ${config.role ?? '<role>'}`,
      });
    }
    try {
      const pipes = await sql.query(`SHOW PIPES IN SCHEMA ${db}.${quoteSf(config.landingSchema)}`);
      findings.push({
        check: 'pipes',
        severity: 'ok',
        detail: `${pipes.rows.length} pipe(s) in ${config.database}.${config.landingSchema}`,
      });
    } catch (err) {
      findings.push({ check: 'pipes', severity: 'warn', detail: coerceError(err).message, fix: 'grant MONITOR on the pipes to see them' });
    }
    await sql.query(`DROP TABLE IF EXISTS ${probeTable}`).catch(() => undefined);
    return findings;
  } finally {
    await streaming.close().catch(() => undefined);
    await sql.close().catch(() => undefined);
  }
}
