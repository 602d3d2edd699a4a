/**
 * Connections to the source database and the catalog queries floe needs:
 * preflight checks (design.md §3), the published tables with their columns,
 * keys and types.
 *
 * Every connection sets the same session settings, so the text form of each
 * value is identical whether it comes from COPY (snapshot) or from pgoutput
 * (stream): the type table (schema/type-map.ts) relies on that.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { FloeError, coerceError } from '../errors.js';
import { isSecretParam } from '../telemetry/logger.js';
import { withTls } from './tls.js';
import { quoteIdent } from '../schema/sql-quote.js';
import type { ColumnSchema, TableSchema } from '../model.js';
import { mapColumnType, TYPE_CATALOG_SQL, typeInfoFromRow, type PgTypeInfo } from '../schema/type-map.js';

export const SESSION_OPTIONS =
  '-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC -c bytea_output=hex -c client_encoding=UTF8';

export interface SourceConfig {
  readonly url: string;
  /** application_name seen in pg_stat_activity. */
  readonly applicationName?: string;
  readonly connectTimeoutMs?: number;
  /**
   * Whether the password may be sent as is when the server asks for cleartext-password authentication.
   * 'verified-tls': only over TLS whose certificate was verified (sources from control-plane rows, whose
   * host a row writer chooses); 'allow' (the default): the operator gave the URL on the command line.
   */
  readonly cleartextPassword?: 'allow' | 'verified-tls';
}

/**
 * A pg.Client that, under `cleartextPassword: 'verified-tls'`, answers a cleartext-password request
 * only on a verified TLS connection. node-postgres answers AuthenticationCleartextPassword in
 * `_handleAuthCleartextPassword` by sending the password as is; SCRAM and MD5 never reveal it.
 * Works for pools too (`Client` in the pool config), since pg passes the pool config to the constructor.
 */
export class SourceClient extends pg.Client {
  constructor(config: pg.ClientConfig & { cleartextPassword?: 'allow' | 'verified-tls' } = {}) {
    super(config);
    if (config.cleartextPassword !== 'verified-tls') return;
    const self = this as unknown as {
      connection: { stream?: { encrypted?: boolean; authorized?: boolean }; emit(event: 'error', err: Error): void };
      _handleAuthCleartextPassword(msg: unknown): void;
    };
    const answer = self._handleAuthCleartextPassword;
    self._handleAuthCleartextPassword = (msg: unknown) => {
      const stream = self.connection.stream;
      if (stream?.encrypted === true && stream.authorized === true) return answer.call(this, msg);
      self.connection.emit(
        'error',
        new FloeError('auth', 'the server asked for the password in cleartext without verified TLS; it was not sent', {
          hint: 'use scram-sha-256 in pg_hba.conf, or sslmode=verify-full, or list the host in FLOE_CLEARTEXT_PASSWORD_HOSTS on the workers',
        }),
      );
    };
  }
}

