/**
 * The control-plane schema `floe` and its migrations. The SQL lives here, in code, and nowhere else:
 * `floe migrate` applies it, tests run against it, docs/configuration.md describes it (predecessor
 * defect 15 was a SQL file and code that disagreed).
 *
 * Each migration runs in its own transaction that first takes a transaction-scoped advisory lock, so
 * two workers migrating at once apply each migration exactly once; a migration recorded in
 * `floe.schema_migrations` is never run again.
 *
 * Notifications: triggers send `pg_notify('floe_config', json)` when a user-controlled column changes
 * (a pipeline's status, options, source, ...), never for what workers report (state, lag, errors), so
 * status writes do not wake every worker.
 */
import type pg from 'pg';
import { FloeError, coerceError } from '../errors.js';

/** The LISTEN channel of configuration changes. */
export const CONFIG_CHANNEL = 'floe_config';

/**
 * The payload sent on CONFIG_CHANNEL, as JSON. `id`/`name` identify the changed row (for
 * `pipeline_table`, `id` is the pipeline's id and `name` the table's).
 */
export interface ConfigNotification {
  readonly table: 'source' | 'destination' | 'pipeline' | 'pipeline_table';
  readonly op: 'INSERT' | 'UPDATE' | 'DELETE';
  readonly id: string;
  readonly name: string;
}

interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

