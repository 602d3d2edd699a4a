/**
 * A StateStore that reports the latency of every call (floe_state_store_operation_seconds). Progress
 * writes sit on the acknowledgement path, so a slow store shows up here before it shows up as lag.
 */
import type { PipelineProgress, StateStore, TablePlan, TableProgress } from './state-store.js';

export interface StoreTimer {
  observeStoreOperation(kind: string, op: string, seconds: number): void;
}

export class TimedStateStore implements StateStore {
  readonly #inner: StateStore;
  readonly #kind: string;
  readonly #timer: StoreTimer;

  constructor(inner: StateStore, kind: string, timer: StoreTimer) {
    this.#inner = inner;
    this.#kind = kind;
    this.#timer = timer;
  }

  async #time<T>(op: string, call: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await call();
    } finally {
      this.#timer.observeStoreOperation(this.#kind, op, (performance.now() - started) / 1000);
    }
  }

  init(): Promise<void> {
    return this.#time('init', () => this.#inner.init());
  }
  getProgress(pipeline: string): Promise<PipelineProgress | undefined> {
    return this.#time('getProgress', () => this.#inner.getProgress(pipeline));
  }
  beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void> {
    return this.#time('beginIncarnation', () => this.#inner.beginIncarnation(pipeline, slotName, incarnation, startLsn));
  }
  recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    return this.#time('recordDurable', () => this.#inner.recordDurable(pipeline, incarnation, durableLsn, ackLsn));
  }
  getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    return this.#time('getTables', () => this.#inner.getTables(pipeline, incarnation));
  }
  setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    return this.#time('setTable', () => this.#inner.setTable(pipeline, incarnation, table, plan));
  }
  markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    return this.#time('markRangeDone', () => this.#inner.markRangeDone(pipeline, incarnation, table, rangeIndex));
  }
  removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    return this.#time('removeTable', () => this.#inner.removeTable(pipeline, incarnation, table));
  }
  fenced(token: bigint): StateStore {
    return new TimedStateStore(this.#inner.fenced(token), this.#kind, this.#timer);
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}
