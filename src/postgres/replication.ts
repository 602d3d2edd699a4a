/**
 * The replication connection: slot creation with an exported snapshot, and the
 * copy-both stream of START_REPLICATION. pgoutput framing and decoding live in
 * replication-protocol.ts and pgoutput.ts; acknowledgement policy lives in the
 * pipeline (pipeline/stream.ts), never here.
 */
import pg from 'pg';
import { createRequire } from 'node:module';
import { setTimeout as setTimeoutPromise } from 'node:timers/promises';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { FloeError, coerceError } from '../errors.js';
import { SourceClient, clientConfig, connectSource, publicationNames, redactUrl, type SourceConfig } from './source.js';
import { quoteIdent } from '../schema/sql-quote.js';
import { formatLsn, parseLsn, type Lsn } from './lsn.js';
import type { Logger } from '../telemetry/logger.js';

export async function connectReplication(source: SourceConfig): Promise<pg.Client> {
  const client = new SourceClient({ ...clientConfig(source), replication: 'database' } as pg.ClientConfig);
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    const e = coerceError(err, `cannot open a replication connection to ${redactUrl(source.url)}`);
    if ((err as { code?: string }).code === '28000' && /replication/i.test((err as Error).message)) {
      throw new FloeError('auth', e.message, { cause: err, hint: 'allow replication connections for this user in pg_hba.conf' });
    }
    throw e;
  }
  return client;
}

export interface SlotInfo {
  readonly slotName: string;
  readonly plugin: string | null;
  readonly slotType: string;
  readonly confirmedFlushLsn: Lsn | undefined;
  readonly restartLsn: Lsn | undefined;
  readonly active: boolean;
  readonly walStatus: string | null;
  readonly database: string | null;
}

export async function readSlot(client: pg.Client, slotName: string): Promise<SlotInfo | undefined> {
  const r = await client.query<{
    slot_name: string;
    plugin: string | null;
    slot_type: string;
    confirmed_flush_lsn: string | null;
    restart_lsn: string | null;
    active: boolean;
    wal_status: string | null;
    database: string | null;
  }>(
    `SELECT slot_name, plugin, slot_type, confirmed_flush_lsn::text, restart_lsn::text, active, wal_status, database
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slotName],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  return {
    slotName: row.slot_name,
    plugin: row.plugin,
    slotType: row.slot_type,
    confirmedFlushLsn: row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : undefined,
    restartLsn: row.restart_lsn ? parseLsn(row.restart_lsn) : undefined,
    active: row.active,
    walStatus: row.wal_status,
    database: row.database,
  };
}

export interface CreatedSlot {
  readonly slotName: string;
  readonly consistentPoint: Lsn;
  readonly snapshotName: string;
}

/**
 * Creates a logical slot and exports its snapshot. The snapshot stays valid
 * while the replication connection runs no other command, so the caller
 * copies under it and only then starts streaming on the same connection.
 *
 * Slot creation waits for every transaction running at that moment to end; if
 * that takes long, the blocking transactions are reported through `log`.
 */
export async function createSlotWithSnapshot(
  repl: pg.Client,
  source: SourceConfig,
  options: { slotName: string; temporary: boolean; major: number; log: Logger; reportAfterMs?: number },
): Promise<CreatedSlot> {
  const kind = options.temporary ? 'TEMPORARY ' : '';
  const sql =
    options.major >= 15
      ? `CREATE_REPLICATION_SLOT ${quoteIdent(options.slotName)} ${kind}LOGICAL pgoutput (SNAPSHOT 'export')`
      : `CREATE_REPLICATION_SLOT ${quoteIdent(options.slotName)} ${kind}LOGICAL pgoutput EXPORT_SNAPSHOT`;
  const finished = new AbortController();
  const done = finished.signal;
  const reporter = (async () => {
    await sleep(options.reportAfterMs ?? 5000, done);
    if (done.aborted) return;
    const c = await connectSource({ ...source, applicationName: 'floe-slot-wait' }).catch(() => undefined);
    if (!c) return;
    try {
      while (!done.aborted) {
        const r = await c.query<{ pid: number; usename: string; state: string; xact_age: string; query: string }>(
          `SELECT pid, usename, state, (now() - xact_start)::text AS xact_age, left(query, 120) AS query
             FROM pg_stat_activity
            WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid()
              AND backend_type = 'client backend' ORDER BY xact_start LIMIT 10`,
        );
        if (done.aborted) break;
        options.log.warn(
          { slot: options.slotName, blockers: r.rows.map((x) => ({ pid: x.pid, user: x.usename, state: x.state, age: x.xact_age })) },
          'slot creation is waiting for running transactions to finish; end or commit them (pg_terminate_backend(pid) ends one)',
        );
        await sleep(10_000, done);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  })().catch(() => undefined);
  try {
    const r = await repl.query(sql);
    const row = r.rows[0] as { slot_name: string; consistent_point: string; snapshot_name: string };
    return { slotName: row.slot_name, consistentPoint: parseLsn(row.consistent_point), snapshotName: row.snapshot_name };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '42710') {
      throw new FloeError('source-setup', `replication slot "${options.slotName}" already exists`, { cause: err });
    }
    if (code === '53400') {
      throw new FloeError('source-setup', 'all replication slots are in use', {
        cause: err,
        hint: 'raise max_replication_slots or drop unused slots',
      });
    }
    throw coerceError(err, `cannot create replication slot "${options.slotName}"`);
  } finally {
    finished.abort();
    await reporter;
  }
}

export const temporarySlotName = (base: string): string => `${base.slice(0, 40)}_tmp_${randomBytes(4).toString('hex')}`;

export async function dropSlot(client: pg.Client, slotName: string): Promise<void> {
  await client.query(`SELECT pg_drop_replication_slot($1) WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, [
    slotName,
  ]);
}