const NAME_CHECK = `~ '^[a-z0-9_]{1,58}$'`;

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'sources, destinations, pipelines, per-table controls, workers, change notifications',
    sql: `
CREATE TABLE floe.source (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (name ${NAME_CHECK}),
  url         text NOT NULL CHECK (url ~ '^postgres(ql)?://'),
  password    text CONSTRAINT source_password_is_reference CHECK (password ~ '^(env:|file:/|enc:v1:)'),
  options     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN floe.source.url IS 'PostgreSQL URL without a password';
COMMENT ON COLUMN floe.source.password IS 'secret reference: env:NAME, file:/path or enc:v1:...; never the password';

CREATE TABLE floe.destination (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (name ${NAME_CHECK}),
  type        text NOT NULL CHECK (type IN ('duckdb', 'snowflake')),
  url         text NOT NULL,
  secrets     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(secrets) = 'object')
                CONSTRAINT destination_secrets_are_references CHECK (NOT jsonb_path_exists(secrets, '$.* ? (@.type() != "string" || !(@ like_regex "^(env:|file:/|enc:v1:)"))')),
  options     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN floe.destination.secrets IS 'secret name -> secret reference (env:, file:, enc:v1:); never a secret';

CREATE TABLE floe.pipeline (
  id                  bigserial PRIMARY KEY,
  name                text NOT NULL UNIQUE CHECK (name ${NAME_CHECK}),
  source_id           bigint NOT NULL REFERENCES floe.source (id),
  destination_id      bigint NOT NULL REFERENCES floe.destination (id),
  publication         text NOT NULL,
  slot_name           text NOT NULL UNIQUE CHECK (slot_name ~ '^[a-z0-9_]{1,63}$'),
  options             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
  status              text NOT NULL DEFAULT 'PAUSE' CHECK (status IN ('START', 'PAUSE')),
  delete_requested_at timestamptz,
  drop_slot           boolean NOT NULL DEFAULT false,
  state               text NOT NULL DEFAULT 'stopped'
                        CHECK (state IN ('starting', 'snapshotting', 'streaming', 'paused', 'failed', 'stopped')),
  last_error          text,
  last_error_at       timestamptz,
  lag_bytes           bigint,
  durable_lsn         pg_lsn,
  owner_worker        text,
  config_version      bigint NOT NULL DEFAULT 1,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipeline_source_id ON floe.pipeline (source_id);
CREATE INDEX pipeline_destination_id ON floe.pipeline (destination_id);
COMMENT ON COLUMN floe.pipeline.status IS 'requested by the user: START or PAUSE';
COMMENT ON COLUMN floe.pipeline.state IS 'reported by the worker running the pipeline';
COMMENT ON COLUMN floe.pipeline.config_version IS 'bumped by trigger on every change that matters to a running pipeline';

CREATE TABLE floe.pipeline_table (
  pipeline_id         bigint NOT NULL REFERENCES floe.pipeline (id) ON DELETE CASCADE,
  table_name          text NOT NULL CHECK (table_name ~ '^[^.]+\\..+$'),
  skip                boolean NOT NULL DEFAULT false,
  resync_requested_at timestamptz,
  state               text CHECK (state IN ('snapshotting', 'streaming', 'skipped', 'removed')),
  rows_snapshotted    bigint,
  last_error          text,
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pipeline_id, table_name)
);

CREATE TABLE floe.worker (
  id            text PRIMARY KEY,
  host          text,
  pid           integer,
  started_at    timestamptz NOT NULL DEFAULT now(),
  heartbeat_at  timestamptz NOT NULL DEFAULT now(),
  max_pipelines integer
);

-- A pipeline's name is its identity in the state store and its slot holds its position: changing
-- either would orphan the slot (pinning WAL) and silently start over. Delete and re-add instead.
CREATE FUNCTION floe.pipeline_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name IS DISTINCT FROM OLD.name OR NEW.slot_name IS DISTINCT FROM OLD.slot_name THEN
    RAISE EXCEPTION 'a pipeline''s name and slot_name cannot change'
      USING HINT = 'delete the pipeline (floe pipeline delete --drop-slot) and add it again', ERRCODE = 'check_violation';
  END IF;
  IF (NEW.source_id, NEW.destination_id, NEW.publication, NEW.options, NEW.status, NEW.delete_requested_at, NEW.drop_slot)
     IS DISTINCT FROM (OLD.source_id, OLD.destination_id, OLD.publication, OLD.options, OLD.status, OLD.delete_requested_at, OLD.drop_slot)
  THEN
    NEW.config_version := OLD.config_version + 1;
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER pipeline_before_update BEFORE UPDATE ON floe.pipeline
  FOR EACH ROW EXECUTE FUNCTION floe.pipeline_before_update();

-- A changed source or destination restarts the pipelines that use it.
CREATE FUNCTION floe.endpoint_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'source' THEN
    UPDATE floe.pipeline SET config_version = config_version + 1, updated_at = now() WHERE source_id = NEW.id;
  ELSE
    UPDATE floe.pipeline SET config_version = config_version + 1, updated_at = now() WHERE destination_id = NEW.id;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION floe.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE TRIGGER source_touch BEFORE UPDATE ON floe.source FOR EACH ROW EXECUTE FUNCTION floe.touch_updated_at();
CREATE TRIGGER destination_touch BEFORE UPDATE ON floe.destination FOR EACH ROW EXECUTE FUNCTION floe.touch_updated_at();
CREATE TRIGGER source_after_update AFTER UPDATE ON floe.source FOR EACH ROW
  WHEN ((OLD.url, OLD.password, OLD.options) IS DISTINCT FROM (NEW.url, NEW.password, NEW.options))
  EXECUTE FUNCTION floe.endpoint_after_update();
CREATE TRIGGER destination_after_update AFTER UPDATE ON floe.destination FOR EACH ROW
  WHEN ((OLD.type, OLD.url, OLD.secrets, OLD.options) IS DISTINCT FROM (NEW.type, NEW.url, NEW.secrets, NEW.options))
  EXECUTE FUNCTION floe.endpoint_after_update();

CREATE FUNCTION floe.notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
BEGIN
  -- jsonb, not record: one function serves four row types.
  IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
  PERFORM pg_notify('${CONFIG_CHANNEL}', jsonb_build_object(
    'table', TG_TABLE_NAME,
    'op', TG_OP,
    'id', coalesce(r->>'pipeline_id', r->>'id'),
    'name', coalesce(r->>'table_name', r->>'name'))::text);
  RETURN NULL;
END $$;

CREATE TRIGGER source_notify AFTER INSERT OR DELETE ON floe.source FOR EACH ROW EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER source_notify_update AFTER UPDATE ON floe.source FOR EACH ROW
  WHEN ((OLD.name, OLD.url, OLD.password, OLD.options) IS DISTINCT FROM (NEW.name, NEW.url, NEW.password, NEW.options))
  EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER destination_notify AFTER INSERT OR DELETE ON floe.destination FOR EACH ROW EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER destination_notify_update AFTER UPDATE ON floe.destination FOR EACH ROW
  WHEN ((OLD.name, OLD.type, OLD.url, OLD.secrets, OLD.options) IS DISTINCT FROM (NEW.name, NEW.type, NEW.url, NEW.secrets, NEW.options))
  EXECUTE FUNCTION floe.notify_config();
-- The before-update trigger bumps config_version exactly when a user-controlled column changed.
CREATE TRIGGER pipeline_notify AFTER INSERT OR DELETE ON floe.pipeline FOR EACH ROW EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER pipeline_notify_update AFTER UPDATE ON floe.pipeline FOR EACH ROW
  WHEN (OLD.config_version IS DISTINCT FROM NEW.config_version)
  EXECUTE FUNCTION floe.notify_config();
-- Workers insert and update pipeline_table rows to report table states; only the controls notify.
CREATE TRIGGER pipeline_table_notify_insert AFTER INSERT ON floe.pipeline_table FOR EACH ROW
  WHEN (NEW.skip OR NEW.resync_requested_at IS NOT NULL)
  EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER pipeline_table_notify_update AFTER UPDATE ON floe.pipeline_table FOR EACH ROW
  WHEN ((OLD.skip, OLD.resync_requested_at) IS DISTINCT FROM (NEW.skip, NEW.resync_requested_at))
  EXECUTE FUNCTION floe.notify_config();
CREATE TRIGGER pipeline_table_notify_delete AFTER DELETE ON floe.pipeline_table FOR EACH ROW
  WHEN (OLD.skip OR OLD.resync_requested_at IS NOT NULL)
  EXECUTE FUNCTION floe.notify_config();
`,
  },
  {
    version: 2,
    description: 'fencing tokens of Postgres pipeline leases',
    // Drawn by the worker that just took a pipeline's advisory lock (control/pg-lease.ts): one sequence
    // for all pipelines, so a pipeline deleted and added again under its name never reuses a token. Not
    // a user-controlled column: it neither bumps config_version nor notifies.
    sql: `CREATE SEQUENCE floe.lease_token;
ALTER TABLE floe.pipeline ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;`,
  },
  {
    version: 3,
    description: 'destination and slot health reported by workers',
    // Written by the pipeline's worker (like lag_bytes: not user-controlled): the destination's circuit
    // breaker (closed | half-open | open) and the WAL monitor's figures for the pipeline's slot.
    sql: `ALTER TABLE floe.pipeline ADD COLUMN destination_breaker text,
  ADD COLUMN slot_retained_bytes bigint,
  ADD COLUMN slot_wal_status text,
  ADD COLUMN lag_seconds double precision,
  ADD COLUMN monitored_at timestamptz;`,
  },
  {
    version: 4,
    description: 'enc:v2 secret references (bound to their row and host)',
    // v1 values stay allowed in the tables so existing rows survive; workers refuse them unless their
    // operator sets FLOE_ALLOW_ENC_V1 while re-encrypting (docs/operations.md).
    sql: `ALTER TABLE floe.source DROP CONSTRAINT source_password_is_reference,
  ADD CONSTRAINT source_password_is_reference CHECK (password ~ '^(env:|file:/|enc:v[12]:)');
ALTER TABLE floe.destination DROP CONSTRAINT destination_secrets_are_references,
  ADD CONSTRAINT destination_secrets_are_references
  CHECK (NOT jsonb_path_exists(secrets, '$.* ? (@.type() != "string" || !(@ like_regex "^(env:|file:/|enc:v[12]:)"))'));
COMMENT ON COLUMN floe.source.password IS 'secret reference: env:NAME, file:/path or enc:v2:...; never the password';
COMMENT ON COLUMN floe.destination.secrets IS 'secret name -> secret reference (env:, file:, enc:v2:); never a secret';`,
  },
  {
    version: 5,
    description: 'one WAL monitor per source across workers',
    // The monitor lease of each source (src/monitor/source-lease.ts): the worker that holds it watches the
    // source, the others skip it; and the figures of its last check, for floe status. Keyed by the source
    // name (the monitor's id); written by workers only, so it neither bumps config_version nor notifies.
    sql: `CREATE TABLE floe.source_monitor (
  source_name     text PRIMARY KEY,
  worker          text NOT NULL,
  lease_until     timestamptz NOT NULL,
  checked_at      timestamptz,
  wal_dir_bytes   bigint,
  wal_keep_bytes  bigint,
  archive_failing boolean,
  worst_slot      jsonb
);
COMMENT ON COLUMN floe.source_monitor.worst_slot IS 'the slot retaining the most WAL at the last check: {slot, type, floe, active, owner, retained_bytes, wal_status}';`,
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The subset of a pg client the migrations need. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

export interface MigrationResult {
  readonly applied: readonly { version: number; description: string }[];
  readonly version: number;
}

/** Applies every pending migration, each in its own locked transaction. Safe to run concurrently. */
export async function migrate(client: Queryable): Promise<MigrationResult> {
  const applied: { version: number; description: string }[] = [];
  for (const m of MIGRATIONS) {
    await client.query('BEGIN');
    try {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext('floe.migrate'))`);
      await client.query(`CREATE SCHEMA IF NOT EXISTS floe`);
      await client.query(`CREATE TABLE IF NOT EXISTS floe.schema_migrations (
        version     integer PRIMARY KEY,
        description text NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now()
      )`);
      const done = await client.query(`SELECT 1 FROM floe.schema_migrations WHERE version = $1`, [m.version]);
      if (done.rowCount === 0) {
        await client.query(m.sql);
        await client.query(`INSERT INTO floe.schema_migrations (version, description) VALUES ($1, $2)`, [m.version, m.description]);
        applied.push({ version: m.version, description: m.description });
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw coerceError(err, `migration ${m.version} failed`);
    }
  }
  return { applied, version: LATEST_SCHEMA_VERSION };
}

/** Refuses to work on a control-plane database that `floe migrate` has not brought to this version. */
export async function checkSchemaVersion(client: Queryable): Promise<void> {
  // Two statements: a query naming floe.schema_migrations fails to plan when it does not exist.
  const exists = await client.query<{ t: string | null }>(`SELECT to_regclass('floe.schema_migrations')::text AS t`);
  const version =
    exists.rows[0]?.t == null
      ? null
      : Number((await client.query<{ v: number }>(`SELECT coalesce(max(version), 0) AS v FROM floe.schema_migrations`)).rows[0]!.v);
  if (version === null || version < LATEST_SCHEMA_VERSION) {
    throw new FloeError('config', `the control-plane schema is ${version === null ? 'missing' : `at version ${version}`}`, {
      hint: 'run floe migrate',
    });
  }
  if (version > LATEST_SCHEMA_VERSION) {
    throw new FloeError('config', `the control-plane schema (version ${version}) is newer than this floe (${LATEST_SCHEMA_VERSION})`, {
      hint: 'upgrade floe on this machine',
    });
  }
}
