/**
 * The control plane's configuration model: the rows of `floe.source`, `floe.destination` and
 * `floe.pipeline` as TypeScript sees them, and their validation.
 *
 * Rows can be written by the CLI or by hand with SQL, so the same checks run in both places: the CLI
 * refuses bad input before writing anything, and the manager calls `resolvePipelineConfig` on every
 * (re)start, so a hand-inserted row that is invalid puts only that pipeline in `failed`, with a
 * `last_error` that says what to fix.
 */
import { inspect } from 'node:util';
import { z } from 'zod';
import { checkSnowflakeUrl } from '../destination/snowflake/config.js';
import { parseDuckDbUrl } from '../destination/duckdb/config.js';
import { FloeError, printable } from '../errors.js';
import type { DeleteMode } from '../destination/destination.js';
import { redactUrl, type SourceConfig } from '../postgres/source.js';
import { BINARY_MODES, type BinaryMode } from '../postgres/replication.js';
import { checkSecretRef, resolveSecret, secretsDirPath, type Environment } from './secrets.js';

// ---- rows --------------------------------------------------------------------------------------

/** Requested by the user. */
export type PipelineStatus = 'START' | 'PAUSE';
/** Reported by the worker that runs the pipeline. */
export type PipelineState = 'starting' | 'snapshotting' | 'streaming' | 'paused' | 'failed' | 'stopped';
export const PIPELINE_STATES: readonly PipelineState[] = ['starting', 'snapshotting', 'streaming', 'paused', 'failed', 'stopped'];
export type PipelineTableState = 'snapshotting' | 'streaming' | 'skipped' | 'removed';
export const PIPELINE_TABLE_STATES: readonly PipelineTableState[] = ['snapshotting', 'streaming', 'skipped', 'removed'];

export type DestinationType = 'duckdb' | 'snowflake';
export const DESTINATION_TYPES: readonly DestinationType[] = ['duckdb', 'snowflake'];

/** `floe.source`. Ids are bigint in the database and strings here (node-postgres' int8 form). */
export interface SourceRow {
  readonly id: string;
  readonly name: string;
  /** PostgreSQL URL without a password. */
  readonly url: string;
  /** A secret reference (secrets.ts), or null for password-less authentication (trust, certificates, .pgpass). */
  readonly password: string | null;
  readonly options: unknown;
}

/** `floe.destination`. */
export interface DestinationRow {
  readonly id: string;
  readonly name: string;
  readonly type: string;
  /** Where the data goes, without secrets: `duckdb:/path/file.duckdb`, `snowflake://...`. */
  readonly url: string;
  /** `{ "<secret name>": "<secret reference>" }`. */
  readonly secrets: unknown;
  readonly options: unknown;
}

