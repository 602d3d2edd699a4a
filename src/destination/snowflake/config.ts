/**
 * The Snowflake destination URL:
 *
 *   snowflake://USER@ORG-ACCOUNT/DATABASE/SCHEMA?warehouse=..&role=..&private_key_file=..
 *     [&private_key_passphrase=..][&landing_schema=..][&merge_interval=30s][&merge_rows=..]
 *     [&journal_retention=7d][&delete_mode=hard|soft][&channels_per_table=2][&base_url=http://..]
 *
 * The passphrase may instead come from FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE. Messages name the
 * parameter and never echo a secret (the passphrase, the key).
 */
import { readFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { FloeError } from '../../errors.js';
import type { DeleteMode } from '../destination.js';
import { loadPrivateKey } from './auth.js';

export interface SnowflakeConfig {
  /** Account identifier as used in JWTs and host names, upper case (ORG-ACCOUNT or a locator). */
  readonly account: string;
  readonly user: string;
  readonly database: string;
  readonly schema: string;
  readonly landingSchema: string;
  readonly warehouse: string | undefined;
  readonly role: string | undefined;
  /** The private key, read once and held only in memory (never written, logged or shown). */
  readonly privateKey: KeyObject;
  readonly mergeIntervalMs: number;
  /** How long the circuit breaker stays open before it lets one probe through. (Default: 30 s) */
  readonly breakerHalfOpenMs?: number;
  /** Merge a table before the interval once this many journal rows wait (undefined: time only). */
  readonly mergeRows: number | undefined;
  /** Merged journal rows older than this are deleted (undefined: kept). */
  readonly journalRetentionMs: number | undefined;
  /** From the URL; undefined leaves it to --delete-mode. */
  readonly deleteMode: DeleteMode | undefined;
  readonly channelsPerTable: number;
  /** Overrides the account URL and the ingest URL (emulator, private link). */
  readonly baseUrl: string | undefined;
  /** https://<account>.snowflakecomputing.com unless base_url is set. */
  readonly accountUrl: string;
}

const PARAMS = [
  'warehouse',
  'role',
  'private_key_file',
  'private_key_passphrase',
  'landing_schema',
  'merge_interval',
  'breaker_half_open',
  'merge_rows',
  'journal_retention',
  'delete_mode',
  'channels_per_table',
  'base_url',
] as const;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `30s`, `5m`, `2h`, `7d` → milliseconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!]! : undefined;
}

const identifier = /^[A-Za-z_][A-Za-z0-9_$]*$/;
const duration = (name: string) =>
  z
    .string()
    .transform((s, ctx) => {
      const ms = parseDuration(s);
      if (ms === undefined) ctx.addIssue({ code: 'custom', message: `${name} must be a duration such as 30s, 5m or 7d` });
      return ms ?? 0;
    })
    .optional();

