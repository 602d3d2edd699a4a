/**
 * The control-plane operations the HTTP API and `floe apply` perform: the same checks as the CLI
 * commands (config.ts validates names, URLs, secret references and options; the database's constraints
 * and triggers do the rest) and the same statements. Each write runs in one transaction, so a refused
 * request changes nothing.
 *
 * Views returned here never hold a secret: source URLs are redacted, secret references are shown as
 * references (they name where a secret is, not what it is) and encrypted values are shortened.
 */
import type pg from 'pg';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { FloeError, printable } from '../errors.js';
import {
  PIPELINE_OPTION_NAMES,
  checkDestination,
  checkDestinationOptions,
  checkDestinationSecrets,
  secretBinding,
  checkName,
  checkPublication,
  checkSlotName,
  checkSourceUrl,
  checkTableName,
  defaultSlotName,
  parsePipelineOptions,
  parseSourceOptions,
  type DestinationRow,
  type PipelineRow,
  type SourceRow,
} from '../control/config.js';
import { checkSecretRef, resolveSecret } from '../control/secrets.js';
import {
  findDestination,
  findPipeline,
  findSource,
  listDestinations,
  listPipelineTables,
  listPipelines,
  listSources,
} from '../control/repository.js';
import { redactUrl } from '../postgres/source.js';

/** HTTP status of a FloeError raised by an operation (400 unless marked here). */
const statuses = new WeakMap<FloeError, number>();

export function httpStatusOf(err: FloeError): number {
  return statuses.get(err) ?? (err.kind === 'config' ? 400 : err.kind === 'auth' ? 401 : 500);
}

export function withStatus(err: FloeError, status: number): FloeError {
  statuses.set(err, status);
  return err;
}

export function notFound(kind: 'source' | 'destination' | 'pipeline', name: string): FloeError {
  return withStatus(new FloeError('config', `no ${kind} named "${printable(name)}"`, { hint: `GET /api/v1/${kind}s lists them` }), 404);
}

function conflict(message: string, hint?: string): FloeError {
  return withStatus(new FloeError('config', message, hint ? { hint } : {}), 409);
}

// ---- views ---------------------------------------------------------------------------------------

export interface SourceView {
  readonly name: string;
  readonly url: string;
  readonly password: string | null;
  readonly options: unknown;
  readonly pipelines: readonly string[];
}

export interface DestinationView {
  readonly name: string;
  readonly type: string;
  readonly url: string;
  readonly secrets: Readonly<Record<string, string>>;
  readonly options: unknown;
  readonly pipelines: readonly string[];
}

export interface PipelineConfigView {
  readonly name: string;
  readonly source: string | null;
  readonly destination: string | null;
  readonly publication: string;
  readonly slot: string;
  readonly options: unknown;
}

/** A reference names where a secret lives; a ciphertext is long and says nothing, so it is shortened. */
export function showReference(ref: string): string {
  return ref.startsWith('enc:') ? `${ref.slice(0, 7)}(encrypted)` : ref;
}

function sourceView(s: SourceRow, pipelines: PipelineRow[]): SourceView {
  return {
    name: s.name,
    url: redactUrl(s.url),
    password: s.password === null ? null : showReference(s.password),
    options: s.options ?? {},
    pipelines: pipelines.filter((p) => p.sourceId === s.id).map((p) => p.name),
  };
}

function destinationView(d: DestinationRow, pipelines: PipelineRow[]): DestinationView {
  const secrets = typeof d.secrets === 'object' && d.secrets !== null ? (d.secrets as Record<string, unknown>) : {};
  return {
    name: d.name,
    type: d.type,
    url: d.type === 'snowflake' ? redactUrl(d.url) : d.url,
    secrets: Object.fromEntries(Object.entries(secrets).map(([k, v]) => [k, typeof v === 'string' ? showReference(v) : '(invalid)'])),
    options: d.options ?? {},
    pipelines: pipelines.filter((p) => p.destinationId === d.id).map((p) => p.name),
  };
}

// ---- inputs --------------------------------------------------------------------------------------

export interface SourceInput {
  readonly name: string;
  readonly url: string;
  readonly password?: string | null;
  readonly options?: Record<string, unknown>;
}

export interface DestinationInput {
  readonly name: string;
  readonly type: string;
  readonly url?: string;
  readonly path?: string;
  readonly secrets?: Record<string, unknown>;
  readonly options?: Record<string, unknown>;
}

export interface PipelineInput {
  readonly name: string;
  readonly source: string;
  readonly destination: string;
  readonly publication: string;
  readonly slot?: string;
  readonly options?: Record<string, unknown>;
}