/** `floe.pipeline`. */
export interface PipelineRow {
  readonly id: string;
  readonly name: string;
  readonly sourceId: string;
  readonly destinationId: string;
  readonly publication: string;
  readonly slotName: string;
  readonly options: unknown;
  readonly status: string;
  readonly state: string;
  readonly lastError: string | null;
  readonly lastErrorAt: Date | null;
  readonly lagBytes: number | null;
  /** Circuit breaker of the destination as its worker last saw it (closed, half-open, open), if any. */
  readonly destinationBreaker: string | null;
  /** WAL monitor figures for the slot, from the worker running the pipeline. */
  readonly slotRetainedBytes: number | null;
  readonly slotWalStatus: string | null;
  readonly lagSeconds: number | null;
  readonly monitoredAt: Date | null;
  /** `X/Y`. */
  readonly durableLsn: string | null;
  readonly ownerWorker: string | null;
  /** Bumped by a trigger on every change that matters to a running pipeline (schema.ts). */
  readonly configVersion: number;
  /** Set by `floe pipeline delete --drop-slot`: the manager stops the pipeline, drops its slot, then deletes the row. */
  readonly deleteRequestedAt: Date | null;
  readonly dropSlot: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** `floe.pipeline_table`: per-table controls (skip, resync) and the state the worker reports. */
export interface PipelineTableRow {
  readonly pipelineId: string;
  /** `schema.table`, as `qualifiedName()` in model.ts forms it. */
  readonly tableName: string;
  readonly skip: boolean;
  readonly resyncRequestedAt: Date | null;
  readonly state: string | null;
  readonly rowsSnapshotted: number | null;
  readonly lastError: string | null;
  readonly updatedAt: Date;
}

/** `floe.worker`: one row per `floe run` process, for `floe status`. */
export interface WorkerRow {
  readonly id: string;
  readonly host: string | null;
  readonly pid: number | null;
  readonly startedAt: Date | null;
  readonly heartbeatAt: Date | null;
  readonly maxPipelines: number | null;
}

// ---- names ------------------------------------------------------------------------------------

/**
 * Sources, destinations and pipelines share one naming rule. Pipeline names must fit into the default
 * slot name `floe_<name>` (63 bytes at most, lower case, digits, underscore), so the rule is that one.
 */
const NAME_PATTERN = /^[a-z0-9_]{1,58}$/;
const NAME_HINT = 'names use lower-case letters, digits and underscores, at most 58 characters';

export function checkName(kind: 'source' | 'destination' | 'pipeline', name: string): string {
  if (!NAME_PATTERN.test(name)) throw new FloeError('config', `invalid ${kind} name "${printable(name)}"`, { hint: NAME_HINT });
  return name;
}

const SLOT_PATTERN = /^[a-z0-9_]{1,63}$/;

export function defaultSlotName(pipeline: string): string {
  return `floe_${pipeline}`;
}

export function checkSlotName(slot: string): string {
  if (!SLOT_PATTERN.test(slot)) {
    throw new FloeError('config', `invalid slot name "${printable(slot)}"`, {
      hint: 'slot names use lower-case letters, digits and underscores (at most 63)',
    });
  }
  return slot;
}

export function checkPublication(publication: string): string {
  // Any identifier is legal in PostgreSQL (quoted); only what cannot be one is refused here.
  if (publication.length === 0 || Buffer.byteLength(publication) > 63 || publication.includes('\0')) {
    throw new FloeError('config', `invalid publication name "${printable(publication)}"`, {
      hint: 'a publication name is a PostgreSQL identifier of 1 to 63 bytes',
    });
  }
  return publication;
}

/** `schema.table` (the split is at the first dot: a schema name with a dot is not supported here). */
export function checkTableName(table: string): string {
  const dot = table.indexOf('.');
  if (dot <= 0 || dot === table.length - 1 || Buffer.byteLength(table) > 127 || table.includes('\0')) {
    throw new FloeError('config', `invalid table name "${printable(table)}"`, {
      hint: 'name the table with its schema, as it appears in the publication: public.orders',
    });
  }
  return table;
}

// ---- source -----------------------------------------------------------------------------------

/**
 * A source URL as stored: postgres:// with a user and no password anywhere (the password is a
 * separate secret reference). Returns the URL unchanged.
 */
export function checkSourceUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FloeError('config', 'the source URL is not a valid URL', { hint: 'use postgres://user@host:5432/database' });
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new FloeError('config', `the source URL must start with postgres:// or postgresql://, not ${u.protocol}//`);
  }
  if (u.password || u.searchParams.has('password')) {
    throw new FloeError('config', 'the source URL contains a password', {
      hint: 'remove it from the URL and pass --password env:NAME, file:/path or enc:v1:... instead',
    });
  }
  if (!u.username && !u.searchParams.get('user')) {
    throw new FloeError('config', 'the source URL names no user', { hint: 'use postgres://user@host:5432/database' });
  }
  return url;
}

const sourceOptionsSchema = z.strictObject({
  connect_timeout_ms: intOption(100, 600_000),
});

export type SourceOptions = z.infer<typeof sourceOptionsSchema>;

// ---- destination ------------------------------------------------------------------------------

/**
 * Secrets each destination type takes, by name. Values are references (secrets.ts).
 * The Snowflake names follow its key-pair and OAuth authentication.
 */
export const DESTINATION_SECRETS: Readonly<Record<DestinationType, readonly string[]>> = {
  duckdb: [],
  snowflake: ['private_key', 'private_key_passphrase'],
};

/** Secrets a destination could plausibly be given but does not use: refused with the reason, not as unknown. */
const UNUSED_SECRETS: Readonly<Record<string, string>> = {
  password: 'the Snowflake destination authenticates with a key pair only; give --secret private_key=... (and private_key_passphrase)',
  oauth_token: 'the Snowflake destination authenticates with a key pair only; give --secret private_key=... (and private_key_passphrase)',
};

