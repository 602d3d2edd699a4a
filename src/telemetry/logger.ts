/**
 * Structured logs (pino): JSON lines on stderr by default, `format: 'pretty'` for humans. Fields used
 * across floe: `pipeline`, `table`, `source` (a source *name*, never its URL), `slot`.
 * `FLOE_LOG_LEVEL` sets the level (default info).
 *
 * Secrets never reach the output, by three layers:
 * 1. redaction by field name (passwords, passphrases, private keys, tokens, secrets, Authorization
 *    headers); fields that hold URLs keep the URL but lose its password (`postgres://u:***@h/db`);
 * 2. every finished line is scrubbed of credentials inside URLs (`scheme://user:password@`) and of
 *    PEM private key blocks, wherever they appear (an error message, a stack);
 * 3. secret values known to the process — passwords in the URLs it was given (`registerSecret`) and
 *    environment variables whose names say they hold a secret — are replaced wherever they appear.
 *
 * Row values are never logged. `FLOE_LOG_ROW_VALUES=1` (see `logRowValues`) is the only switch that
 * allows code to include them, for debugging; it leaks data into logs and is documented as such.
 */
import { pino, type Logger } from 'pino';
import { redactUrl } from '../postgres/source.js';

export type { Logger };
export type LogFormat = 'json' | 'pretty';

const SECRET_KEYS = [
  'password',
  'passphrase',
  'privateKey',
  'private_key',
  'privateKeyPassphrase',
  'private_key_passphrase',
  'token',
  'accessToken',
  'secret',
  'webhookSecret',
  'apiKey',
  'authorization',
  'Authorization',
  'cookie',
];
const URL_KEYS = ['url', 'source', 'sourceUrl', 'destination', 'connectionString', 'stateUrl', 'webhook'];

export const REDACT_PATHS = [
  ...[...SECRET_KEYS, ...URL_KEYS].flatMap((k) => [k, `*.${k}`]),
  'headers.authorization',
  'req.headers.authorization',
  '*.headers.authorization',
  'headers["x-floe-signature"]',
];

/** Whether code may put row values into log lines (`FLOE_LOG_ROW_VALUES=1`; leaks data, for debugging only). */
export function logRowValues(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.FLOE_LOG_ROW_VALUES === '1';
}

const knownSecrets = new Set<string>();

/** Adds a value that must never appear in a log line (e.g. a password taken from a URL). Short values are ignored. */
export function registerSecret(value: string | undefined): void {
  if (!value || value.length < 4) return;
  knownSecrets.add(value);
  // As it appears inside a JSON string, and URL-encoded.
  knownSecrets.add(JSON.stringify(value).slice(1, -1));
  knownSecrets.add(encodeURIComponent(value));
}

/**
 * A URL parameter that holds a secret. `*_file` parameters (private_key_file) hold a path, which is not
 * secret and is what an error about the file must show.
 */
export function isSecretParam(name: string): boolean {
  return /pass|secret|key|token/i.test(name) && !/_file$/i.test(name);
}

/** Registers the password of a connection URL (and any secret-looking query parameter). */
export function registerUrlSecrets(url: string | undefined): void {
  if (!url) return;
  try {
    const u = new URL(url);
    if (u.password) {
      registerSecret(u.password);
      registerSecret(decodeURIComponent(u.password));
    }
    for (const [key, value] of u.searchParams) if (isSecretParam(key)) registerSecret(value);
  } catch {
    // not a URL: nothing to take from it
  }
}

const SECRET_ENV = /PASSWORD|PASSPHRASE|SECRET|TOKEN|PRIVATE_KEY|API_KEY|CREDENTIAL/i;