export interface PipelineChange {
  readonly options?: Record<string, unknown>;
  readonly reset?: readonly string[];
  readonly publication?: string;
}

export type PipelineAction = 'start' | 'resume' | 'pause' | 'resync' | 'skip' | 'unskip';
export const PIPELINE_ACTIONS: readonly PipelineAction[] = ['start', 'resume', 'pause', 'resync', 'skip', 'unskip'];

/** A source as it would be stored: validated, nothing written. */
export function checkSourceInput(input: SourceInput, env: NodeJS.ProcessEnv = process.env) {
  checkName('source', input.name);
  checkSourceUrl(input.url);
  const password = input.password ?? null;
  if (password !== null) {
    const ref = checkSecretRef(password, 'password');
    // An enc: value must decrypt under the key this machine has, if it has one: catches a wrong key now.
    if (ref.kind === 'enc' && env.FLOE_SECRET_KEY) {
      resolveSecret(password, 'password', env, secretBinding({ kind: 'source', name: input.name, url: input.url }));
    }
  }
  return { name: input.name, url: input.url, password, options: parseSourceOptions(input.options ?? {}) };
}

/** A destination as it would be stored; a DuckDB path is made absolute so every worker finds the file. */
export function checkDestinationInput(input: DestinationInput) {
  checkName('destination', input.name);
  const url = destinationUrl(input);
  const type = checkDestination(input.type, url);
  const secrets = checkDestinationSecrets(type, input.secrets ?? {});
  const options = checkDestinationOptions(type, input.options ?? {});
  return { name: input.name, type, url, secrets, options };
}

export function checkPipelineInput(input: PipelineInput) {
  checkName('pipeline', input.name);
  checkPublication(input.publication);
  const slot = checkSlotName(input.slot ?? defaultSlotName(input.name));
  return { ...input, slot, options: parsePipelineOptions(input.options ?? {}) };
}

/** The same rules as `floe destination add --path/--url`. */
export function destinationUrl(input: { type: string; path?: string | undefined; url?: string | undefined }): string {
  if (input.path !== undefined && input.url !== undefined) throw new FloeError('config', 'give either a path or a url, not both');
  if (input.type === 'duckdb') {
    if (input.path !== undefined) {
      if (input.path.trim() === '' || input.path.includes('?')) throw new FloeError('config', `invalid path "${printable(input.path)}"`);
      return `duckdb:${resolvePath(input.path)}`;
    }
    if (input.url === undefined) throw new FloeError('config', 'a duckdb destination needs a path');
    const m = /^duckdb:(?:\/\/)?([^?]+)(\?.*)?$/.exec(input.url);
    if (m && m[1] !== ':memory:' && !isAbsolute(m[1]!)) return `duckdb:${resolvePath(m[1]!)}${m[2] ?? ''}`;
    return input.url;
  }
  if (input.path !== undefined)
    throw new FloeError('config', `a path is for duckdb destinations; a ${printable(input.type)} destination takes a url`);
  if (input.url === undefined) {
    throw new FloeError('config', `a ${printable(input.type)} destination needs a url`, {
      hint: 'e.g. snowflake://user@account/database/schema?warehouse=wh',
    });
  }
  return input.url;
}

// ---- operations ----------------------------------------------------------------------------------

type Db = pg.ClientBase;

export async function sourcesView(db: Db): Promise<SourceView[]> {
  const pipelines = await listPipelines(db);
  return (await listSources(db)).map((s) => sourceView(s, pipelines));
}

export async function sourceViewOf(db: Db, name: string): Promise<SourceView> {
  const s = await findSource(db, name);
  if (!s) throw notFound('source', name);
  return sourceView(s, await listPipelines(db));
}

export async function destinationsView(db: Db): Promise<DestinationView[]> {
  const pipelines = await listPipelines(db);
  return (await listDestinations(db)).map((d) => destinationView(d, pipelines));
}

export async function destinationViewOf(db: Db, name: string): Promise<DestinationView> {
  const d = await findDestination(db, name);
  if (!d) throw notFound('destination', name);
  return destinationView(d, await listPipelines(db));
}

export async function pipelineConfigs(db: Db): Promise<PipelineConfigView[]> {
  const [pipelines, sources, destinations] = [await listPipelines(db), await listSources(db), await listDestinations(db)];
  const sourceNames = new Map(sources.map((s) => [s.id, s.name]));
  const destinationNames = new Map(destinations.map((d) => [d.id, d.name]));
  return pipelines
    .filter((p) => p.deleteRequestedAt === null)
    .map((p) => ({
      name: p.name,
      source: sourceNames.get(p.sourceId) ?? null,
      destination: destinationNames.get(p.destinationId) ?? null,
      publication: p.publication,
      slot: p.slotName,
      options: p.options ?? {},
    }));
}

