/**
 * Decoder for the pgoutput logical replication protocol, version 1 (the
 * "Logical Replication Message Formats" chapter of the PostgreSQL docs). One
 * call decodes one message: the `data` of an XLogData frame (see
 * replication-protocol.ts). floe requests `proto_version '1'`, or
 * `proto_version '2'` with `streaming 'on'` (transactions too large for the
 * server's logical_decoding_work_mem arrive in blocks while they run), in text
 * mode or with `binary 'true'`. Two-phase (v3+) messages are rejected rather than
 * guessed at.
 *
 * Binary mode: the server sends a column in its type's binary send format ('b')
 * whenever the type has a send function. The caller passes, per relation, one
 * decoder per column (built when the relation's Relation message arrived,
 * binary-values.ts), and a binary cell becomes exactly the text the same column
 * would have had in text mode. A binary cell without a decoder is an error, never
 * a guess.
 *
 * Inside a stream block (Stream Start .. Stream Stop) the data messages carry the
 * (sub)transaction's xid right after the tag: `splitStreamed` takes it out, so
 * the rest decodes as the v1 message it otherwise is.
 *
 * Wire notes:
 * - integers are big-endian; LSNs are unsigned 64-bit, times are signed 64-bit
 *   microseconds since 2000-01-01 (converted here to the Unix epoch);
 * - strings are NUL-terminated UTF-8; the pg_catalog schema is sent as "";
 * - TupleData is Int16 column count, then per column a kind byte: 'n' null,
 *   'u' unchanged TOASTed value (not sent), 't' text (Int32 length + bytes),
 *   'b' binary (Int32 length + bytes).
 *
 * Malformed input throws FloeError('replication'); no other error escapes.
 */
import type { Cell } from '../model.js';
import { FloeError } from '../errors.js';
import { utf8 } from './utf8.js';
import type { BinaryDecoder } from './binary-values.js';

/**
 * Binary mode: per relation id, the decoder of each column (by position in the Relation message), or
 * undefined where the column's binary form cannot be decoded.
 */
export type BinaryColumns = ReadonlyMap<number, readonly (BinaryDecoder | undefined)[]>;

export type PgOutputMessage =
  | { tag: 'begin'; finalLsn: bigint; commitTimeMicros: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: bigint; endLsn: bigint; commitTimeMicros: bigint }
  | { tag: 'origin'; originLsn: bigint; name: string }
  | {
      tag: 'relation';
      relationId: number;
      schema: string;
      name: string;
      replicaIdentity: 'd' | 'n' | 'f' | 'i';
      columns: { isKey: boolean; name: string; typeOid: number; typeMod: number }[];
    }
  | { tag: 'type'; typeOid: number; schema: string; name: string }
  | { tag: 'insert'; relationId: number; newTuple: Cell[] }
  | { tag: 'update'; relationId: number; oldKind: 'K' | 'O' | undefined; oldTuple: Cell[] | undefined; newTuple: Cell[] }
  | { tag: 'delete'; relationId: number; oldKind: 'K' | 'O'; oldTuple: Cell[] }
  | { tag: 'truncate'; cascade: boolean; restartIdentity: boolean; relationIds: number[] }
  | { tag: 'message'; transactional: boolean; lsn: bigint; prefix: string; content: Buffer }
  | { tag: 'streamStart'; xid: number; firstSegment: boolean }
  | { tag: 'streamStop' }
  | { tag: 'streamCommit'; xid: number; flags: number; commitLsn: bigint; endLsn: bigint; commitTimeMicros: bigint }
  | { tag: 'streamAbort'; xid: number; subXid: number };

/** Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch). */
const PG_EPOCH_OFFSET_MICROS = 946_684_800_000_000n;

// Byte values of the tags.
const B = 0x42,
  C = 0x43,
  O = 0x4f,
  R = 0x52,
  Y = 0x59,
  I = 0x49,
  U = 0x55,
  D = 0x44,
  T = 0x54,
  M = 0x4d,
  STREAM_START = 0x53,
  STREAM_STOP = 0x45,
  STREAM_COMMIT = 0x63,
  STREAM_ABORT = 0x41;
const K = 0x4b,
  N = 0x4e;
const KIND_NULL = 0x6e,
  KIND_UNCHANGED = 0x75,
  KIND_TEXT = 0x74,
  KIND_BINARY = 0x62;

