/**
 * The one error type of floe. Every failure a user can see carries:
 * - `kind`: what went wrong, grouped so callers can branch on it;
 * - `retry`: whether the runtime may retry on its own ('timed'), needs an
 *   operator ('manual'), or must never retry ('none');
 * - `hint`: what the operator should do, in one sentence.
 * Messages never contain secrets or row values.
 */
import { tlsHint } from './postgres/tls.js';

export type ErrorKind =
  | 'config' // bad flag, URL or option
  | 'connection' // network unreachable, refused, reset
  | 'auth' // wrong password, missing privilege
  | 'source-setup' // wal_level, publication, replica identity, slot problems
  | 'schema' // unsupported type or schema change floe cannot follow
  | 'replication' // protocol violation, slot invalidated
  | 'destination' // destination rejected or failed a write
  | 'state' // state store failure or inconsistency
  | 'internal';

export type RetryDirective = 'timed' | 'manual' | 'none';

export interface FloeErrorOptions {
  readonly hint?: string;
  readonly retry?: RetryDirective;
  readonly cause?: unknown;
}

const defaultRetry: Record<ErrorKind, RetryDirective> = {
  config: 'none',
  connection: 'timed',
  auth: 'manual',
  'source-setup': 'manual',
  schema: 'manual',
  replication: 'timed',
  destination: 'timed',
  state: 'timed',
  internal: 'none',
};

export class FloeError extends Error {
  readonly kind: ErrorKind;
  readonly retry: RetryDirective;
  readonly hint: string | undefined;

  constructor(kind: ErrorKind, message: string, options: FloeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FloeError';
    this.kind = kind;
    this.retry = options.retry ?? defaultRetry[kind];
    this.hint = options.hint;
  }

  /** One line for a terminal: message plus hint. */
  oneLine(): string {
    return this.hint ? `${this.message} (${this.hint})` : this.message;
  }
}

/** SQLSTATE classes and node network codes mapped to floe error kinds. */
export function coerceError(err: unknown, context?: string): FloeError {
  if (err instanceof FloeError) return err;
  const e = err as { code?: string; message?: string } | undefined;
  const code = e?.code ?? '';
  const base = e?.message ?? String(err);
  const message = context ? `${context}: ${base}` : base;
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN', 'EPIPE'].includes(code)) {
    return new FloeError('connection', message, { cause: err, hint: 'check that the host is reachable and the port is right' });
  }
  const tls = tlsHint(code, base);
  if (tls !== undefined) {
    // A certificate problem is configuration: retrying the same handshake gives the same answer.
    return new FloeError('connection', message, { cause: err, retry: 'manual', hint: tls });
  }
  if (code === 'ERR_INVALID_URL') {
    // Node's message is "Invalid URL" and its `input` holds the URL, password included: never echo it.
    return new FloeError('config', context ? `${context}: a connection URL is not a valid URL` : 'a connection URL is not a valid URL', {
      cause: err,
      hint: 'percent-encode # ? / @ : in the user name or password (%23 %3F %2F %40 %3A), or leave the password out of the URL and use PGPASSWORD or a password file',
    });
  }
  if (code === '28P01' || code === '28000') {
    return new FloeError('auth', message, { cause: err, hint: 'check the user name and password in the connection URL' });
  }
  if (code === '42501') {
    return new FloeError('auth', message, { cause: err, hint: 'grant the missing privilege to the replication user' });
  }
  if (code === '3D000') {
    return new FloeError('config', message, { cause: err, hint: 'check the database name in the connection URL' });
  }
  // 55000 is broad (object not in prerequisite state); only its "not accepting connections" form is
  // an outage that passes (ALTER DATABASE ... ALLOW_CONNECTIONS false during maintenance).
  const refusingConnections = code === '55000' && /not currently accepting connections/i.test(base);
  if (code.startsWith('08') || code === '57P01' || code === '57P03' || refusingConnections) {
    return new FloeError('connection', message, { cause: err });
  }
  // node-postgres reports a dropped connection without a code.
  if (!code && /Connection terminated|not queryable|connection error|socket hang up/i.test(base)) {
    return new FloeError('connection', message, { cause: err });
  }
  return new FloeError('internal', message, { cause: err });
}

/** User text inside an error message: bounded and without control characters. */
export function printable(text: string): string {
  const clean = text.replace(/[\x00-\x1f\x7f]/g, '?');
  return clean.length > 80 ? `${clean.slice(0, 77)}...` : clean;
}