/** Registers the values of environment variables whose names mark them as secrets, and URL passwords in FLOE_* variables. */
export function registerEnvironmentSecrets(env: NodeJS.ProcessEnv = process.env): void {
  for (const [name, value] of Object.entries(env)) {
    if (!value) continue;
    if (SECRET_ENV.test(name)) {
      registerSecret(value);
      // A PEM key appears in JSON with escaped newlines; its base64 body lines are secrets on their own.
      for (const line of value.split(/\r?\n/)) if (line.length >= 16 && !line.startsWith('-----')) registerSecret(line);
    }
    if (name.startsWith('FLOE_') || name === 'DATABASE_URL') registerUrlSecrets(value);
  }
}

const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#\s"@]*:)[^@\s"/]+@/gi;
const PEM_BLOCK = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g;

/**
 * Database errors quote the value they choke on (a row value): PostgreSQL's invalid input syntax, DuckDB's
 * and Snowflake's conversion errors, duplicate keys. The value is replaced; the rest of the message (type,
 * column, table) stays. Quotes may be JSON-escaped (a log line) or not (a terminal line).
 */
const ROW_VALUE_PATTERNS: readonly RegExp[] = [
  /(invalid input (?:syntax|value) for (?:type )?[\w ]+: )(\\?")(?:(?!\2).)*\2/g,
  /(Could not convert string )'(?:[^'\\]|\\.)*'/g,
  /((?:Numeric|Boolean|Date|Timestamp|Time) value )'(?:[^'\\]|\\.)*'/g,
  /(Duplicate key )(\\?")(?:(?!\2).)*\2/g,
  /(Key \([^)]*\)=)\((?:[^)\\]|\\.)*\)/g,
];

/** Removes credentials (layers 2 and 3 above) and, unless FLOE_LOG_ROW_VALUES=1, row values quoted in database errors. */
export function scrubLine(line: string): string {
  let out = line.replace(URL_CREDENTIALS, '$1***@').replace(PEM_BLOCK, '[redacted private key]');
  for (const secret of knownSecrets) if (out.includes(secret)) out = out.split(secret).join('***');
  if (!logRowValues()) for (const p of ROW_VALUE_PATTERNS) out = out.replace(p, (_m, prefix: string) => `${prefix}<value>`);
  return out;
}

function censor(value: unknown, path: string[]): unknown {
  const key = path[path.length - 1] ?? '';
  if (URL_KEYS.includes(key)) {
    // A URL keeps its host and database (useful) but loses the password; a name (or an object, whose
    // secret fields have their own paths and whose strings the line scrubber sees) stays as it is.
    if (typeof value !== 'string') return value;
    return /^[a-z][a-z0-9+.-]*:/i.test(value) ? redactUrl(value) : value.includes('@') ? '[redacted]' : value;
  }
  if (value === undefined || value === null) return value;
  return '[redacted]';
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** One JSON log line as a human-readable line: `12:00:01.234 INFO  message key=value ...`. */
export function prettyLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, app: _app, pid: _pid, hostname: _hostname, ...rest } = rec;
  const t = typeof time === 'string' ? time.slice(11, 23) : new Date(Number(time ?? Date.now())).toISOString().slice(11, 23);
  const lvl = (LEVEL_NAMES[Number(level)] ?? String(level)).padEnd(5);
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${lvl} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}\n`;
}

export function createLogger(
  options: { level?: string; format?: LogFormat; destination?: NodeJS.WritableStream; registerEnvironment?: boolean } = {},
): Logger {
  const level = options.level ?? process.env.FLOE_LOG_LEVEL ?? 'info';
  if (options.registerEnvironment !== false) registerEnvironmentSecrets();
  const target = (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2);
  const stream: pino.DestinationStream =
    options.format === 'pretty'
      ? {
          write: (line: string) => {
            // pino may hand over several lines at once.
            for (const l of line.split('\n')) if (l) target.write(prettyLine(l));
          },
        }
      : target;
  return pino(
    {
      level,
      base: { app: 'floe' },
      redact: { paths: REDACT_PATHS, censor },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: { streamWrite: scrubLine },
    },
    stream,
  );
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
