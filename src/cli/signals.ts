/**
 * OS signals are handled here only. The first SIGINT/SIGTERM asks for a
 * graceful stop (flush, acknowledge what is durable, exit 0); a second one
 * exits at once: nothing unacknowledged is lost, it is replayed next time.
 */
export function onShutdownSignal(stop: () => void): () => void {
  let count = 0;
  const handler = (sig: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      process.stderr.write(`floe: ${sig} received, draining (send again to exit immediately)\n`);
      stop();
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