export async function addSource(db: Db, input: SourceInput): Promise<void> {
  const s = checkSourceInput(input);
  if (await findSource(db, s.name)) throw conflict(`source "${s.name}" already exists`, 'choose another name, or remove it first');
  await db.query(`INSERT INTO floe.source (name, url, password, options) VALUES ($1, $2, $3, $4)`, [
    s.name,
    s.url,
    s.password,
    JSON.stringify(s.options),
  ]);
}

/** Changes url, password or options of a source (every pipeline on it restarts: the trigger bumps them). */
export async function updateSource(db: Db, input: SourceInput): Promise<void> {
  const s = checkSourceInput(input);
  const r = await db.query(`UPDATE floe.source SET url = $2, password = $3, options = $4 WHERE name = $1`, [
    s.name,
    s.url,
    s.password,
    JSON.stringify(s.options),
  ]);
  if (r.rowCount === 0) throw notFound('source', s.name);
}

export async function removeSource(db: Db, name: string): Promise<void> {
  const source = await findSource(db, name);
  if (!source) throw notFound('source', name);
  const users = (await listPipelines(db)).filter((p) => p.sourceId === source.id).map((p) => p.name);
  if (users.length > 0) {
    throw conflict(
      `source "${name}" is used by pipeline${users.length > 1 ? 's' : ''} ${users.join(', ')}`,
      'delete those pipelines first',
    );
  }
  await db.query(`DELETE FROM floe.source WHERE id = $1`, [source.id]);
}

export async function addDestination(db: Db, input: DestinationInput): Promise<void> {
  const d = checkDestinationInput(input);
  if (await findDestination(db, d.name))
    throw conflict(`destination "${d.name}" already exists`, 'choose another name, or remove it first');
  await db.query(`INSERT INTO floe.destination (name, type, url, secrets, options) VALUES ($1, $2, $3, $4, $5)`, [
    d.name,
    d.type,
    d.url,
    JSON.stringify(d.secrets),
    JSON.stringify(d.options),
  ]);
}

export async function updateDestination(db: Db, input: DestinationInput): Promise<void> {
  const d = checkDestinationInput(input);
  const r = await db.query(`UPDATE floe.destination SET type = $2, url = $3, secrets = $4, options = $5 WHERE name = $1`, [
    d.name,
    d.type,
    d.url,
    JSON.stringify(d.secrets),
    JSON.stringify(d.options),
  ]);
  if (r.rowCount === 0) throw notFound('destination', d.name);
}

export async function removeDestination(db: Db, name: string): Promise<void> {
  const destination = await findDestination(db, name);
  if (!destination) throw notFound('destination', name);
  const users = (await listPipelines(db)).filter((p) => p.destinationId === destination.id).map((p) => p.name);
  if (users.length > 0) {
    throw conflict(
      `destination "${name}" is used by pipeline${users.length > 1 ? 's' : ''} ${users.join(', ')}`,
      'delete those pipelines first',
    );
  }
  await db.query(`DELETE FROM floe.destination WHERE id = $1`, [destination.id]);
}

