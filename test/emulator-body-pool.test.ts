/**
 * The emulator's pool of request-body buffers (src/emulator/body-pool.ts): a released buffer takes the next
 * body of its size class, never two bodies at once, and reading a body keeps Fastify's limits.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BodyPool } from '../src/emulator/body-pool.js';

describe('BodyPool', () => {
  it('hands a released buffer to the next body of its size class, once', () => {
    const pool = new BodyPool();
    const a = pool.take(800_000);
    expect(a.length).toBe(800_000);
    pool.release(a);
    expect(pool.freeBytes).toBe(1 << 20);
    const b = pool.take(900_000);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.freeBytes).toBe(0);
    // Released twice (or never handed out): ignored, so no buffer can serve two bodies.
    pool.release(b);
    pool.release(b);
    pool.release(Buffer.alloc(100_000));
    expect(pool.freeBytes).toBe(1 << 20);
    const [c, d] = [pool.take(700_000), pool.take(700_000)];
    expect(c.buffer).toBe(a.buffer);
    expect(d.buffer).not.toBe(c.buffer);
  });

  it('leaves small and very large bodies, and releases past its cap, to GC', () => {
    const pool = new BodyPool(3 << 20);
    for (const size of [10, 20_000, 9 << 20]) {
      pool.release(pool.take(size));
      expect(pool.freeBytes).toBe(0);
    }
    const held = [pool.take(2 << 20), pool.take(2 << 20)];
    for (const h of held) pool.release(h);
    expect(pool.freeBytes).toBe(2 << 20);
  });

  it('reads a body with or without Content-Length, and refuses what Fastify refuses', async () => {
    const pool = new BodyPool();
    const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(30_000, 2)];
    const whole = Buffer.concat(parts);
    expect(await pool.read(Readable.from(parts), String(whole.length), 1 << 20)).toEqual(whole);
    expect(await pool.read(Readable.from(parts), undefined, 1 << 20)).toEqual(whole);
    await expect(pool.read(Readable.from(parts), String(whole.length - 1), 1 << 20)).rejects.toMatchObject({ statusCode: 400 });
    await expect(pool.read(Readable.from(parts), String(whole.length + 1), 1 << 20)).rejects.toMatchObject({ statusCode: 400 });
    await expect(pool.read(Readable.from(parts), 'x', 1 << 20)).rejects.toMatchObject({ statusCode: 400 });
    await expect(pool.read(Readable.from(parts), String(whole.length), 50_000)).rejects.toMatchObject({ statusCode: 413 });
    await expect(pool.read(Readable.from(parts), undefined, 50_000)).rejects.toMatchObject({ statusCode: 413 });
  });
});