export function clientConfig(source: SourceConfig, extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig {
  // Settings the user put in the URL (?options=-c ...) apply, except that ours come last and win:
  // the type table depends on them (a different DateStyle or IntervalStyle would change value texts).
  let userOptions = '';
  try {
    userOptions = new URL(source.url).searchParams.get('options') ?? '';
  } catch {
    // pg reports an unparseable URL itself, without echoing the password
  }
  return {
    connectionString: withTls(source.url),
    application_name: source.applicationName ?? 'floe',
    connectionTimeoutMillis: source.connectTimeoutMs ?? 10_000,
    options: userOptions ? `${userOptions} ${SESSION_OPTIONS}` : SESSION_OPTIONS,
    // Read by SourceClient (pg ignores it).
    ...(source.cleartextPassword ? { cleartextPassword: source.cleartextPassword } : {}),
    ...extra,
  } as pg.ClientConfig;
}

/** Connects a plain (SQL) client, turning failures into one-line FloeErrors without the password. */
export async function connectSource(source: SourceConfig, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new SourceClient(clientConfig(source, extra));
  // An idle client whose server goes away emits 'error'; without a listener the process would crash.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw coerceError(err, `cannot connect to the source ${redactUrl(source.url)}`);
  }
  return client;
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (isSecretParam(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    return '<unparseable URL>';
  }
}

export interface ServerInfo {
  readonly versionNum: number;
  readonly major: number;
}

export async function serverInfo(client: pg.Client): Promise<ServerInfo> {
  const r = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  const versionNum = Number(r.rows[0]!.v);
  return { versionNum, major: Math.floor(versionNum / 10000) };
}

/**
 * Refuses to start, with a clear message and a fix, when the source cannot be
 * replicated: wal_level, version, privileges, publication, replica identity.
 */
export async function preflight(client: pg.Client, publication: string): Promise<void> {
  const info = await serverInfo(client);
  if (info.major < 14) {
    throw new FloeError('source-setup', `PostgreSQL ${info.major} is not supported`, {
      hint: 'floe needs PostgreSQL 14 or newer (TID range scans, pgoutput messages)',
    });
  }
  const settings = await client.query<{ wal_level: string }>(`SELECT current_setting('wal_level') AS wal_level`);
  const walLevel = settings.rows[0]!.wal_level;
  if (walLevel !== 'logical') {
    throw new FloeError('source-setup', `wal_level is '${walLevel}', logical replication needs 'logical'`, {
      hint: "run ALTER SYSTEM SET wal_level = 'logical' and restart PostgreSQL",
    });
  }
  const role = await client.query<{ rolreplication: boolean; rolsuper: boolean }>(
    `SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user`,
  );
  const r = role.rows[0];
  if (!r?.rolreplication && !r?.rolsuper) {
    throw new FloeError('auth', 'the source user lacks the REPLICATION attribute', {
      hint: 'run ALTER ROLE <user> WITH REPLICATION (or use a role that has it)',
    });
  }
  const names = publicationNames(publication);
  const pub = await client.query<{ pubname: string }>(`SELECT pubname FROM pg_publication WHERE pubname = ANY ($1)`, [names]);
  const missing = names.find((n) => !pub.rows.some((p) => p.pubname === n));
  if (missing !== undefined || names.length === 0) {
    const name = missing ?? publication;
    throw new FloeError('source-setup', `publication "${name}" does not exist in this database`, {
      hint: `create it, e.g. CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ...`,
    });
  }
  const tables = await client.query<{
    schemaname: string;
    tablename: string;
    relreplident: string;
    has_pk: boolean;
    can_select: boolean;
    has_ri_index: boolean;
  }>(
    `SELECT pt.schemaname, pt.tablename, c.relreplident,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ri_index,
            has_table_privilege(c.oid, 'SELECT') AS can_select
       FROM pg_publication_tables pt
       JOIN pg_namespace n ON n.nspname = pt.schemaname
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
      WHERE pt.pubname = ANY ($1) AND n.nspname <> $2`,
    [names, FLOE_SCHEMA],
  );
  for (const t of tables.rows) {
    const name = `${t.schemaname}.${t.tablename}`;
    if (!t.can_select) {
      throw new FloeError('auth', `the source user cannot SELECT from ${name}`, {
        hint: `GRANT SELECT ON ${quoteIdent(t.schemaname)}.${quoteIdent(t.tablename)} TO <user>`,
      });
    }
    const usable = (t.relreplident === 'd' && t.has_pk) || t.relreplident === 'f' || (t.relreplident === 'i' && t.has_ri_index);
    if (!usable) {
      throw new FloeError('source-setup', `table ${name} has no usable replica identity (no primary key)`, {
        hint: `add a primary key, or run ALTER TABLE ${quoteIdent(t.schemaname)}.${quoteIdent(t.tablename)} REPLICA IDENTITY FULL`,
      });
    }
  }
}

/**
 * Caches table schemas by relation oid and type information by type oid, so a
 * Relation message costs at most one catalog round trip.
 */
export class SchemaCache {
  readonly #client: pg.Client;
  readonly #types = new Map<number, PgTypeInfo>();
  readonly #keys = new Map<number, RelationFacts>();
  #serverMajor: number | undefined;

  constructor(client: pg.Client) {
    this.#client = client;
  }

  /**
   * The tables of the publications, as the snapshot and the stream see them: only the columns the
   * publications publish, with their row filter (design.md invariant 8), never floe's own tables.
   */
  async publishedTables(publication: string): Promise<TableSchema[]> {
    const published = await readPublished(this.#client, publication);
    const major = await this.#major();
    const out: TableSchema[] = [];
    for (const rel of published.values()) {
      // attgenerated as text ('' or 's'): a caller's client may parse every type as text (the type tests do).
      const cols = await this.#client.query<{ attname: string; atttypid: number; atttypmod: number; generated: string }>(
        `SELECT attname, atttypid::int AS atttypid, atttypmod, attgenerated::text AS generated FROM pg_attribute
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
        [rel.oid],
      );
      // pgoutput sends generated columns only from PostgreSQL 18 on, and only those attnames lists
      // (publish_generated_columns); before 18 attnames lists them but the stream never carries them.
      const publishes = (c: { attname: string; generated: string }): boolean =>
        (rel.attnames === undefined || rel.attnames.has(c.attname)) && (c.generated === '' || (major >= 18 && rel.attnames !== undefined));
      const table = await this.tableFromRelation({
        relationId: rel.oid,
        schema: rel.schema,
        name: rel.name,
        replicaIdentity: rel.replicaIdentity,
        columns: cols.rows.filter(publishes).map((c) => ({ name: c.attname, typeOid: Number(c.atttypid), typeMod: Number(c.atttypmod) })),
      });
      out.push(rel.rowFilter === undefined ? table : { ...table, rowFilter: rel.rowFilter });
    }
    return out;
  }

  /**
   * One string per published table that changes whenever what the publications publish of it changes:
   * its relation id (a table dropped and created again under the same name), column list, row filter and
   * leaf partitions (partitions attached to or detached from a root published via the root).
   */
  async publishedSignatures(publication: string): Promise<Map<string, string>> {
    const published = await readPublished(this.#client, publication);
    return new Map([...published.values()].map((r) => [`${r.schema}.${r.name}`, r.signature] as const));
  }

  /** Whether the publications list the relation itself now (a partition published via its root is not). */
  async publishedItself(relationId: number, publication: string): Promise<boolean> {
    // Relation messages are rare: the full read (with its retry on concurrent DDL) is cheap enough.
    return (await readPublished(this.#client, publication)).has(relationId);
  }

  async #major(): Promise<number> {
    this.#serverMajor ??= (await serverInfo(this.#client)).major;
    return this.#serverMajor;
  }

  /**
   * Builds a TableSchema from a pgoutput Relation message (or the catalog), resolving types and keys.
   * `isKey` on a column is the Relation message's key flag: the columns of the old key tuple.
   */
  async tableFromRelation(rel: {
    relationId: number;
    schema: string;
    name: string;
    replicaIdentity: TableSchema['replicaIdentity'];
    columns: readonly { name: string; typeOid: number; typeMod: number; isKey?: boolean }[];
  }): Promise<TableSchema> {
    await this.#loadTypes(rel.columns.map((c) => c.typeOid));
    const facts = await this.#factsOf(rel.relationId);
    const keys = mergeKey(rel, facts);
    const columns: ColumnSchema[] = rel.columns.map((c) => {
      let type;
      try {
        type = mapColumnType(c.typeOid, c.typeMod, (oid) => this.#types.get(oid), { arrayDims: facts.arrayDims.get(c.name) });
      } catch (err) {
        throw new FloeError('schema', `column ${rel.schema}.${rel.name}.${c.name}: ${(err as Error).message}`, { cause: err });
      }
      return { name: c.name, typeOid: c.typeOid, typeMod: c.typeMod, type, isKey: keys.has(c.name) };
    });
    const hasKey = columns.some((c) => c.isKey);
    return { relationId: rel.relationId, schema: rel.schema, name: rel.name, replicaIdentity: rel.replicaIdentity, columns, hasKey };
  }

  /**
   * Waits until transaction `xid` (the 32 bits pgoutput sends) is visible to new snapshots on this
   * connection. The walsender may send a transaction once its commit record is flushed, a moment before
   * the committing backend makes it visible to other sessions; a catalog read in that moment sees the
   * catalog from before the transaction's DDL (a primary key it dropped still there), and a Relation
   * message read against it takes the wrong key. `onWait` is called once if it has to wait. An abort
   * ends the wait with the signal's reason (a stop need not outlast a stuck commit).
   */
  async awaitVisible(xid: number, signal: AbortSignal, onWait?: () => void): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (let attempt = 0; ; attempt++) {
      signal.throwIfAborted();
      const r = await this.#client.query<{ visible: boolean }>(VISIBLE_SQL, [xid]);
      if (r.rows[0]?.visible) return;
      if (attempt === 0) onWait?.();
      if (Date.now() > deadline) {
        throw new FloeError('replication', `transaction ${xid} was sent by the server but is still not visible after 60 s`, {
          retry: 'timed',
          hint: 'a committing session may be stuck between writing its commit and finishing it (synchronous replication waiting for a standby?)',
        });
      }
      // The timer's own AbortError becomes the signal's reason, which the caller recognises.
      await sleep(Math.min(50, 1 + attempt), undefined, { signal }).catch(() => signal.throwIfAborted());
    }
  }

  /** The catalog row of a type loaded by `tableFromRelation` (its columns' types, their elements and bases). */
  typeInfo(oid: number): PgTypeInfo | undefined {
    return this.#types.get(oid);
  }

  /** Forgets the key of a relation (after a Relation message says it changed). */
  invalidate(relationId: number): void {
    this.#keys.delete(relationId);
  }

  async #factsOf(relationId: number): Promise<RelationFacts> {
    const cached = this.#keys.get(relationId);
    if (cached) return cached;
    // pgoutput does not send declared array dimensions; DuckDB lists need them.
    const dims = await this.#client.query<{ attname: string; attndims: number }>(
      `SELECT attname, attndims FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attndims > 0`,
      [relationId],
    );
    const r = await this.#client.query<{ attname: string; indisprimary: boolean; indisreplident: boolean }>(
      `SELECT a.attname, i.indisprimary, i.indisreplident FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)`,
      [relationId],
    );
    const entry: RelationFacts = {
      primaryKey: new Set(r.rows.filter((x) => x.indisprimary).map((x) => x.attname)),
      identityIndex: new Set(r.rows.filter((x) => x.indisreplident).map((x) => x.attname)),
      arrayDims: new Map(dims.rows.map((d) => [d.attname, Number(d.attndims)])),
    };
    this.#keys.set(relationId, entry);
    return entry;
  }

  async #loadTypes(oids: readonly number[]): Promise<void> {
    const missing = [...new Set(oids)].filter((o) => !this.#types.has(o));
    if (missing.length === 0) return;
    // The query follows array element and domain base types itself.
    const r = await this.#client.query(TYPE_CATALOG_SQL, [missing]);
    for (const row of r.rows) {
      const t = typeInfoFromRow(row);
      this.#types.set(t.oid, t);
    }
  }
}

/**
 * Whether a 32-bit xid of the past is visible in a snapshot taken now: its epoch is the current one, or
 * the one before when it is above the low 32 bits of the next xid (it was assigned before a wraparound).
 */
const VISIBLE_SQL = `SELECT pg_visible_in_snapshot(
    ((GREATEST(0, (x >> 32) - CASE WHEN $1::bigint >= (x & 4294967295) THEN 1 ELSE 0 END) << 32) | $1::bigint)::text::xid8, s) AS visible
  FROM (SELECT s, pg_snapshot_xmax(s)::text::bigint AS x FROM pg_current_snapshot() AS s) AS now`;

interface RelationFacts {
  readonly primaryKey: ReadonlySet<string>;
  /** Columns of the index named by REPLICA IDENTITY USING INDEX (empty for other identities). */
  readonly identityIndex: ReadonlySet<string>;
  readonly arrayDims: Map<string, number>;
}

/**
 * The merge key is the replica identity: the columns PostgreSQL puts in the old key tuple of an UPDATE or
 * DELETE, so every delete and key change names the row it affects (design.md invariant 8).
 *
 * - DEFAULT: the primary key; USING INDEX: that index's columns (even when a different primary key
 *   exists). A Relation message flags exactly these columns, and its flags win over the catalog, which
 *   may already describe a later ALTER TABLE.
 * - FULL: the old tuple is the whole row, so any unique key would do; floe takes the primary key, and a
 *   table without one is replicated as append-only history (no key).
 * - NOTHING: no key (preflight refuses such tables: their UPDATEs and DELETEs fail at the source).
 */
export function mergeKey(
  rel: { replicaIdentity: TableSchema['replicaIdentity']; columns: readonly { name: string; isKey?: boolean }[] },
  facts: Pick<RelationFacts, 'primaryKey' | 'identityIndex'>,
): ReadonlySet<string> {
  switch (rel.replicaIdentity) {
    case 'd':
    case 'i': {
      const flagged = rel.columns.filter((c) => c.isKey).map((c) => c.name);
      if (flagged.length > 0) return new Set(flagged);
      return rel.replicaIdentity === 'd' ? facts.primaryKey : facts.identityIndex;
    }
    case 'f':
      return facts.primaryKey;
    case 'n':
      return new Set();
  }
}

/** floe's own tables (state store, control plane) live in this schema: they are never replicated. */
export const FLOE_SCHEMA = 'floe';

/** A pipeline's publication setting: one publication name, or several separated by commas. */
export function publicationNames(publication: string): string[] {
  return publication
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
}

interface PublishedRelation {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  readonly replicaIdentity: TableSchema['replicaIdentity'];
  /** Union of the publications' column lists; undefined: every column (PostgreSQL 14 has no column lists). */
  readonly attnames: Set<string> | undefined;
  /** OR of the publications' row filters; undefined: every row. */
  readonly rowFilter: string | undefined;
  readonly signature: string;
}

/**
 * Reads pg_publication_tables for every publication and combines them as PostgreSQL does for a
 * subscriber of several: a table's published columns are the union of the column lists, its rows those
 * of any row filter (a publication without a filter publishes every row). `to_jsonb(pt)` reads
 * attnames and rowfilter where they exist (PostgreSQL 15+) and gives NULL on 14.
 */
async function readPublished(client: pg.Client, publication: string): Promise<Map<number, PublishedRelation>> {
  const r = await queryPublished(client, publication);
  const grouped = new Map<
    number,
    { row: PublishedRow; attnames?: Set<string>; allColumns: boolean; filters: Set<string>; allRows: boolean }
  >();
  for (const row of r.rows) {
    const g = grouped.get(Number(row.oid)) ?? { row, allColumns: false, filters: new Set<string>(), allRows: false };
    grouped.set(Number(row.oid), g);
    if (row.attnames === null) g.allColumns = true;
    else for (const a of JSON.parse(row.attnames) as string[]) (g.attnames ??= new Set()).add(a);
    if (row.rowfilter === null) g.allRows = true;
    else g.filters.add(row.rowfilter);
  }
  const out = new Map<number, PublishedRelation>();
  for (const [oid, g] of grouped) {
    const attnames = g.allColumns ? undefined : g.attnames;
    const rowFilter = g.allRows
      ? undefined
      : [...g.filters]
          .sort()
          .map((f) => `(${f})`)
          .join(' OR ');
    out.set(oid, {
      oid: Number(oid),
      schema: g.row.nspname,
      name: g.row.relname,
      replicaIdentity: g.row.relreplident as TableSchema['replicaIdentity'],
      attnames,
      rowFilter,
      signature: JSON.stringify([
        Number(oid),
        columnList(attnames, JSON.parse(g.row.plain ?? '[]') as string[]),
        rowFilter ?? null,
        g.row.leaves,
      ]),
    });
  }
  return out;
}

interface PublishedRow {
  oid: number;
  nspname: string;
  relname: string;
  relreplident: string;
  /** JSON arrays as text: a process may have replaced pg's array parsers (the type tests do). */
  attnames: string | null;
  rowfilter: string | null;
  leaves: string;
  plain: string | null;
}

/**
 * A table dropped while the catalog functions behind pg_publication_tables read it fails the query
 * ("could not open relation with OID"): a race with DDL, so the read is repeated.
 */
async function queryPublished(client: pg.Client, publication: string): Promise<pg.QueryResult<PublishedRow>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.query<PublishedRow>(
        `SELECT c.oid::int AS oid, n.nspname, c.relname, c.relreplident,
                (to_jsonb(pt) -> 'attnames')::text AS attnames,
                to_jsonb(pt) ->> 'rowfilter' AS rowfilter,
                (SELECT string_agg(relid::oid::text, ',' ORDER BY relid::oid) FROM pg_partition_tree(c.oid) WHERE isleaf) AS leaves,
                (SELECT jsonb_agg(attname) FROM pg_attribute
                  WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped AND attgenerated = '')::text AS plain
           FROM pg_publication_tables pt
           JOIN pg_namespace n ON n.nspname = pt.schemaname
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
          WHERE pt.pubname = ANY ($1) AND n.nspname <> $2
          ORDER BY n.nspname, c.relname, pt.pubname`,
        [publicationNames(publication), FLOE_SCHEMA],
      );
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (attempt >= 5 || e.code !== 'XX000' || !/could not open relation/.test(e.message ?? '')) throw err;
    }
  }
}

/**
 * The column list part of a signature: null when every plain column is published (no column list), so
 * that a column added to such a table is schema evolution (a Relation message), not a publication change.
 */
function columnList(attnames: Set<string> | undefined, plain: readonly string[]): string[] | null {
  if (attnames === undefined || plain.every((a) => attnames.has(a))) return null;
  return [...attnames].sort();
}

/**
 * The snapshot's SELECT of a table: the published columns and rows only. `where` restricts it further
 * (a CTID range).
 */
export function publishedRowsSql(table: TableSchema, where?: string): string {
  const cols = table.columns.map((c) => quoteIdent(c.name)).join(', ');
  const conditions = [where, table.rowFilter === undefined ? undefined : `(${table.rowFilter})`].filter((c) => c !== undefined);
  const from = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  return `SELECT ${cols} FROM ${from}${conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : ''}`;
}
