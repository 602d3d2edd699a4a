import type { PipelineProgress, StateStore, TablePlan, TableProgress } from './state-store.js';
import { staleFence, staleIncarnation, unknownTable } from './state-store.js';

interface MemoryState {
  readonly progress: Map<string, PipelineProgress>;
  readonly tables: Map<string, Map<string, TablePlan & { rangesDone: Set<number> }>>;
  /** Highest fencing token seen per pipeline. */
  readonly fences: Map<string, bigint>;
}

/** In-process state store, for tests and one-shot runs; forgets everything on exit. */
export class MemoryStateStore implements StateStore {
  readonly #state: MemoryState;
  readonly #token: bigint | undefined;

  constructor(shared?: { state: MemoryState; token: bigint }) {
    this.#state = shared?.state ?? { progress: new Map(), tables: new Map(), fences: new Map() };
    this.#token = shared?.token;
  }

  async init(): Promise<void> {}

  async getProgress(pipeline: string): Promise<PipelineProgress | undefined> {
    return this.#state.progress.get(pipeline);
  }

  async beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void> {
    this.#fence(pipeline);
    this.#state.progress.set(pipeline, { slotName, incarnation, durableLsn: startLsn, ackLsn: startLsn });
    this.#state.tables.set(pipeline, new Map());
  }

  async recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    const p = this.#check(pipeline, incarnation);
    this.#fence(pipeline);
    this.#state.progress.set(pipeline, {
      ...p,
      durableLsn: durableLsn > p.durableLsn ? durableLsn : p.durableLsn,
      ackLsn: ackLsn > p.ackLsn ? ackLsn : p.ackLsn,
    });
  }

  async getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    this.#check(pipeline, incarnation);
    const out = new Map<string, TableProgress>();
    for (const [table, t] of this.#state.tables.get(pipeline) ?? []) out.set(table, { table, ...t, rangesDone: new Set(t.rangesDone) });
    return out;
  }

  async setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    this.#check(pipeline, incarnation);
    this.#fence(pipeline);
    const tables = this.#state.tables.get(pipeline)!;
    const t = tables.get(table);
    tables.set(table, { ...plan, rangesDone: t?.rangesDone ?? new Set() });
  }

  async markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    this.#check(pipeline, incarnation);
    const t = this.#state.tables.get(pipeline)?.get(table);
    if (!t) throw unknownTable(pipeline, table);
    this.#fence(pipeline);
    t.rangesDone.add(rangeIndex);
  }

  async removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    this.#check(pipeline, incarnation);
    this.#fence(pipeline);
    this.#state.tables.get(pipeline)?.delete(table);
  }

  fenced(token: bigint): StateStore {
    return new MemoryStateStore({ state: this.#state, token });
  }

  async close(): Promise<void> {}

  #check(pipeline: string, incarnation: string): PipelineProgress {
    const p = this.#state.progress.get(pipeline);
    if (!p || p.incarnation !== incarnation) throw staleIncarnation(pipeline, p?.incarnation, incarnation);
    return p;
  }

  /** Checks and records this view's token; call right before mutating (nothing awaits in between). */
  #fence(pipeline: string): void {
    if (this.#token === undefined) return;
    const seen = this.#state.fences.get(pipeline) ?? 0n;
    if (seen > this.#token) throw staleFence(pipeline, this.#token);
    this.#state.fences.set(pipeline, this.#token);
  }
}
