/**
 * Structured JSON logs (pino). Secrets are redacted by path; row values are
 * never logged. `FLOE_LOG_LEVEL` sets the level (default info).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'password',
  '*.password',
  'url',
  '*.url',
  'source',
  '*.source',
  'privateKey',
  '*.privateKey',
  'passphrase',
  '*.passphrase',
];

export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = options.level ?? process.env.FLOE_LOG_LEVEL ?? 'info';
  return pino(
    { level, base: { app: 'floe' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime },
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
