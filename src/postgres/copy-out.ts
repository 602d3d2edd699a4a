/**
 * `COPY ... TO STDOUT` as a readable stream of the rows' bytes, for `client.query(new CopyOut(sql))`.
 *
 * PostgreSQL sends each row as its own CopyData message (a 5-byte header, then the row). pg-copy-streams
 * slices every message out of the socket's chunks and joins the slices again before pushing them: two
 * allocations per row, about a fifth of floe's CPU in a snapshot profile. This reader moves the rows of a
 * socket chunk together inside that chunk, over the headers between them, and pushes one view of it.
 *
 * Protocol (PostgreSQL docs, "COPY Operations"): after CopyOutResponse come CopyData messages, possibly
 * interleaved with NoticeResponse, ParameterStatus and NotificationResponse, then CopyDone; an
 * ErrorResponse may come instead at any point. While copying, this stream owns the connection's socket;
 * from CopyDone or ErrorResponse on, it hands the unread bytes back to pg's own parser, which reads
 * CommandComplete (handleCommandComplete), the error (handleError) and ReadyForQuery as for any query.
 */
import { Readable, type Duplex } from 'node:stream';
import type pg from 'pg';

const COPY_DATA = 0x64;
const COPY_DONE = 0x63;
const ERROR_RESPONSE = 0x45;
const HEADER = 5;

export class CopyOut extends Readable implements pg.Submittable {
  /** Rows PostgreSQL reported copying (from CommandComplete), once the stream has ended. */
  rowCount = 0;
  #connection: pg.Connection | undefined;
  #pgDataHandler: ((chunk: Buffer) => void) | undefined;
  /** Bytes of a message header that a chunk boundary split. */
  #header = Buffer.alloc(HEADER);
  #headerBytes = 0;
  /** Bytes left of the current message's body, and whether they are row bytes (CopyData) or skipped. */
  #left = 0;
  #copyData = false;
  #wanted = false;
  #reading = false;
  #detached = false;

  constructor(readonly text: string) {
    super();
  }

  /** Called by pg's Client when the query's turn comes. */
  submit(connection: pg.Connection): void {
    this.#connection = connection;
    const socket = connection.stream;
    const handlers = socket.listeners('data') as ((chunk: Buffer) => void)[];
    if (handlers.length !== 1) throw new Error(`CopyOut expects one data listener on the connection, found ${handlers.length}`);
    this.#pgDataHandler = handlers[0]!;
    socket.removeListener('data', this.#pgDataHandler);
    socket.pause();
    socket.on('readable', this.#onReadable);
    connection.query(this.text);
  }

  override _read(): void {
    this.#wanted = true;
    this.#pump();
  }

  handleError(err: Error): void {
    this.destroy(err);
  }

  handleCommandComplete(msg: { text?: string } | undefined): void {
    const m = /COPY (\d+)/.exec(msg?.text ?? '');
    if (m) this.rowCount = Number(m[1]);
  }

  handleReadyForQuery(): void {}

  readonly #onReadable = (): void => this.#pump();

  #pump(): void {
    const socket: Duplex | undefined = this.#connection?.stream;
    if (!socket || this.#reading || this.#detached) return;
    this.#reading = true;
    let chunk: Buffer | null;
    // pg's connection stream is the socket (or its TLS wrapper): a byte stream in paused mode here.
    while (this.#wanted && !this.#detached && (chunk = socket.read() as Buffer | null) !== null) this.#wanted = this.#take(chunk);
    this.#reading = false;
  }

  /** Consumes one socket chunk; false when the consumer wants no more for now. */
  #take(chunk: Buffer): boolean {
    let read = 0;
    let written = 0;
    while (read < chunk.length) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, chunk.length - read);
        if (this.#copyData) {
          if (written !== read) chunk.copyWithin(written, read, read + n);
          written += n;
        }
        read += n;
        this.#left -= n;
        continue;
      }
      // Byte by byte: in Node 20 Buffer#copy of part of a buffer makes a new view object, and this runs once per row.
      const header = this.#header;
      while (this.#headerBytes < HEADER && read < chunk.length) header[this.#headerBytes++] = chunk[read++]!;
      if (this.#headerBytes < HEADER) break;
      this.#headerBytes = 0;
      const code = header[0]!;
      if (code === ERROR_RESPONSE || code === COPY_DONE) {
        if (written > 0) this.push(chunk.subarray(0, written));
        if (code === COPY_DONE) this.push(null);
        // pg parses the rest: CommandComplete and ReadyForQuery, or the whole error message.
        this.#detach(code === COPY_DONE ? chunk.subarray(read) : Buffer.concat([this.#header, chunk.subarray(read)]));
        return false;
      }
      this.#copyData = code === COPY_DATA;
      this.#left = header.readUInt32BE(1) - 4;
    }
    return written > 0 ? this.push(chunk.subarray(0, written)) : true;
  }

  /** Gives the socket back to pg, with the bytes this stream did not consume. */
  #detach(unread: Buffer): void {
    this.#detached = true;
    const socket = this.#connection!.stream;
    socket.removeListener('readable', this.#onReadable);
    socket.on('data', this.#pgDataHandler!);
    this.#pgDataHandler!(unread);
    process.nextTick(() => socket.resume());
  }
}
