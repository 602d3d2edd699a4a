/**
 * Binary mode per table: the decoder of every column of a relation, built once when its Relation
 * message (or the catalog read at start) describes it, so the tuple decoder only indexes an array.
 * A table with one column floe cannot decode from binary is refused as a whole: the stream then runs
 * in text mode (pipeline.ts), since pgoutput's binary option applies to every column of every table.
 */
import type { TableSchema } from '../model.js';
import type { PgTypeInfo } from '../schema/type-map.js';
import { binaryDecoderFor, type BinaryDecoder } from './binary-values.js';

export interface BinaryRefusal {
  readonly table: string;
  readonly column: string;
  /** The column's type as floe names it (domains resolved), e.g. 'money', 'floe_pair'. */
  readonly type: string;
  readonly reason: string;
}

export type TableDecoders =
  { readonly ok: true; readonly decoders: BinaryDecoder[] } | { readonly ok: false; readonly refusal: BinaryRefusal };

export function tableDecoders(
  table: TableSchema,
  options: { readonly serverMajor: number; readonly lookup: (oid: number) => PgTypeInfo | undefined },
): TableDecoders {
  const decoders: BinaryDecoder[] = [];
  for (const column of table.columns) {
    const support = binaryDecoderFor(column.typeOid, options);
    if (!support.ok) {
      const refusal = { table: `${table.schema}.${table.name}`, column: column.name, type: column.type.pgType, reason: support.reason };
      return { ok: false, refusal };
    }
    decoders.push(support.decode);
  }
  return { ok: true, decoders };
}
