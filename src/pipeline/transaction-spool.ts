/**
 * Transactions the server streams while they are still running (pgoutput protocol 2, `streaming 'on'`):
 * a transaction whose changes outgrow the walsender's `logical_decoding_work_mem` is sent in blocks as it
 * goes, instead of being spilled to the server's disk and sent at commit. Its outcome is known only at
 * Stream Commit or Stream Abort, and a sub-transaction's changes can be rolled back after they were sent.
 *
 * floe keeps those blocks in a local file per transaction (memory stays bounded whatever the size) and
 * hands them to the normal path only at Stream Commit, under the commit LSN, in the order they came:
 * positions stay `(commit LSN, ordinal)` and are the same as when the transaction arrives whole after a
 * restart, and nothing aborted ever reaches a journal. Stream Abort drops the file (a whole transaction)
 * or marks the sub-transaction, whose changes are then skipped on replay.
 *
 * The directory is the pipeline's own (one worker runs a pipeline at a time) and is emptied at start: a
 * file left by a crash belongs to a transaction the server streams again, since it was never acknowledged.
 */
import { closeSync, mkdirSync, openSync, rmSync, writeSync, createReadStream } from 'node:fs';
import { join } from 'node:path';
import { FloeError } from '../errors.js';

/** Written to disk in pieces of this size; smaller transactions never touch the disk. */
const FLUSH_BYTES = 1 << 20;
/** A Relation message: never skipped (it describes the table for the rest of the transaction). */
const RELATION = 0x52;

interface Spooled {
  /** Records not yet on disk: [u32 sub-transaction xid][u32 length][message]. */
  pending: Buffer[];
  pendingBytes: number;
  fd: number | undefined;
  readonly path: string;
  /** Sub-transactions rolled back since their changes were sent. */
  readonly aborted: Set<number>;
}

export class TransactionSpool {
  readonly #dir: string;
  readonly #txns = new Map<number, Spooled>();

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** The spool of one pipeline under `root`, emptied. */
  static open(root: string, pipeline: string): TransactionSpool {
    const dir = join(root, `floe-spool-${encodeURIComponent(pipeline)}`);
    try {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(root, { recursive: true });
      // Not recursive: fails if anything (another user's directory or link) took the name since the rm.
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      throw new FloeError('config', `cannot use ${dir} for streamed transactions: ${(err as Error).message}`, {
        hint: 'set FLOE_SPOOL_DIR to a writable local directory',
        cause: err,
      });
    }
    return new TransactionSpool(dir);
  }

  /** Whether a streamed transaction is open (not yet committed or aborted). */
  get pending(): boolean {
    return this.#txns.size > 0;
  }

  /** A Stream Start: the first block of a transaction opens its file; a later one must find it. */
  start(xid: number, firstSegment: boolean): void {
    if (this.#txns.has(xid)) return;
    if (!firstSegment) {
      throw new FloeError(
        'replication',
        `pgoutput: Stream Start continues transaction ${xid}, whose earlier blocks this stream never sent`,
        {
          hint: 'restart the pipeline; it resumes from the last acknowledged position',
        },
      );
    }
    this.#txns.set(xid, { pending: [], pendingBytes: 0, fd: undefined, path: join(this.#dir, `${xid}`), aborted: new Set() });
  }

  /** One data message of transaction `xid`, from its (sub-)transaction `subXid`. */
  append(xid: number, subXid: number, message: Buffer): void {
    const t = this.#open(xid);
    const head = Buffer.allocUnsafe(8);
    head.writeUInt32BE(subXid, 0);
    head.writeUInt32BE(message.length, 4);
    t.pending.push(head, message);
    t.pendingBytes += 8 + message.length;
    if (t.pendingBytes >= FLUSH_BYTES) this.#flush(t);
  }

  /** A Stream Abort: the whole transaction (`subXid === xid`) or one sub-transaction of it. */
  abort(xid: number, subXid: number): void {
    const t = this.#txns.get(xid);
    if (!t) return; // nothing of it was kept (a sub-transaction aborted before any block was sent)
    if (subXid !== xid) {
      t.aborted.add(subXid);
      return;
    }
    this.#discard(xid, t);
  }

  /**
   * A Stream Commit: the messages of the transaction in the order they came, without those of rolled-back
   * sub-transactions, a piece of the file at a time (one await per piece, not per message). The file is
   * removed once read (or when the reader stops early).
   */
  async *commit(xid: number): AsyncGenerator<Buffer[]> {
    const t = this.#open(xid);
    try {
      if (t.fd === undefined) {
        yield records(Buffer.concat(t.pending), t.aborted).messages;
        return;
      }
      this.#flush(t);
      closeSync(t.fd);
      t.fd = undefined;
      let rest: Buffer = Buffer.alloc(0);
      for await (const chunk of createReadStream(t.path, { highWaterMark: FLUSH_BYTES })) {
        const r = records(rest.length > 0 ? Buffer.concat([rest, chunk as Buffer]) : (chunk as Buffer), t.aborted);
        yield r.messages;
        rest = r.rest;
      }
      if (rest.length > 0) throw new FloeError('internal', `spooled transaction ${xid} ends in a partial record`);
    } finally {
      this.#discard(xid, t);
    }
  }

  /** Removes every file (the stream ended; open transactions are streamed again at the next start). */
  close(): void {
    for (const [xid, t] of this.#txns) this.#discard(xid, t);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #open(xid: number): Spooled {
    const t = this.#txns.get(xid);
    if (!t) throw new FloeError('replication', `pgoutput: a streamed message names transaction ${xid}, which no Stream Start opened`);
    return t;
  }

  #flush(t: Spooled): void {
    if (t.pendingBytes === 0) return;
    t.fd ??= openSync(t.path, 'a', 0o600);
    const data = Buffer.concat(t.pending, t.pendingBytes);
    let off = 0;
    while (off < data.length) off += writeSync(t.fd, data, off);
    t.pending = [];
    t.pendingBytes = 0;
  }

  #discard(xid: number, t: Spooled): void {
    this.#txns.delete(xid);
    if (t.fd !== undefined) closeSync(t.fd);
    t.fd = undefined;
    rmSync(t.path, { force: true });
  }
}

/** The complete records of `buf` (messages of sub-transactions not rolled back), and the partial rest. */
function records(buf: Buffer, aborted: ReadonlySet<number>): { messages: Buffer[]; rest: Buffer } {
  const messages: Buffer[] = [];
  let pos = 0;
  while (pos + 8 <= buf.length) {
    const subXid = buf.readUInt32BE(pos);
    const len = buf.readUInt32BE(pos + 4);
    if (pos + 8 + len > buf.length) break;
    const message = buf.subarray(pos + 8, pos + 8 + len);
    if (!aborted.has(subXid) || message[0] === RELATION) messages.push(message);
    pos += 8 + len;
  }
  return { messages, rest: buf.subarray(pos) };
}
