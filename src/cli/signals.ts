/**
 * OS signals are handled here only. The first SIGINT/SIGTERM asks for a
 * graceful stop (flush, acknowledge what is durable, exit 0); a second one
 * exits at once: nothing unacknowledged is lost, it is replayed next time.
 *
 * The first signal is also a deadline: a stop that does not finish within the
 * grace period (a destination setup being retried, a file system that hangs)
 * ends the process anyway, for the same reason a second signal may. The default
 * stays below Kubernetes' 30 s terminationGracePeriodSeconds.
 */
export const SHUTDOWN_GRACE_ENV = 'FLOE_SHUTDOWN_GRACE_MS';
const DEFAULT_GRACE_MS = 25_000;

export interface ShutdownOptions {
  /** How long the graceful stop may take. (Default: FLOE_SHUTDOWN_GRACE_MS, else 25 s) */
  readonly graceMs?: number;
  /** For tests. (Default: process.exit) */
  readonly exit?: (code: number) => void;
}

export function onShutdownSignal(stop: () => void, options: ShutdownOptions = {}): () => void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const graceMs = options.graceMs ?? graceFromEnv();
  let count = 0;
  let deadline: NodeJS.Timeout | undefined;
  const handler = (sig: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      process.stderr.write(`floe: ${sig} received, draining (send again to exit immediately)\n`);
      deadline = setTimeout(() => {
        process.stderr.write(
          `floe: not stopped ${Math.round(graceMs / 1000)} s after ${sig}; exiting (unacknowledged changes are replayed at the next start)\n`,
        );
        exit(1);
      }, graceMs);
      // The deadline never keeps an otherwise finished process alive.
      deadline.unref();
      stop();
    } else {
      exit(130);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  // The deadline outlives the handlers: cleanup after the stop (closing a destination) is bounded too.
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

function graceFromEnv(): number {
  const text = process.env[SHUTDOWN_GRACE_ENV];
  const n = text === undefined ? NaN : Number(text);
  return Number.isInteger(n) && n >= 100 && n <= 3_600_000 ? n : DEFAULT_GRACE_MS;
}
