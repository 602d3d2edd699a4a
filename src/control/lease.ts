/**
 * One owner per pipeline (design.md invariant 6): a worker streams a pipeline only while it holds the
 * pipeline's lease. Every lease carries a fencing token, strictly increasing per pipeline across all
 * holders, which the state store checks on every progress write (StateStore.fenced).
 */
export interface Lease {
  readonly pipeline: string;
  /** Strictly increasing per pipeline across every holder, ever. */
  readonly token: bigint;
  /** Aborted when the lease is lost (renewal failed, expired, or taken over). */
  readonly lost: AbortSignal;
  /** Gives the lease up (after a graceful drain). Idempotent. */
  release(): Promise<void>;
}

export interface LeaseProvider {
  /**
   * Takes the pipeline's lease for `worker` if no one holds it; undefined when another worker does.
   * The provider keeps the lease alive in the background until released or lost.
   */
  tryAcquire(pipeline: string, worker: string): Promise<Lease | undefined>;
  /** Current holder of each leased pipeline (for `floe status`). */
  holders(): Promise<Map<string, string>>;
  close(): Promise<void>;
}