const ParamsSchema = z.object({
  warehouse: z.string().regex(identifier, 'warehouse must be a Snowflake identifier').optional(),
  role: z.string().regex(identifier, 'role must be a Snowflake identifier').optional(),
  private_key_file: z.string().min(1, 'private_key_file is empty').optional(),
  private_key_passphrase: z.string().optional(),
  landing_schema: z.string().regex(identifier, 'landing_schema must be a Snowflake identifier').optional(),
  merge_interval: duration('merge_interval'),
  breaker_half_open: duration('breaker_half_open'),
  merge_rows: z.coerce.number().int('merge_rows must be a whole number').positive('merge_rows must be positive').optional(),
  journal_retention: duration('journal_retention'),
  delete_mode: z.enum(['hard', 'soft'], { message: 'delete_mode must be hard or soft' }).optional(),
  channels_per_table: z.coerce
    .number()
    .int('channels_per_table must be a whole number')
    .min(1, 'channels_per_table must be between 1 and 16')
    .max(16, 'channels_per_table must be between 1 and 16')
    .optional(),
  base_url: z
    .string()
    .regex(/^https?:\/\/[^/?#]+\/?$/, 'base_url must be http(s)://host[:port]')
    // The endpoint receives the key-pair JWT: in plain http only where it never leaves the machine.
    .refine((s) => !s.startsWith('http://') || isLoopback(s), {
      message: 'base_url may use plain http only to a loopback address (127.0.0.1, ::1, localhost); use https',
    })
    .optional(),
});

function isLoopback(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return false;
  }
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const HINT = 'snowflake://USER@ORG-ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE&private_key_file=./rsa_key.p8';

/**
 * Checks a destination URL's structure and parameters without reading the key: what the control plane
 * validates before it stores the URL (the key comes later, from a secret reference or the worker's file).
 */
export function checkSnowflakeUrl(url: string): void {
  urlParts(url);
}

function urlParts(url: string) {
  // Not `new URL()`: its errors echo the whole input, passphrase included.
  const m = /^snowflake:\/\/([^@/?#]+)@([^/?#]+)\/([^/?#]+)\/([^/?#]+)\/?(?:\?(.*))?$/.exec(url);
  if (!m) {
    throw new FloeError('config', 'the Snowflake destination URL must name user, account, database and schema', { hint: HINT });
  }
  const [, rawUser, rawAccount, rawDatabase, rawSchema, query] = m;
  const decode = (s: string, what: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new FloeError('config', `the ${what} in the Snowflake destination URL is not valid percent-encoding`, { hint: HINT });
    }
  };
  const user = decode(rawUser!, 'user');
  const accountText = decode(rawAccount!, 'account');
  const database = decode(rawDatabase!, 'database');
  const schema = decode(rawSchema!, 'schema');
  if (!/^[A-Za-z0-9_.-]+$/.test(accountText)) {
    throw new FloeError('config', 'the Snowflake account must look like ORG-ACCOUNT or a locator', { hint: HINT });
  }
  for (const [what, v] of [
    ['user', user],
    ['database', database],
    ['schema', schema],
  ] as const) {
    if (!/^[A-Za-z_][A-Za-z0-9_$.-]*$/.test(v)) {
      throw new FloeError('config', `the Snowflake ${what} "${v}" is not a valid identifier`, { hint: HINT });
    }
  }
  const raw: Record<string, string> = {};
  const params = new URLSearchParams(query ?? '');
  for (const [key, value] of params) {
    if (!(PARAMS as readonly string[]).includes(key)) {
      throw new FloeError('config', `unknown Snowflake destination parameter "${key}"`, { hint: `known parameters: ${PARAMS.join(', ')}` });
    }
    if (key in raw) throw new FloeError('config', `Snowflake destination parameter "${key}" is given twice`);
    raw[key] = value;
  }
  const parsed = ParamsSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = String(issue.path[0] ?? '');
    const message = issue.message.startsWith(param) ? issue.message : `${param}: ${issue.message}`;
    throw new FloeError('config', `invalid Snowflake destination URL: ${message}`, { hint: HINT });
  }
  return { user, accountText, database, schema, p: parsed.data };
}

/**
 * Parses and validates a destination URL and reads the private key: from `private_key_file`, or from
 * `secrets.private_key` (the control plane's resolved reference, the PEM itself). The passphrase comes from
 * the URL, `secrets.private_key_passphrase` or FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE in `env`.
 */
export function parseSnowflakeUrl(
  url: string,
  env: NodeJS.ProcessEnv = process.env,
  secrets: Readonly<Record<string, string>> = {},
): SnowflakeConfig {
  const { user, accountText, database, schema, p } = urlParts(url);
  let privateKeyPem: string;
  let keySource: string;
  if (secrets.private_key !== undefined && p.private_key_file === undefined) {
    privateKeyPem = secrets.private_key;
    keySource = 'the private_key secret';
  } else if (p.private_key_file === undefined) {
    throw new FloeError('config', 'invalid Snowflake destination URL: private_key_file is required', { hint: HINT });
  } else {
    try {
      privateKeyPem = readFileSync(p.private_key_file, 'utf8');
    } catch (err) {
      throw new FloeError(
        'config',
        `cannot read private_key_file ${p.private_key_file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        {
          hint: 'give the path of the PKCS#8 PEM private key registered for the Snowflake user',
        },
      );
    }
    keySource = `private_key_file ${p.private_key_file}`;
  }
  const passphrase = p.private_key_passphrase ?? secrets.private_key_passphrase ?? env.FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE;
  const privateKey = loadPrivateKey(privateKeyPem, passphrase || undefined, keySource);
  // JWT claims use the account without region/cloud and with '.' → '-' (snowflake-api.md §2.3).
  const account = accountText.split('.')[0]!.toUpperCase();
  const baseUrl = p.base_url?.replace(/\/$/, '');
  const up = (s: string) => (s === s.toLowerCase() ? s.toUpperCase() : s);
  return {
    account,
    user: user.toUpperCase(),
    database: up(database),
    schema: up(schema),
    landingSchema: p.landing_schema ? up(p.landing_schema) : `${up(schema)}_FLOE_LANDING`,
    warehouse: p.warehouse ? up(p.warehouse) : undefined,
    role: p.role ? up(p.role) : undefined,
    privateKey,
    mergeIntervalMs: p.merge_interval ?? 30_000,
    breakerHalfOpenMs: p.breaker_half_open,
    mergeRows: p.merge_rows,
    journalRetentionMs: p.journal_retention,
    deleteMode: p.delete_mode,
    channelsPerTable: p.channels_per_table ?? 2,
    baseUrl,
    accountUrl: baseUrl ?? `https://${accountText.toLowerCase().replaceAll('_', '-')}.snowflakecomputing.com`,
  };
}