/** Checks a destination's type and URL without opening it. Returns the type. */
export function checkDestination(type: string, url: string): DestinationType {
  if (!(DESTINATION_TYPES as readonly string[]).includes(type)) {
    throw new FloeError('config', `unknown destination type "${printable(type)}"`, { hint: `use one of ${DESTINATION_TYPES.join(', ')}` });
  }
  if (type === 'duckdb') {
    // The same parser parseDestination (cli/destination-url.ts) uses.
    if (!parseDuckDbUrl(url)) {
      throw new FloeError('config', 'a DuckDB destination URL has the form duckdb:/path/to/file.duckdb', {
        hint: 'pass --path ./warehouse.duckdb',
      });
    }
    return 'duckdb';
  }
  // The scheme, an account and no secret in the URL first (their errors say what to do instead), then the
  // destination's own parser checks user, database, schema and every parameter without reading a key.
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FloeError('config', 'the Snowflake destination URL is not a valid URL', {
      hint: 'use snowflake://<user>@<account>/<database>/<schema>?warehouse=...',
    });
  }
  if (u.protocol !== 'snowflake:') {
    throw new FloeError('config', 'a Snowflake destination URL must start with snowflake://');
  }
  if (!u.hostname) {
    throw new FloeError('config', 'the Snowflake destination URL names no account', {
      hint: 'use snowflake://<user>@<account>/<database>/<schema>?warehouse=...',
    });
  }
  if (u.searchParams.has('base_url')) {
    // The endpoint receives the key-pair JWT: only the worker's operator may redirect it (design.md invariant 9).
    throw new FloeError('config', 'base_url is not allowed in a control-plane destination URL', {
      hint: `the workers' operator sets ${SNOWFLAKE_BASE_URL_ENV} on the workers instead (e.g. for floe emulator or private link)`,
    });
  }
  const secretParam = [...u.searchParams.keys()].find((k) => /pass|secret|private|token/i.test(k));
  if (u.password || secretParam) {
    throw new FloeError('config', 'the Snowflake destination URL contains a secret', {
      hint: 'remove it from the URL and pass --secret private_key=file:/path (and private_key_passphrase=env:NAME) instead',
    });
  }
  checkSnowflakeUrl(url);
  return 'snowflake';
}

/** The worker's Snowflake endpoint override for control-plane destinations (emulator, private link). */
export const SNOWFLAKE_BASE_URL_ENV = 'FLOE_SNOWFLAKE_BASE_URL';
/** Hosts to which a control-plane source's password may go in cleartext without verified TLS. */
export const CLEARTEXT_HOSTS_ENV = 'FLOE_CLEARTEXT_PASSWORD_HOSTS';

/**
 * What an encrypted secret is bound to (AES-GCM associated data): the row, the setting, and the host the
 * secret is sent to. A ciphertext copied to another row, or left in a row whose URL now points at
 * another host, does not decrypt. `floe secret encrypt` computes the same string.
 */
