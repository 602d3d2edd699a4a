/**
 * Commands to a running pipeline from the control plane. The pipeline reads them at start and reacts to
 * changes while streaming, without a restart: other tables keep streaming.
 */
export type TableState = 'snapshotting' | 'streaming' | 'skipped' | 'removed';

export class PipelineControl extends EventTarget {
  #skipped = new Set<string>();
  #resync = new Set<string>();

  /** Qualified names ("schema.table") that must not be replicated. */
  get skipped(): ReadonlySet<string> {
    return this.#skipped;
  }

  /** Replaces the skipped set; a table leaving it is re-snapshotted. */
  setSkipped(tables: Iterable<string>): void {
    this.#skipped = new Set(tables);
    this.dispatchEvent(new Event('changed'));
  }

  /** Asks for a fresh snapshot of one table while the others keep streaming. */
  requestResync(table: string): void {
    this.#resync.add(table);
    this.dispatchEvent(new Event('changed'));
  }

  /** Takes the pending resync requests (the pipeline calls this). */
  takeResyncRequests(): string[] {
    const r = [...this.#resync];
    this.#resync.clear();
    return r;
  }

  /** The publication's table list may have changed (a NOTIFY or an operator): re-read it now. */
  refreshPublication(): void {
    this.dispatchEvent(new Event('refresh'));
  }
}
