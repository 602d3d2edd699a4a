/**
 * Request bodies in reused buffers. An append's body lives until its batch commits, which is seconds when
 * the emulator plays Snowflake's latency (`--commit-delay-ms 5000`): a fresh buffer per body then always
 * lands in memory the process has not touched yet, and on this kind of VM the first touch of each 4 kB
 * page cost more than the copy itself (the emulator took 1.3–1.4 times the CPU per row at a 5 s delay
 * than at 0.2 s, most of the difference in that copy; bench/README.md). Buffers of committed bodies come
 * back here (`release`) and take the next bodies of their size class.
 */
import type { Readable } from 'node:stream';

/** Pooled sizes: smaller and larger bodies get a buffer of their own, as before. */
const MIN_POOLED = 32 << 10;
const MIN_CLASS = 64 << 10;
const MAX_CLASS = 8 << 20;

export class BodyPool {
  readonly #free = new Map<number, Buffer[]>();
  /** Buffers handed out and not yet released: only those may come back, and each only once. */
  readonly #out = new WeakSet<ArrayBuffer>();
  #freeBytes = 0;

  /** @param maxFreeBytes at most this many bytes wait in the pool; more released buffers are left to GC. */
  constructor(readonly maxFreeBytes = 256 << 20) {}

  /** A buffer of exactly `size` bytes, a view of a pooled one when the size has a class. */
  take(size: number): Buffer {
    const cls = sizeClass(size);
    if (cls === undefined) return Buffer.allocUnsafe(size);
    const whole = this.#free.get(cls)?.pop();
    if (whole) this.#freeBytes -= cls;
    const buf = whole ?? Buffer.allocUnsafeSlow(cls);
    this.#out.add(buf.buffer as ArrayBuffer);
    return buf.subarray(0, size);
  }

  /** Gives back a buffer from `take` that nothing reads any more; anything else is ignored. */
  release(view: Buffer): void {
    const ab = view.buffer as ArrayBuffer;
    if (!this.#out.delete(ab)) return;
    const cls = ab.byteLength;
    if (this.#freeBytes + cls > this.maxFreeBytes) return;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(Buffer.from(ab, 0, cls));
    this.#freeBytes += cls;
  }

  /** Bytes waiting in the pool (tests). */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  /**
   * Reads a request body into a pooled buffer: `Content-Length` sizes it up front, else the chunks are
   * gathered first. Errors carry the status Fastify answers with (413 over `limit`, 400 for a body
   * shorter or longer than its `Content-Length`).
   */
  async read(payload: Readable, contentLength: string | undefined, limit: number): Promise<Buffer> {
    const declared = contentLength === undefined ? undefined : Number(contentLength);
    if (declared !== undefined && (!Number.isSafeInteger(declared) || declared < 0)) throw statusError(400, 'Invalid Content-Length');
    if (declared !== undefined && declared > limit) throw statusError(413, 'Request body is too large');
    if (declared !== undefined) {
      const body = this.take(declared);
      let at = 0;
      for await (const chunk of payload as AsyncIterable<Buffer>) {
        if (at + chunk.length > declared) throw statusError(400, 'Request body size did not match Content-Length');
        at += chunk.copy(body, at);
      }
      if (at !== declared) throw statusError(400, 'Request body size did not match Content-Length');
      return body;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of payload as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw statusError(413, 'Request body is too large');
      chunks.push(chunk);
    }
    const body = this.take(size);
    let at = 0;
    for (const chunk of chunks) at += chunk.copy(body, at);
    return body;
  }
}

function sizeClass(size: number): number | undefined {
  if (size < MIN_POOLED || size > MAX_CLASS) return undefined;
  let cls = MIN_CLASS;
  while (cls < size) cls *= 2;
  return cls;
}

function statusError(statusCode: number, message: string): Error {
  return Object.assign(new Error(message), { statusCode });
}