export function secretBinding(
  target:
    | { readonly kind: 'source'; readonly name: string; readonly url: string }
    | { readonly kind: 'destination'; readonly name: string; readonly secret: string; readonly url: string },
): string {
  if (target.kind === 'source') return `source/${target.name}/password@${sourceEndpoint(target.url)}`;
  const account = /^snowflake:\/\/[^@/?#]*@([^/?#]+)/.exec(target.url)?.[1];
  return `destination/${target.name}/${target.secret}@${(account ?? '').toLowerCase()}`;
}

/** host:port of a PostgreSQL URL, as lower case, with libpq's defaults. */
function sourceEndpoint(url: string): string {
  const u = new URL(url);
  const host = decodeURIComponent(u.hostname) || u.searchParams.get('host') || 'localhost';
  const port = u.port || u.searchParams.get('port') || '5432';
  return `${host.toLowerCase()}:${port}`;
}

/** Checks `{ name: reference }` for a destination type. Returns the validated map. */
export function checkDestinationSecrets(type: DestinationType, secrets: unknown): Record<string, string> {
  if (typeof secrets !== 'object' || secrets === null || Array.isArray(secrets)) {
    throw new FloeError('config', 'destination secrets must be a JSON object of name → secret reference');
  }
  const allowed = DESTINATION_SECRETS[type];
  const out: Record<string, string> = {};
  for (const [name, ref] of Object.entries(secrets)) {
    if (type === 'snowflake' && UNUSED_SECRETS[name]) {
      throw new FloeError('config', `the snowflake destination does not use the ${name} secret`, { hint: UNUSED_SECRETS[name] });
    }
    if (!allowed.includes(name)) {
      throw new FloeError('config', `the ${type} destination takes no secret "${printable(name)}"`, {
        hint: allowed.length ? `secrets it takes: ${allowed.join(', ')}` : `a ${type} destination needs no secrets`,
      });
    }
    if (typeof ref !== 'string') throw new FloeError('config', `destination secret ${name} must be a string reference`);
    checkSecretRef(ref, `destination secret ${name}`);
    out[name] = ref;
  }
  return out;
}

// DuckDB's settings live in its URL (memory_limit); Snowflake's options are the Snowflake destination's to define.
const destinationOptionsSchemas = {
  duckdb: z.strictObject({}),
  snowflake: z.record(z.string().regex(/^[a-z][a-z0-9_]*$/), z.union([z.string(), z.number(), z.boolean()])),
} as const;

export function checkDestinationOptions(type: DestinationType, options: unknown): Record<string, string | number | boolean> {
  return parseWith<Record<string, string | number | boolean>>(destinationOptionsSchemas[type], options ?? {}, `${type} destination option`);
}

// ---- pipeline options -------------------------------------------------------------------------

/**
 * Options of a pipeline row (`options` jsonb), by their snake_case names. Bounds catch typos (a
 * batch of 10 GB, a merge every 0 ms); the defaults are the runtime's (pipeline.ts).
 */
const pipelineOptionsSchema = z.strictObject({
  batch_max_bytes: intOption(1024, 256 * 1024 * 1024),
  batch_max_ms: intOption(1, 3_600_000),
  max_uncommitted_bytes: intOption(1024 * 1024, 16 * 1024 * 1024 * 1024),
  merge_interval_ms: intOption(1, 86_400_000),
  status_interval_ms: intOption(100, 600_000),
  snapshot_parallelism: intOption(1, 64),
  snapshot_range_pages: intOption(1, 1 << 24),
  publication_poll_ms: intOption(100, 3_600_000),
  delete_mode: z.enum(['hard', 'soft'], { error: 'must be hard or soft' }).optional(),
  binary: z.enum(BINARY_MODES, { error: 'must be off or on' }).optional(),
});

export type PipelineOptionValues = z.infer<typeof pipelineOptionsSchema>;
export const PIPELINE_OPTION_NAMES = Object.keys(pipelineOptionsSchema.shape) as (keyof PipelineOptionValues)[];

/** Validates a pipeline's options object (from a row, or built from --option flags). */
export function parsePipelineOptions(options: unknown): PipelineOptionValues {
  return parseWith(pipelineOptionsSchema, options ?? {}, 'pipeline option');
}

export function parseSourceOptions(options: unknown): SourceOptions {
  return parseWith(sourceOptionsSchema, options ?? {}, 'source option');
}

/**
 * `key=value` flags into an options object. Keys may be written with dashes (batch-max-bytes);
 * numbers stay strings here and are converted by the schema, so a row written by the CLI holds
 * numbers like one written by hand.
 */
export function optionsFromFlags(flags: readonly string[], flagName = '--option'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    // The value is not echoed: for --secret it could be a pasted secret.
    if (eq <= 0) throw new FloeError('config', `a ${flagName} value is not key=value`, { hint: `e.g. ${flagName} name=value` });
    out[flag.slice(0, eq).trim().replaceAll('-', '_')] = flag.slice(eq + 1).trim();
  }
  return out;
}

// ---- resolution -------------------------------------------------------------------------------

/** Runtime settings, named as in `PipelineOptions` (pipeline.ts); undefined means the runtime's default. */
export interface RuntimeOptions {
  readonly snapshotParallelism?: number;
  readonly snapshotRangePages?: number;
  readonly batchMaxBytes?: number;
  readonly batchMaxMs?: number;
  readonly maxUncommittedBytes?: number;
  readonly mergeIntervalMs?: number;
  readonly statusIntervalMs?: number;
  readonly publicationPollMs?: number;
  readonly binary?: BinaryMode;
}

export interface ResolvedDestination {
  readonly name: string;
  readonly type: DestinationType;
  /** Without secrets; for DuckDB what `parseDestination` takes. */
  readonly url: string;
  readonly deleteMode: DeleteMode;
  /** Resolved secret values by name. Never log these. */
  readonly secrets: Readonly<Record<string, string>>;
  readonly options: Readonly<Record<string, string | number | boolean>>;
}

/**
 * Everything a worker needs to run a pipeline. Holds secrets (the source URL carries the resolved
 * password): never log it whole; `secretValues` feeds `redactSecrets` for error texts.
 */
