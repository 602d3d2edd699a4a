/**
 * Redis leases (design.md invariant 6): one holder per pipeline, fencing tokens that strictly increase
 * across holders, expiry after a holder dies, and a stale holder whose progress writes are refused.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { inject } from 'vitest';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisLeaseProvider } from '../src/control/redis-lease.js';
import { RedisStateStore, pipelineKey } from '../src/store/redis-store.js';
import { FloeError } from '../src/errors.js';
import { waitFor } from './helpers/wait.js';
import { startRedis } from './harness/redis.js';

const keyPrefix = `floe-lease-${randomBytes(4).toString('hex')}`;
const closers: (() => Promise<unknown>)[] = [];

function provider(ttlMs = 15_000): RedisLeaseProvider {
  const p = new RedisLeaseProvider({ url: inject('redisUrl'), keyPrefix, ttlMs });
  closers.push(() => p.close());
  return p;
}

const pipelineName = (): string => `pipe-${randomBytes(4).toString('hex')}`;

afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

describe('Redis leases', () => {
  it('are exclusive, and every new holder gets a higher token', async () => {
    const a = provider();
    const b = provider();
    const pipe = pipelineName();
    const first = await a.tryAcquire(pipe, 'worker-a');
    expect(first).toBeDefined();
    expect(await b.tryAcquire(pipe, 'worker-b')).toBeUndefined();
    expect(await a.tryAcquire(pipe, 'worker-a')).toBeUndefined(); // not re-entrant either
    expect((await b.holders()).get(pipe)).toBe('worker-a');

    await first!.release();
    await first!.release(); // idempotent
    expect((await b.holders()).has(pipe)).toBe(false);
    const second = await b.tryAcquire(pipe, 'worker-b');
    expect(second!.token).toBeGreaterThan(first!.token);
    expect((await a.holders()).get(pipe)).toBe('worker-b');
    await second!.release();
    const third = await a.tryAcquire(pipe, 'worker-a');
    expect(third!.token).toBeGreaterThan(second!.token);
    expect(first!.lost.aborted || second!.lost.aborted || third!.lost.aborted).toBe(false);
  });

  it('stay held while renewed, beyond their TTL', async () => {
    const a = provider(300);
    const b = provider(300);
    const pipe = pipelineName();
    const lease = await a.tryAcquire(pipe, 'worker-a');
    // Several TTLs pass (awaited through Redis itself, not a sleep): the lease is still there.
    const raw = new Redis(inject('redisUrl'));
    closers.push(() => raw.quit());
    const key = pipelineKey(keyPrefix, pipe, 'lease');
    let renewals = 0;
    let lastTtl = Infinity;
    await waitFor('three renewals', async () => {
      const ttl = await raw.pttl(key);
      if (ttl > lastTtl) renewals++;
      lastTtl = ttl;
      return renewals >= 3;
    });
    expect(await b.tryAcquire(pipe, 'worker-b')).toBeUndefined();
    expect(lease!.lost.aborted).toBe(false);
  });

  it('expire after their holder dies, and the next holder gets a higher token', async () => {
    const pipe = pipelineName();
    // A separate process takes the lease (TTL 1 s) and is killed with SIGKILL: nothing releases it.
    const code = `
      const { RedisLeaseProvider } = await import('./src/control/redis-lease.ts');
      const p = new RedisLeaseProvider({ url: ${JSON.stringify(inject('redisUrl'))}, keyPrefix: ${JSON.stringify(keyPrefix)}, ttlMs: 1000 });
      const lease = await p.tryAcquire(${JSON.stringify(pipe)}, 'doomed');
      console.log('token=' + lease.token);
      setInterval(() => undefined, 1000);`;
    // node itself (not the tsx wrapper, which would leave its child running after a SIGKILL).
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    closers.push(async () => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const doomedToken = BigInt(await waitFor('the child to take the lease', () => /token=(\d+)/.exec(out)?.[1]));
    const b = provider();
    expect(await b.tryAcquire(pipe, 'worker-b')).toBeUndefined();
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const next = await waitFor('the dead holder’s lease to expire', () => b.tryAcquire(pipe, 'worker-b'), 10_000);
    expect(next.token).toBeGreaterThan(doomedToken);
    expect((await b.holders()).get(pipe)).toBe('worker-b');
  });

  it('a holder that lost its lease notices, and its fenced progress writes are refused', async () => {
    const a = provider(600);
    const b = provider(600);
    const pipe = pipelineName();
    const store = new RedisStateStore({ url: inject('redisUrl'), keyPrefix });
    closers.push(() => store.close());
    await store.init();

    const stale = (await a.tryAcquire(pipe, 'worker-a'))!;
    const staleStore = store.fenced(stale.token);
    await staleStore.beginIncarnation(pipe, 'slot', 'inc-1', 0n);
    await staleStore.recordDurable(pipe, 'inc-1', 100n, 100n);

    // As if worker-a stalled past its TTL (a long GC pause, a partition): the lease key expires.
    const raw = new Redis(inject('redisUrl'));
    closers.push(() => raw.quit());
    await raw.del(pipelineKey(keyPrefix, pipe, 'lease'));
    const fresh = (await b.tryAcquire(pipe, 'worker-b'))!;
    expect(fresh.token).toBeGreaterThan(stale.token);
    await store.fenced(fresh.token).recordDurable(pipe, 'inc-1', 200n, 200n);

    // Worker-a has not noticed yet: its write is refused by the store regardless.
    const err = await staleStore.recordDurable(pipe, 'inc-1', 300n, 300n).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FloeError);
    expect((err as FloeError).retry).toBe('none');
    expect((await store.getProgress(pipe))?.durableLsn).toBe(200n);

    // Its next renewal finds another holder.
    await waitFor('the stale holder to notice', () => stale.lost.aborted);
    expect(fresh.lost.aborted).toBe(false);
    await stale.release(); // must not delete the new holder's lease
    expect((await b.holders()).get(pipe)).toBe('worker-b');
  });

  it('work through a Redis Cluster (keys of one pipeline in one slot; holders from every primary)', async () => {
    const cluster = await startRedis({ cluster: true });
    closers.push(() => cluster.stop());
    const a = new RedisLeaseProvider({ url: cluster.url, ttlMs: 5_000 });
    const b = new RedisLeaseProvider({ url: cluster.url, ttlMs: 5_000 });
    closers.unshift(
      () => a.close(),
      () => b.close(),
    );
    const pipes = ['one', 'two', 'three'];
    const leases = await Promise.all(pipes.map((p) => a.tryAcquire(p, 'worker-a')));
    expect(leases.every((l) => l !== undefined)).toBe(true);
    expect(await b.tryAcquire('two', 'worker-b')).toBeUndefined();
    expect(await b.holders()).toEqual(new Map(pipes.map((p) => [p, 'worker-a'])));
    await leases[1]!.release();
    expect((await b.tryAcquire('two', 'worker-b'))!.token).toBeGreaterThan(leases[1]!.token);
  });
});
