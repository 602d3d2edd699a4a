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
    const width = fixedWidth(column.typeOid, options.lookup);
    decoders.push(width === undefined ? support.decode : exactly(width, support.decode));
  }
  return { ok: true, decoders };
}

/**
 * Send-format sizes of fixed-width types. A value of another size means the decoder does not belong to
 * the column (it would read its neighbour's bytes as its own): an error, never a garbled value.
 */
const FIXED_WIDTH: ReadonlyMap<number, number> = new Map([
  [16, 1], // bool
  [18, 1], // "char"
  [20, 8], // int8
  [21, 2], // int2
  [23, 4], // int4
  [26, 4], // oid
  [27, 6], // tid
  [28, 4], // xid
  [29, 4], // cid
  [600, 16], // point
  [601, 32], // lseg
  [603, 32], // box
  [628, 24], // line
  [700, 4], // float4
  [701, 8], // float8
  [718, 24], // circle
  [774, 8], // macaddr8
  [829, 6], // macaddr
  [1082, 4], // date
  [1083, 8], // time
  [1114, 8], // timestamp
  [1184, 8], // timestamptz
  [1186, 16], // interval
  [1266, 12], // timetz
  [2950, 16], // uuid
  [3220, 8], // pg_lsn
  [5069, 8], // xid8
]);

function fixedWidth(oid: number, lookup: (oid: number) => PgTypeInfo | undefined): number | undefined {
  // A domain is sent as its base type.
  for (let depth = 0; depth < 32; depth++) {
    const width = FIXED_WIDTH.get(oid);
    if (width !== undefined) return width;
    const base = lookup(oid)?.baseOid ?? 0;
    if (base === 0) return undefined;
    oid = base;
  }
  return undefined;
}

/** One wrapper per column, built with the relation's decoders (never per cell). */
function exactly(width: number, decode: BinaryDecoder): BinaryDecoder {
  return (buf, start, end) => {
    if (end - start !== width) throw new Error(`a binary value of ${end - start} bytes where the column's type has ${width}`);
    return decode(buf, start, end);
  };
}