export interface ResolvedPipeline {
  readonly id: string;
  readonly name: string;
  readonly configVersion: number;
  readonly status: PipelineStatus;
  readonly deleteRequested: boolean;
  readonly dropSlot: boolean;
  readonly publication: string;
  readonly slotName: string;
  readonly sourceName: string;
  /** The source with its password resolved into the URL. */
  readonly source: SourceConfig;
  readonly destination: ResolvedDestination;
  /** Spread into `PipelineOptions`. */
  readonly runtime: RuntimeOptions;
  readonly secretValues: readonly string[];
}

export type ResolveResult = { readonly ok: true; readonly config: ResolvedPipeline } | { readonly ok: false; readonly error: FloeError };

/**
 * Validates one pipeline row with the source and destination rows it references (undefined when the
 * row is missing) and resolves its secrets in `env`. Never throws; never puts a secret in the error.
 */
export function resolvePipelineConfig(
  rows: { readonly pipeline: PipelineRow; readonly source?: SourceRow; readonly destination?: DestinationRow },
  env: Environment = process.env,
): ResolveResult {
  const { pipeline, source, destination } = rows;
  try {
    const config = resolve(pipeline, source, destination, env);
    return { ok: true, config };
  } catch (err) {
    const e = err instanceof FloeError ? err : new FloeError('internal', (err as Error).message ?? String(err));
    const error = new FloeError(e.kind, `pipeline ${pipeline.name}: ${e.message}`, { hint: e.hint, retry: e.retry });
    return { ok: false, error };
  }
}

function resolve(pipeline: PipelineRow, source: SourceRow | undefined, destination: DestinationRow | undefined, env: Environment) {
  checkName('pipeline', pipeline.name);
  checkSlotName(pipeline.slotName);
  checkPublication(pipeline.publication);
  if (pipeline.status !== 'START' && pipeline.status !== 'PAUSE') {
    throw new FloeError('config', `status "${printable(pipeline.status)}" is neither START nor PAUSE`);
  }
  const options = parsePipelineOptions(pipeline.options);
  if (!source || source.id !== pipeline.sourceId) {
    throw new FloeError('config', `source ${pipeline.sourceId} does not exist`, { hint: 'point source_id at a row of floe.source' });
  }
  if (!destination || destination.id !== pipeline.destinationId) {
    throw new FloeError('config', `destination ${pipeline.destinationId} does not exist`, {
      hint: 'point destination_id at a row of floe.destination',
    });
  }
  const secretValues: string[] = [];

  const sourceConfig = within(`source ${source.name}`, () => {
    const resolved = resolveSource(source, env);
    secretValues.push(...resolved.secretValues);
    return resolved.config;
  });

  const resolvedDestination = within(`destination ${destination.name}`, (): ResolvedDestination => {
    const type = checkDestination(destination.type, destination.url);
    const refs = checkDestinationSecrets(type, destination.secrets ?? {});
    const secrets: Record<string, string> = {};
    for (const [name, ref] of Object.entries(refs)) {
      const binding = secretBinding({ kind: 'destination', name: destination.name, secret: name, url: destination.url });
      secrets[name] = resolveSecret(ref, `secret ${name}`, env, binding);
      secretValues.push(secrets[name]);
    }
    const destOptions = checkDestinationOptions(type, destination.options);
    return {
      name: destination.name,
      type,
      url: withOperatorEndpoint(type, destination.url, env),
      deleteMode: options.delete_mode ?? 'hard',
      secrets: Object.freeze(secrets),
      options: Object.freeze(destOptions),
    };
  });

  const config: ResolvedPipeline = {
    id: pipeline.id,
    name: pipeline.name,
    configVersion: pipeline.configVersion,
    status: pipeline.status,
    deleteRequested: pipeline.deleteRequestedAt !== null,
    dropSlot: pipeline.dropSlot,
    publication: pipeline.publication,
    slotName: pipeline.slotName,
    sourceName: source.name,
    source: sourceConfig,
    destination: resolvedDestination,
    runtime: {
      snapshotParallelism: options.snapshot_parallelism,
      snapshotRangePages: options.snapshot_range_pages,
      batchMaxBytes: options.batch_max_bytes,
      batchMaxMs: options.batch_max_ms,
      maxUncommittedBytes: options.max_uncommitted_bytes,
      mergeIntervalMs: options.merge_interval_ms,
      statusIntervalMs: options.status_interval_ms,
      publicationPollMs: options.publication_poll_ms,
      binary: options.binary,
    },
    secretValues,
  };
  return withSafeSerialization(config);
}