/** Messages of later protocol versions, named so the error says what arrived. */
const UNSUPPORTED: Record<string, string> = {
  b: 'Begin Prepare (protocol v3)',
  P: 'Prepare (protocol v3)',
  K: 'Commit Prepared (protocol v3)',
  r: 'Rollback Prepared (protocol v3)',
  p: 'Stream Prepare (protocol v3)',
};

const HINT =
  'the replication stream is not the pgoutput output floe requested (protocol 1, or 2 with streaming; text, or binary where floe decodes it); check the server version and restart the pipeline';

function protocolError(message: string): FloeError {
  return new FloeError('replication', `pgoutput: ${message}`, { hint: HINT });
}

/** A cursor over one message; every read checks bounds first and throws FloeError. */
class Reader {
  pos = 1;
  constructor(
    readonly buf: Buffer,
    readonly what: string,
  ) {}

  need(n: number, field: string): void {
    if (this.pos + n > this.buf.length) {
      throw protocolError(
        `${this.what} message truncated: ${field} needs ${n} byte(s) at offset ${this.pos}, message has ${this.buf.length} bytes`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }

  u16(field: string): number {
    this.need(2, field);
    const b = this.buf,
      p = this.pos;
    this.pos = p + 2;
    return (b[p]! << 8) | b[p + 1]!;
  }

  u32(field: string): number {
    this.need(4, field);
    const b = this.buf,
      p = this.pos;
    this.pos = p + 4;
    return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  }

  i32(field: string): number {
    this.need(4, field);
    const b = this.buf,
      p = this.pos;
    this.pos = p + 4;
    return (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A PostgreSQL timestamp, returned as microseconds since the Unix epoch. */
  time(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v + PG_EPOCH_OFFSET_MICROS;
  }

  cstring(field: string): string {
    const start = this.pos;
    const end = start < this.buf.length ? this.buf.indexOf(0, start) : -1;
    if (end < 0) throw protocolError(`${this.what} message truncated: ${field} at offset ${start} has no terminating NUL`);
    this.pos = end + 1;
    return this.text(start, end);
  }

  text(start: number, end: number): string {
    return utf8(this.buf, start, end);
  }

  /**
   * TupleData; `field` names it in errors only (no strings are built on the hot path). `decoders`: the
   * relation's binary decoders by column (binary mode only).
   */
  tuple(field: string, decoders?: readonly (BinaryDecoder | undefined)[]): Cell[] {
    const buf = this.buf;
    const len = buf.length;
    let pos = this.pos;
    if (pos + 2 > len) throw this.truncated(field, 'column count', pos);
    const ncols = (buf[pos]! << 8) | buf[pos + 1]!;
    pos += 2;
    // Every column takes at least its kind byte: reject impossible counts before allocating.
    if (ncols > len - pos) {
      throw protocolError(`${this.what} message truncated: ${field} announces ${ncols} columns but only ${len - pos} bytes follow`);
    }
    const cells: Cell[] = [];
    for (let i = 0; i < ncols; i++) {
      if (pos >= len) throw this.truncated(field, `column ${i + 1} of ${ncols}`, pos);
      const kind = buf[pos++]!;
      if (kind === KIND_TEXT) {
        if (pos + 4 > len) throw this.truncated(field, `column ${i + 1} length`, pos);
        const n = (buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
        pos += 4;
        if (n < 0) throw protocolError(`${this.what} message: ${field} column ${i + 1} has negative length ${n}`);
        if (pos + n > len) throw this.truncated(field, `column ${i + 1} value of ${n} bytes`, pos);
        cells.push(this.text(pos, pos + n));
        pos += n;
      } else if (kind === KIND_NULL) {
        cells.push(null);
      } else if (kind === KIND_UNCHANGED) {
        cells.push(undefined);
      } else if (kind === KIND_BINARY) {
        if (pos + 4 > len) throw this.truncated(field, `column ${i + 1} length`, pos);
        const n = (buf[pos]! << 24) | (buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!;
        pos += 4;
        if (n < 0) throw protocolError(`${this.what} message: ${field} column ${i + 1} has negative length ${n}`);
        if (pos + n > len) throw this.truncated(field, `column ${i + 1} value of ${n} bytes`, pos);
        cells.push(this.binary(field, i, decoders?.[i], pos, pos + n));
        pos += n;
      } else {
        throw protocolError(`${this.what} message: ${field} column ${i + 1} has unknown kind ${describeByte(kind)}`);
      }
    }
    this.pos = pos;
    return cells;
  }

  /** A binary cell as the text its output function prints; errors name the column, never the value. */
  binary(field: string, column: number, decode: BinaryDecoder | undefined, start: number, end: number): string {
    if (!decode) {
      throw protocolError(`${this.what} message: ${field} column ${column + 1} is in binary format, but floe has no binary decoder for it`);
    }
    try {
      return decode(this.buf, start, end);
    } catch (err) {
      throw protocolError(
        `${this.what} message: ${field} column ${column + 1}: its binary value cannot be decoded (${(err as Error).message})`,
      );
    }
  }

  truncated(field: string, part: string, pos: number): FloeError {
    return protocolError(`${this.what} message truncated: ${field} ${part} missing at offset ${pos}, message has ${this.buf.length} bytes`);
  }

  done(): void {
    if (this.pos !== this.buf.length) {
      throw protocolError(`${this.what} message has ${this.buf.length - this.pos} unexpected trailing byte(s) at offset ${this.pos}`);
    }
  }
}

function describeByte(byte: number): string {
  const hex = `0x${byte.toString(16).padStart(2, '0')}`;
  return byte >= 0x20 && byte < 0x7f ? `'${String.fromCharCode(byte)}' (${hex})` : hex;
}

function decodeBegin(r: Reader): PgOutputMessage {
  const finalLsn = r.u64('final LSN');
  const commitTimeMicros = r.time('commit timestamp');
  const xid = r.u32('xid');
  r.done();
  return { tag: 'begin', finalLsn, commitTimeMicros, xid };
}

function decodeCommit(r: Reader): PgOutputMessage {
  const flags = r.u8('flags');
  const commitLsn = r.u64('commit LSN');
  const endLsn = r.u64('end LSN');
  const commitTimeMicros = r.time('commit timestamp');
  r.done();
  return { tag: 'commit', flags, commitLsn, endLsn, commitTimeMicros };
}

function decodeOrigin(r: Reader): PgOutputMessage {
  const originLsn = r.u64('origin LSN');
  const name = r.cstring('origin name');
  r.done();
  return { tag: 'origin', originLsn, name };
}

function decodeRelation(r: Reader): PgOutputMessage {
  const relationId = r.u32('relation id');
  const schema = r.cstring('schema name');
  const name = r.cstring('relation name');
  const ri = r.u8('replica identity');
  let replicaIdentity: 'd' | 'n' | 'f' | 'i';
  switch (ri) {
    case 0x64:
      replicaIdentity = 'd';
      break;
    case 0x6e:
      replicaIdentity = 'n';
      break;
    case 0x66:
      replicaIdentity = 'f';
      break;
    case 0x69:
      replicaIdentity = 'i';
      break;
    default:
      throw protocolError(`Relation message: unknown replica identity ${describeByte(ri)}`);
  }
  const ncols = r.u16('column count');
  // A column takes at least 10 bytes (flags, empty name's NUL, type oid, type modifier).
  if (ncols * 10 > r.buf.length - r.pos) {
    throw protocolError(`Relation message truncated: announces ${ncols} columns but only ${r.buf.length - r.pos} bytes follow`);
  }
  const columns: { isKey: boolean; name: string; typeOid: number; typeMod: number }[] = [];
  for (let i = 0; i < ncols; i++) {
    const flags = r.u8(`column ${i + 1} flags`);
    const colName = r.cstring(`column ${i + 1} name`);
    const typeOid = r.u32(`column ${i + 1} type oid`);
    const typeMod = r.i32(`column ${i + 1} type modifier`);
    columns.push({ isKey: (flags & 1) !== 0, name: colName, typeOid, typeMod });
  }
  r.done();
  return { tag: 'relation', relationId, schema, name, replicaIdentity, columns };
}

function decodeType(r: Reader): PgOutputMessage {
  const typeOid = r.u32('type oid');
  const schema = r.cstring('schema name');
  const name = r.cstring('type name');
  r.done();
  return { tag: 'type', typeOid, schema, name };
}

function decodeInsert(r: Reader, binary: BinaryColumns | undefined): PgOutputMessage {
  const relationId = r.u32('relation id');
  const marker = r.u8('new tuple marker');
  if (marker !== N) throw protocolError(`Insert message: expected new tuple marker 'N', got ${describeByte(marker)}`);
  const newTuple = r.tuple('new tuple', binary?.get(relationId));
  r.done();
  return { tag: 'insert', relationId, newTuple };
}

function decodeUpdate(r: Reader, binary: BinaryColumns | undefined): PgOutputMessage {
  const relationId = r.u32('relation id');
  const decoders = binary?.get(relationId);
  let marker = r.u8('tuple marker');
  let oldKind: 'K' | 'O' | undefined;
  let oldTuple: Cell[] | undefined;
  if (marker === K || marker === O) {
    oldKind = marker === K ? 'K' : 'O';
    oldTuple = r.tuple(oldKind === 'K' ? 'old key tuple' : 'old tuple', decoders);
    marker = r.u8('new tuple marker');
  }
  if (marker !== N) throw protocolError(`Update message: expected tuple marker 'K', 'O' or 'N', got ${describeByte(marker)}`);
  const newTuple = r.tuple('new tuple', decoders);
  r.done();
  return { tag: 'update', relationId, oldKind, oldTuple, newTuple };
}

function decodeDelete(r: Reader, binary: BinaryColumns | undefined): PgOutputMessage {
  const relationId = r.u32('relation id');
  const marker = r.u8('old tuple marker');
  if (marker !== K && marker !== O)
    throw protocolError(`Delete message: expected old tuple marker 'K' or 'O', got ${describeByte(marker)}`);
  const oldKind = marker === K ? 'K' : 'O';
  const oldTuple = r.tuple(oldKind === 'K' ? 'old key tuple' : 'old tuple', binary?.get(relationId));
  r.done();
  return { tag: 'delete', relationId, oldKind, oldTuple };
}

function decodeTruncate(r: Reader): PgOutputMessage {
  const count = r.u32('relation count');
  const options = r.u8('options');
  if (count * 4 !== r.buf.length - r.pos) {
    throw protocolError(`Truncate message: announces ${count} relations but ${r.buf.length - r.pos} bytes of relation ids follow`);
  }
  const relationIds: number[] = [];
  for (let i = 0; i < count; i++) relationIds.push(r.u32(`relation id ${i + 1}`));
  r.done();
  return { tag: 'truncate', cascade: (options & 1) !== 0, restartIdentity: (options & 2) !== 0, relationIds };
}

function decodeMessage(r: Reader): PgOutputMessage {
  const flags = r.u8('flags');
  const lsn = r.u64('LSN');
  const prefix = r.cstring('prefix');
  const length = r.i32('content length');
  if (length < 0) throw protocolError(`Message message: negative content length ${length}`);
  r.need(length, 'content');
  // Copied: the caller may keep the content after the network buffer is reused.
  const content = Buffer.from(r.buf.subarray(r.pos, r.pos + length));
  r.pos += length;
  r.done();
  return { tag: 'message', transactional: (flags & 1) !== 0, lsn, prefix, content };
}

function decodeStreamStart(r: Reader): PgOutputMessage {
  const xid = r.u32('xid');
  const first = r.u8('first segment flag');
  r.done();
  return { tag: 'streamStart', xid, firstSegment: first === 1 };
}

function decodeStreamCommit(r: Reader): PgOutputMessage {
  const xid = r.u32('xid');
  const flags = r.u8('flags');
  const commitLsn = r.u64('commit LSN');
  const endLsn = r.u64('end LSN');
  const commitTimeMicros = r.time('commit timestamp');
  r.done();
  return { tag: 'streamCommit', xid, flags, commitLsn, endLsn, commitTimeMicros };
}

function decodeStreamAbort(r: Reader): PgOutputMessage {
  const xid = r.u32('xid');
  const subXid = r.u32('subtransaction xid');
  // Protocol 4 (parallel apply) appends the abort LSN and time; floe asks for 2, which has neither.
  r.done();
  return { tag: 'streamAbort', xid, subXid };
}

/** Tags of the messages that carry an xid inside a stream block. */
const STREAMED_DATA = new Set([R, Y, I, U, D, T, M]);

/**
 * A data message of a stream block: the (sub)transaction xid it carries, and the message without it
 * (a v1 message). Other messages of a block (an Origin) carry no xid: `xid` is undefined for them.
 */
export function splitStreamed(buf: Buffer): { xid: number | undefined; message: Buffer } {
  if (buf.length === 0) throw protocolError('empty message');
  if (!STREAMED_DATA.has(buf[0]!)) return { xid: undefined, message: buf };
  if (buf.length < 5)
    throw protocolError(`streamed ${describeByte(buf[0]!)} message truncated: xid needs 4 bytes, message has ${buf.length - 1}`);
  const xid = buf.readUInt32BE(1);
  const message = Buffer.allocUnsafe(buf.length - 4);
  message[0] = buf[0]!;
  buf.copy(message, 1, 5);
  return { xid, message };
}

/**
 * Decodes one pgoutput message (the payload of one XLogData frame; inside a stream block, after
 * `splitStreamed`). `binary`: the column decoders of binary mode, as of this message.
 */
export function decodePgOutput(buf: Buffer, binary?: BinaryColumns): PgOutputMessage {
  if (buf.length === 0) throw protocolError('empty message');
  switch (buf[0]) {
    case I:
      return decodeInsert(new Reader(buf, 'Insert'), binary);
    case U:
      return decodeUpdate(new Reader(buf, 'Update'), binary);
    case D:
      return decodeDelete(new Reader(buf, 'Delete'), binary);
    case B:
      return decodeBegin(new Reader(buf, 'Begin'));
    case C:
      return decodeCommit(new Reader(buf, 'Commit'));
    case R:
      return decodeRelation(new Reader(buf, 'Relation'));
    case Y:
      return decodeType(new Reader(buf, 'Type'));
    case T:
      return decodeTruncate(new Reader(buf, 'Truncate'));
    case M:
      return decodeMessage(new Reader(buf, 'Message'));
    case O:
      return decodeOrigin(new Reader(buf, 'Origin'));
    case STREAM_START:
      return decodeStreamStart(new Reader(buf, 'Stream Start'));
    case STREAM_STOP:
      new Reader(buf, 'Stream Stop').done();
      return { tag: 'streamStop' };
    case STREAM_COMMIT:
      return decodeStreamCommit(new Reader(buf, 'Stream Commit'));
    case STREAM_ABORT:
      return decodeStreamAbort(new Reader(buf, 'Stream Abort'));
    default: {
      const tag = buf[0]!;
      const name = UNSUPPORTED[String.fromCharCode(tag)];
      throw protocolError(
        name
          ? `unsupported message ${describeByte(tag)}: ${name}; floe requests proto_version '1' or '2'`
          : `unknown message type ${describeByte(tag)}`,
      );
    }
  }
}

/**
 * The new tuple of an Insert message in text mode, kept as the message's bytes: a destination that writes
 * text (NDJSON) copies its values from here instead of building a string per value and encoding it back
 * (the design's "transcode bytes" rule); `cells()` decodes it for everything else.
 */
export class TupleBytes {
  constructor(
    /** The whole Insert message. */
    readonly buf: Buffer,
    /** Offset of the TupleData (its column count). */
    readonly start: number,
    readonly columns: number,
  ) {}

  /** The values as cells, exactly as `decodePgOutput` gives them. */
  cells(): Cell[] {
    const r = new Reader(this.buf, 'Insert');
    r.pos = this.start;
    return r.tuple('new tuple');
  }

  /** Bytes of the tuple, column headers included. */
  get byteLength(): number {
    return this.buf.length - this.start;
  }
}

/**
 * An Insert message whose tuple holds only text and NULL values, checked whole (every length inside the
 * message, nothing after the tuple); undefined for anything else (binary or unchanged values, a
 * malformed message), which `decodePgOutput` then decodes or reports.
 */
export function insertTupleBytes(buf: Buffer): { relationId: number; tuple: TupleBytes } | undefined {
  const len = buf.length;
  if (len < 8 || buf[0] !== I || buf[5] !== N) return undefined;
  const relationId = buf.readUInt32BE(1);
  const ncols = (buf[6]! << 8) | buf[7]!;
  let pos = 8;
  for (let i = 0; i < ncols; i++) {
    if (pos >= len) return undefined;
    const kind = buf[pos++]!;
    if (kind === KIND_NULL) continue;
    if (kind !== KIND_TEXT || pos + 4 > len) return undefined;
    const n = buf.readInt32BE(pos);
    pos += 4;
    if (n < 0 || pos + n > len) return undefined;
    pos += n;
  }
  if (pos !== len) return undefined;
  return { relationId, tuple: new TupleBytes(buf, 6, ncols) };
}