/**
 * pgoutput's tuple format: 'off' text (every value as its output function prints it), 'on' `binary 'true'`
 * (values in their send format where the type has one, decoded by floe to the same text). The pipeline
 * option `binary` (pipeline.ts) takes these.
 */
export const BINARY_MODES = ['off', 'on'] as const;
export type BinaryMode = (typeof BINARY_MODES)[number];

/** Starts streaming pgoutput from `startLsn`: protocol 1, or protocol 2 with in-progress transactions streamed
 * (`streaming`, PostgreSQL 14+); with `binary`, values in binary send formats (PostgreSQL 14+). The readable side
 * is in object mode: each chunk is exactly one CopyData payload (byte mode would concatenate frames), and at most
 * 512 frames wait unread before the socket is paused. */
export function startReplication(
  repl: pg.Client,
  options: { slotName: string; publication: string; startLsn: Lsn; streaming: boolean; binary: boolean },
): Duplex {
  const names = publicationNames(options.publication).map(quoteIdent).join(',');
  const pubLiteral = `'${names.replaceAll("'", "''")}'`;
  const sql =
    `START_REPLICATION SLOT ${quoteIdent(options.slotName)} LOGICAL ${formatLsn(options.startLsn)} ` +
    `(${options.streaming ? "proto_version '2', streaming 'on'" : "proto_version '1'"}, publication_names ${pubLiteral}, messages 'true'` +
    `${options.binary ? ", binary 'true'" : ''})`;
  const stream = copyBoth(sql, { alignOnCopyDataFrame: true, readableObjectMode: true, readableHighWaterMark: 512 });
  repl.query(stream as never);
  return stream;
}

// pg-copy-streams' copy-both duplex is not in its type definitions.
const copyBoth = createRequire(import.meta.url)('pg-copy-streams').both as (sql: string, options: object) => Duplex;

const sleep = (ms: number, signal: AbortSignal) => setTimeoutPromise(ms, undefined, { signal, ref: false }).catch(() => undefined);
