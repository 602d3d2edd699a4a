import type { PipelineProgress, StateStore, TablePlan, TableProgress } from './state-store.js';
import { staleIncarnation } from './state-store.js';

/** In-process state store, for tests and one-shot runs; forgets everything on exit. */
export class MemoryStateStore implements StateStore {
  readonly #progress = new Map<string, PipelineProgress>();
  readonly #tables = new Map<string, Map<string, TablePlan & { rangesDone: Set<number> }>>();

  async init(): Promise<void> {}

  async getProgress(pipeline: string): Promise<PipelineProgress | undefined> {
    return this.#progress.get(pipeline);
  }

  async beginIncarnation(pipeline: string, slotName: string, incarnation: string, startLsn: bigint): Promise<void> {
    this.#progress.set(pipeline, { slotName, incarnation, durableLsn: startLsn, ackLsn: startLsn });
    this.#tables.set(pipeline, new Map());
  }

  async recordDurable(pipeline: string, incarnation: string, durableLsn: bigint, ackLsn: bigint): Promise<void> {
    const p = this.#progress.get(pipeline);
    if (!p || p.incarnation !== incarnation) throw staleIncarnation(pipeline, p?.incarnation, incarnation);
    this.#progress.set(pipeline, {
      ...p,
      durableLsn: durableLsn > p.durableLsn ? durableLsn : p.durableLsn,
      ackLsn: ackLsn > p.ackLsn ? ackLsn : p.ackLsn,
    });
  }

  async getTables(pipeline: string, incarnation: string): Promise<Map<string, TableProgress>> {
    this.#check(pipeline, incarnation);
    const out = new Map<string, TableProgress>();
    for (const [table, t] of this.#tables.get(pipeline) ?? []) out.set(table, { table, ...t, rangesDone: new Set(t.rangesDone) });
    return out;
  }

  async setTable(pipeline: string, incarnation: string, table: string, plan: TablePlan): Promise<void> {
    this.#check(pipeline, incarnation);
    const tables = this.#tables.get(pipeline)!;
    const t = tables.get(table);
    tables.set(table, { ...plan, rangesDone: t?.rangesDone ?? new Set() });
  }

  async markRangeDone(pipeline: string, incarnation: string, table: string, rangeIndex: number): Promise<void> {
    this.#check(pipeline, incarnation);
    this.#tables.get(pipeline)?.get(table)?.rangesDone.add(rangeIndex);
  }

  async removeTable(pipeline: string, incarnation: string, table: string): Promise<void> {
    this.#check(pipeline, incarnation);
    this.#tables.get(pipeline)?.delete(table);
  }

  async close(): Promise<void> {}

  #check(pipeline: string, incarnation: string): void {
    const p = this.#progress.get(pipeline);
    if (!p || p.incarnation !== incarnation) throw staleIncarnation(pipeline, p?.incarnation, incarnation);
  }
}
