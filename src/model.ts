/**
 * floe vocabulary (see docs/architecture.md and design.md §1).
 *
 * - LSN: a WAL position, a 64-bit unsigned integer; kept as `bigint` here and
 *   shown as `X/Y` (see postgres/lsn.ts).
 * - commit LSN: for streamed changes, the LSN of the transaction's commit
 *   record as announced by pgoutput's Begin message (`final_lsn`); it is known
 *   before the first change of the transaction arrives, so a transaction larger
 *   than memory can be written out in pieces. The standby status update
 *   acknowledges the commit's *end* LSN (Commit message `end_lsn`).
 * - ordinal: the position of a change inside its transaction (0, 1, 2, ...);
 *   snapshot rows take ordinal -1.
 * - position: `(commit LSN, ordinal)`, a total order over a pipeline's changes.
 */

import type { MappedType } from './schema/type-map.js';
import type { TupleBytes } from './postgres/pgoutput.js';

export interface Position {
  readonly lsn: bigint;
  readonly ordinal: number;
}

export const comparePositions = (a: Position, b: Position): number => (a.lsn < b.lsn ? -1 : a.lsn > b.lsn ? 1 : a.ordinal - b.ordinal);

/** A column as floe knows it: its source type and whether it belongs to the key. */
export interface ColumnSchema {
  readonly name: string;
  /** pg_type oid as sent by pgoutput (for domains: the domain's oid). */
  readonly typeOid: number;
  /** atttypmod as sent by pgoutput (-1 when none). */
  readonly typeMod: number;
  /** Destination types and conversions, from the one type table (schema/type-map.ts). */
  readonly type: MappedType;
  /** Part of the merge key (primary key, or replica identity index). */
  readonly isKey: boolean;
}

export interface TableSchema {
  /** pg_class oid (the pgoutput relation id). */
  readonly relationId: number;
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly ColumnSchema[];
  /** 'd' default (primary key), 'f' full, 'i' index, 'n' nothing. */
  readonly replicaIdentity: 'd' | 'f' | 'i' | 'n';
  /** True when the table has a usable key; false means append-only history. */
  readonly hasKey: boolean;
  /**
   * The publication's row filter (PostgreSQL 15+), an SQL condition over the table's columns, combined
   * over several publications; undefined when every row is published. Only the catalog read sets it
   * (the snapshot needs it; the server applies it to the stream).
   */
  readonly rowFilter?: string;
}

export const qualifiedName = (t: { schema: string; name: string }): string => `${t.schema}.${t.name}`;

/**
 * 'r' snapshot read, 'i' insert, 'u' update, 'd' delete, 't' truncate.
 * The same letters are used in every destination's journal and merge.
 */
export type ChangeOp = 'r' | 'i' | 'u' | 'd' | 't';

/**
 * One cell of a row image in PostgreSQL text form.
 * `null` is SQL NULL; `undefined` is "unchanged TOAST, value not sent".
 */
export type Cell = string | null | undefined;

export interface Change {
  readonly table: TableSchema;
  readonly op: ChangeOp;
  readonly position: Position;
  /** Commit timestamp in microseconds since the Unix epoch (0 for snapshot rows). */
  readonly commitTimeMicros: bigint;
  /**
   * New row image for r/i/u; for d the old key (or full old row with REPLICA
   * IDENTITY FULL); empty for t. Indexed like `table.columns`.
   */
  readonly cells: readonly Cell[];
  /**
   * The row image as the bytes of its Insert message (text mode), for destinations that copy values
   * as text; `cells` holds the same values.
   */
  readonly tuple?: TupleBytes;
}

/** A streamed insert: `cells` is decoded from the message's bytes on first use, not before. */
export class TupleChange implements Change {
  #cells: readonly Cell[] | undefined;

  constructor(
    readonly table: TableSchema,
    readonly op: ChangeOp,
    readonly position: Position,
    readonly commitTimeMicros: bigint,
    readonly tuple: TupleBytes,
  ) {}

  get cells(): readonly Cell[] {
    return (this.#cells ??= this.tuple.cells());
  }
}