/** Creates a pipeline, paused unless `start`. */
export async function addPipeline(db: Db, input: PipelineInput, start = false): Promise<void> {
  const p = checkPipelineInput(input);
  const source = await findSource(db, p.source);
  if (!source) throw notFound('source', p.source);
  const destination = await findDestination(db, p.destination);
  if (!destination) throw notFound('destination', p.destination);
  const existing = await listPipelines(db);
  if (existing.some((x) => x.name === p.name)) throw conflict(`pipeline "${p.name}" already exists`);
  const clash = existing.find((x) => x.slotName === p.slot);
  if (clash) throw conflict(`slot "${p.slot}" is already used by pipeline ${clash.name}`, 'choose another slot');
  await db.query(
    `INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options, status) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [p.name, source.id, destination.id, p.publication, p.slot, JSON.stringify(p.options), start ? 'START' : 'PAUSE'],
  );
}

/** Changes options (merged; `reset` removes keys) and/or the publication. Call inside a transaction. */
export async function updatePipeline(db: Db, name: string, change: PipelineChange): Promise<void> {
  if (change.options === undefined && (change.reset ?? []).length === 0 && change.publication === undefined) {
    throw new FloeError('config', 'nothing to change', { hint: 'send options, reset or publication' });
  }
  if (change.publication !== undefined) checkPublication(change.publication);
  const changes = parsePipelineOptions(change.options ?? {});
  const resets = (change.reset ?? []).map((k) => k.replaceAll('-', '_'));
  for (const key of resets) {
    if (!(PIPELINE_OPTION_NAMES as string[]).includes(key)) {
      throw new FloeError('config', `unknown pipeline option "${printable(key)}"`, { hint: `known: ${PIPELINE_OPTION_NAMES.join(', ')}` });
    }
  }
  const r = await db.query<{ id: string; options: Record<string, unknown> }>(
    `SELECT id::text, options FROM floe.pipeline WHERE name = $1 AND delete_requested_at IS NULL FOR UPDATE`,
    [name],
  );
  const row = r.rows[0];
  if (!row) throw notFound('pipeline', name);
  const merged: Record<string, unknown> = { ...row.options, ...changes };
  for (const key of resets) delete merged[key];
  // The stored options may have been written by hand: the result must be valid as a whole.
  const options = parsePipelineOptions(merged);
  await db.query(`UPDATE floe.pipeline SET options = $2, publication = coalesce($3, publication) WHERE id = $1`, [
    row.id,
    JSON.stringify(options),
    change.publication ?? null,
  ]);
}

/** Replaces a pipeline's options as a whole (floe apply: the file is the truth). */
export async function replacePipelineOptions(db: Db, name: string, options: Record<string, unknown>, publication: string): Promise<void> {
  checkPublication(publication);
  const checked = parsePipelineOptions(options);
  const r = await db.query(`UPDATE floe.pipeline SET options = $2, publication = $3 WHERE name = $1 AND delete_requested_at IS NULL`, [
    name,
    JSON.stringify(checked),
    publication,
  ]);
  if (r.rowCount === 0) throw notFound('pipeline', name);
}

/** Deletes a pipeline; with `dropSlot` a worker stops it, drops its slot, then deletes the row. */
export async function deletePipeline(db: Db, name: string, dropSlot: boolean): Promise<PipelineRow> {
  const p = await findPipeline(db, name);
  if (!p) throw notFound('pipeline', name);
  if (dropSlot) {
    await db.query(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true, status = 'PAUSE' WHERE id = $1`, [p.id]);
  } else {
    await db.query(`DELETE FROM floe.pipeline WHERE id = $1`, [p.id]);
  }
  return p;
}

/** pause, resume (start), resync/skip/unskip a table: the same statements as `floe pipeline <verb>`. */
export async function pipelineAction(db: Db, name: string, action: PipelineAction, table?: string): Promise<void> {
  if (!(PIPELINE_ACTIONS as readonly string[]).includes(action)) {
    throw new FloeError('config', `unknown action "${printable(String(action))}"`, { hint: `actions: ${PIPELINE_ACTIONS.join(', ')}` });
  }
  const needsTable = action === 'resync' || action === 'skip' || action === 'unskip';
  if (needsTable && table === undefined) throw new FloeError('config', `${action} needs a table`, { hint: 'send "table": "schema.table"' });
  if (!needsTable && table !== undefined) throw new FloeError('config', `${action} takes no table`);
  if (table !== undefined) checkTableName(table);
  const p = await findPipeline(db, name);
  if (!p) throw notFound('pipeline', name);
  if (p.deleteRequestedAt) throw conflict(`pipeline "${name}" is being deleted`);
  if (action === 'start' || action === 'resume' || action === 'pause') {
    await db.query(`UPDATE floe.pipeline SET status = $2 WHERE id = $1`, [p.id, action === 'pause' ? 'PAUSE' : 'START']);
  } else if (action === 'resync') {
    await db.query(
      `INSERT INTO floe.pipeline_table (pipeline_id, table_name, resync_requested_at) VALUES ($1, $2, now())
       ON CONFLICT (pipeline_id, table_name) DO UPDATE SET resync_requested_at = now(), updated_at = now()`,
      [p.id, table],
    );
  } else {
    await db.query(
      `INSERT INTO floe.pipeline_table (pipeline_id, table_name, skip) VALUES ($1, $2, $3)
       ON CONFLICT (pipeline_id, table_name) DO UPDATE SET skip = $3, updated_at = now()`,
      [p.id, table, action === 'skip'],
    );
  }
}

export async function pipelineTables(db: Db, name: string) {
  const p = await findPipeline(db, name);
  if (!p) throw notFound('pipeline', name);
  return (await listPipelineTables(db, p.id)).map((t) => ({
    table: t.tableName,
    state: t.state ?? 'pending',
    skip: t.skip,
    resync_requested_at: t.resyncRequestedAt?.toISOString() ?? null,
    rows_snapshotted: t.rowsSnapshotted,
    last_error: t.lastError,
    updated_at: t.updatedAt.toISOString(),
  }));
}
