/**
 * A destination that does all the encoding a real one does and stores
 * nothing: every change and snapshot row becomes one NDJSON line (ndjson.ts,
 * the Snowpipe Streaming row format) in a reused buffer, which is handed to
 * `onChunk` (if given) and then dropped. It measures the pipeline without a
 * warehouse (`npm run bench`) and is the encoding half of the Snowflake
 * destination.
 *
 * Contract as a Destination: a batch is "durable" once encoded; replays at or
 * below the durable position of the open incarnation are skipped (so the
 * counters never count a change twice); a snapshot range is encoded like the
 * changes, with op 'r', position (snapshot LSN, -1) and no commit time; merge
 * does nothing.
 */
import type { Change, Position, TableSchema } from '../../model.js';
import { comparePositions } from '../../model.js';
import type { Destination, DestinationCheckpoint, MergeResult, SnapshotChunk, SnapshotRangeRef } from '../destination.js';
import { NdjsonEncoder } from './ndjson.js';

export interface EncodingSinkOptions {
  /** Encoded bytes per hand-off, i.e. per request a real destination would send. (Default: 4 MiB) */
  readonly chunkBytes?: number;
  /** Receives each encoded chunk; the buffer is reused afterwards, so copy what you keep. */
  readonly onChunk?: (ndjson: Buffer) => void;
}

export class EncodingSink implements Destination {
  readonly #chunkBytes: number;
  readonly #onChunk: ((ndjson: Buffer) => void) | undefined;
  /** Idle encoders: snapshot ranges run concurrently and each range is its own unit, like a transaction. */
  readonly #free: NdjsonEncoder[] = [];
  #incarnation = '';
  #durable: Position | undefined;
  /** Durable position per incarnation, kept across close/open like a real destination's watermark table. */
  readonly #watermarks = new Map<string, Position>();
  #rows = 0;
  #bytes = 0;
  #chunks = 0;

  constructor(options: EncodingSinkOptions = {}) {
    this.#chunkBytes = options.chunkBytes ?? 4 << 20;
    this.#onChunk = options.onChunk;
  }

  /** Rows encoded (changes and snapshot rows). */
  get rows(): number {
    return this.#rows;
  }

  /** NDJSON bytes encoded. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Chunks handed off. */
  get chunks(): number {
    return this.#chunks;
  }

  async open(pipeline: string, incarnation: string): Promise<DestinationCheckpoint> {
    this.#incarnation = `${pipeline}\0${incarnation}`;
    this.#durable = this.#watermarks.get(this.#incarnation);
    return { durable: this.#durable };
  }

  async prepare(_table: TableSchema): Promise<void> {}

  async writeSnapshotRange(range: SnapshotRangeRef, rows: AsyncIterable<SnapshotChunk>): Promise<number> {
    const enc = this.#take();
    const position: Position = { lsn: range.snapshotLsn, ordinal: -1 };
    let count = 0;
    try {
      for await (const chunk of rows) {
        for (let i = 0; i < chunk.length; i++) {
          enc.writeSnapshotRow(range.table, position, chunk, i);
          if (enc.length >= this.#chunkBytes) this.#handOff(enc);
        }
        count += chunk.length;
      }
      this.#handOff(enc);
    } finally {
      enc.reset();
      this.#free.push(enc);
    }
    this.#rows += count;
    return count;
  }

  async completeSnapshot(_table: TableSchema): Promise<void> {}

  async resetTable(_table: TableSchema, _snapshotLsn: bigint): Promise<void> {}

  async writeChanges(changes: readonly Change[]): Promise<void> {
    const wm = this.#durable;
    let first = 0;
    if (wm) while (first < changes.length && comparePositions(changes[first]!.position, wm) <= 0) first++;
    if (first === changes.length) return;
    const enc = this.#take();
    try {
      for (let i = first; i < changes.length; i++) {
        const ch = changes[i]!;
        enc.writeChange(ch);
        if (enc.length >= this.#chunkBytes) this.#handOff(enc);
      }
      this.#handOff(enc);
    } finally {
      enc.reset();
      this.#free.push(enc);
    }
    this.#rows += changes.length - first;
    this.#durable = changes[changes.length - 1]!.position;
    this.#watermarks.set(this.#incarnation, this.#durable);
  }

  async durableThrough(): Promise<Position | undefined> {
    return this.#durable;
  }

  async merge(_signal?: AbortSignal): Promise<MergeResult> {
    return { tables: 0, journalRows: 0 };
  }

  async close(): Promise<void> {
    this.#free.length = 0;
  }

  #take(): NdjsonEncoder {
    // A chunk may overshoot chunkBytes by one row; start a bit larger to avoid regrowing.
    return this.#free.pop() ?? new NdjsonEncoder(this.#chunkBytes + (this.#chunkBytes >> 2));
  }

  #handOff(enc: NdjsonEncoder): void {
    if (enc.length === 0) return;
    this.#bytes += enc.length;
    this.#chunks++;
    this.#onChunk?.(enc.view());
    enc.reset();
  }
}