/**
 * Serializing a resolved pipeline (JSON.stringify, pino, console.log, util.inspect) shows the source URL
 * without its password and secret names without values, so an accidental log line leaks nothing.
 * Non-enumerable, so the object's own fields are unchanged.
 */
function withSafeSerialization(config: ResolvedPipeline): ResolvedPipeline {
  const safe = () => ({
    ...config,
    source: { ...config.source, url: redactUrl(config.source.url) },
    destination: { ...config.destination, secrets: Object.fromEntries(Object.keys(config.destination.secrets).map((k) => [k, '***'])) },
    secretValues: config.secretValues.map(() => '***'),
  });
  Object.defineProperty(config, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(config, inspect.custom, { value: () => safe(), enumerable: false });
  return Object.freeze(config);
}

/**
 * A source row as a connection config, its password reference resolved into the URL. Throws a
 * FloeError (config) naming what is wrong; `secretValues` is for `redactSecrets`.
 */
export function resolveSource(source: SourceRow, env: Environment = process.env): { config: SourceConfig; secretValues: string[] } {
  checkSourceUrl(source.url);
  checkTlsFiles(source.url, `source ${source.name}`, env);
  const options = parseSourceOptions(source.options);
  // The row writer chooses the host: the password goes in cleartext only where the worker's operator allows.
  const allowed = (env[CLEARTEXT_HOSTS_ENV] ?? '').split(',').map((h) => h.trim().toLowerCase());
  const endpoint = sourceEndpoint(source.url);
  const cleartextPassword = allowed.includes(endpoint) || allowed.includes(endpoint.replace(/:\d+$/, '')) ? 'allow' : 'verified-tls';
  const base = { connectTimeoutMs: options.connect_timeout_ms, cleartextPassword } as const;
  if (source.password === null) return { config: { ...base, url: source.url }, secretValues: [] };
  const password = resolveSecret(source.password, 'password', env, secretBinding({ kind: 'source', name: source.name, url: source.url }));
  const u = new URL(source.url);
  // The URL setter leaves '%' alone; encoding first keeps any password intact through pg's decoding.
  u.password = encodeURIComponent(password);
  return { config: { ...base, url: u.toString() }, secretValues: [password] };
}

/** A Snowflake URL with the worker's FLOE_SNOWFLAKE_BASE_URL, if its operator set one. */
function withOperatorEndpoint(type: DestinationType, url: string, env: Environment): string {
  const base = env[SNOWFLAKE_BASE_URL_ENV];
  if (type !== 'snowflake' || !base) return url;
  return `${url}${url.includes('?') ? '&' : '?'}base_url=${encodeURIComponent(base)}`;
}

// ---- helpers ----------------------------------------------------------------------------------

/**
 * TLS files (`sslrootcert`, `sslcert`, `sslkey`) that a control-plane row names are read by the worker: like
 * `file:` secret references, only inside FLOE_SECRETS_DIR (a row writer must not make a worker read, or
 * present as its client key, any file it can reach).
 */
function checkTlsFiles(url: string, what: string, env: Environment): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return; // checkSourceUrl reported it
  }
  for (const key of ['sslrootcert', 'sslcert', 'sslkey']) {
    const path = u.searchParams.get(key);
    if (path !== null) secretsDirPath(path, `${what}: ${key}`, env, 'TLS files in control-plane URLs');
  }
}

/** An optional integer option; numeric strings are accepted (hand-written JSON, --option flags). */
function intOption(min: number, max: number) {
  return z
    .preprocess(
      (v) => (typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v),
      z
        .number({ error: `must be an integer from ${min} to ${max}` })
        .int({ error: `must be an integer from ${min} to ${max}` })
        .min(min, { error: `must be an integer from ${min} to ${max}` })
        .max(max, { error: `must be an integer from ${min} to ${max}` }),
    )
    .optional();
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FloeError('config', `${what}s must be a JSON object`);
  }
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const known = schema instanceof z.ZodObject ? Object.keys(schema.shape).join(', ') : '';
    throw new FloeError('config', `unknown ${what} "${printable(issue.keys[0] ?? '')}"`, known ? { hint: `known: ${known}` } : {});
  }
  const key = issue.path.map(String).join('.');
  throw new FloeError('config', `${what} ${printable(key)} ${issue.message}`);
}

/** Prefixes a FloeError's message with where it happened. */
function within<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof FloeError) throw new FloeError(err.kind, `${where}: ${err.message}`, { hint: err.hint, retry: err.retry });
    throw err;
  }
}
