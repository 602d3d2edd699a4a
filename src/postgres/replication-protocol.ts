/**
 * The CopyData payloads of the streaming replication protocol (the copy-both
 * phase after START_REPLICATION), see "Streaming Replication Protocol" in the
 * PostgreSQL docs:
 *
 * - from the server, `w` XLogData: walStart Int64, walEnd Int64, sendTime Int64,
 *   then the output plugin's message (for pgoutput: see pgoutput.ts);
 * - from the server, `k` primary keepalive: walEnd Int64, sendTime Int64,
 *   replyRequested Byte1;
 * - to the server, `r` standby status update: write, flush, apply Int64 LSNs,
 *   clock Int64, replyRequested Byte1.
 *
 * Server times are microseconds since 2000-01-01 UTC; floe keeps microseconds
 * since the Unix epoch, so both directions convert here.
 */
import { FloeError } from '../errors.js';

export type ReplicationFrame =
  | { tag: 'xlog'; walStart: bigint; walEnd: bigint; sendTimeMicros: bigint; data: Buffer /* subarray, no copy */ }
  | { tag: 'keepalive'; walEnd: bigint; sendTimeMicros: bigint; replyRequested: boolean };

/** Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch). */
export const PG_EPOCH_OFFSET_MICROS = 946_684_800_000_000n;

const XLOG_HEADER = 1 + 8 + 8 + 8;
const KEEPALIVE_LENGTH = 1 + 8 + 8 + 1;
const STANDBY_STATUS_LENGTH = 1 + 8 + 8 + 8 + 8 + 1;
const MAX_U64 = 0xffff_ffff_ffff_ffffn;

function frameError(message: string): FloeError {
  return new FloeError('replication', `replication protocol: ${message}`, {
    hint: 'the server sent an unexpected replication message; check the server version and restart the pipeline',
  });
}

/**
 * Decodes one CopyData payload received during START_REPLICATION. The `data`
 * of an XLogData frame is a view into `buf` (no copy): decode it before the
 * buffer can be reused.
 */
export function decodeReplicationFrame(buf: Buffer): ReplicationFrame {
  if (buf.length === 0) throw frameError('empty CopyData message');
  const tag = buf[0];
  if (tag === 0x77 /* w */) {
    if (buf.length < XLOG_HEADER) throw frameError(`XLogData message truncated (${buf.length} bytes, header needs ${XLOG_HEADER})`);
    return {
      tag: 'xlog',
      walStart: buf.readBigUInt64BE(1),
      walEnd: buf.readBigUInt64BE(9),
      sendTimeMicros: buf.readBigInt64BE(17) + PG_EPOCH_OFFSET_MICROS,
      data: buf.subarray(XLOG_HEADER),
    };
  }
  if (tag === 0x6b /* k */) {
    if (buf.length !== KEEPALIVE_LENGTH) {
      throw frameError(`keepalive message has ${buf.length} bytes, expected ${KEEPALIVE_LENGTH}`);
    }
    const reply = buf[17];
    if (reply !== 0 && reply !== 1) throw frameError(`keepalive reply flag is ${String(reply)}, expected 0 or 1`);
    return {
      tag: 'keepalive',
      walEnd: buf.readBigUInt64BE(1),
      sendTimeMicros: buf.readBigInt64BE(9) + PG_EPOCH_OFFSET_MICROS,
      replyRequested: reply === 1,
    };
  }
  throw frameError(`unknown CopyData message type ${describeTag(tag ?? 0)}`);
}

function describeTag(byte: number): string {
  return byte >= 0x20 && byte < 0x7f
    ? `'${String.fromCharCode(byte)}' (0x${byte.toString(16).padStart(2, '0')})`
    : `0x${byte.toString(16).padStart(2, '0')}`;
}

function checkLsn(name: string, lsn: bigint): void {
  if (lsn < 0n || lsn > MAX_U64) throw new FloeError('internal', `standby status ${name} LSN ${lsn} is outside the 64-bit range`);
}

/**
 * Encodes a standby status update (`r`, 34 bytes) to send as CopyData.
 * `nowMicros` is microseconds since the Unix epoch.
 */
export function encodeStandbyStatus(write: bigint, flush: bigint, apply: bigint, nowMicros: bigint, replyRequested: boolean): Buffer {
  checkLsn('write', write);
  checkLsn('flush', flush);
  checkLsn('apply', apply);
  const buf = Buffer.allocUnsafe(STANDBY_STATUS_LENGTH);
  buf[0] = 0x72; // 'r'
  buf.writeBigUInt64BE(write, 1);
  buf.writeBigUInt64BE(flush, 9);
  buf.writeBigUInt64BE(apply, 17);
  buf.writeBigInt64BE(BigInt.asIntN(64, nowMicros - PG_EPOCH_OFFSET_MICROS), 25);
  buf[33] = replyRequested ? 1 : 0;
  return buf;
}
