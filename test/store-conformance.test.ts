/**
 * One behaviour for every StateStore (design.md invariants 3 and 6): the memory store, the Postgres store
 * on each PostgreSQL major, and the Redis store against real redis-servers: the harness's shared one,
 * one behind a Sentinel, and a one-node Cluster (where a script touching keys of two slots would fail).
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { MemoryStateStore } from '../src/store/memory-store.js';
import { PostgresStateStore } from '../src/store/postgres-store.js';
import { RedisStateStore } from '../src/store/redis-store.js';
import type { StateStore, TablePlan } from '../src/store/state-store.js';
import { FloeError } from '../src/errors.js';
import { startRedis, startSentinel } from './harness/redis.js';

interface Backend {
  readonly name: string;
  /** False for the memory store: a new instance starts empty. */
  readonly persistent: boolean;
  setup(): Promise<void>;
  /** A new client instance on the same backing storage. */
  open(): StateStore;
  teardown(): Promise<void>;
}

function memoryBackend(): Backend {
  let shared: MemoryStateStore | undefined;
  return {
    name: 'memory',
    persistent: false,
    async setup() {
      shared = new MemoryStateStore();
    },
    // A memory store has no backing storage to share: "another instance" is the same one.
    open: () => shared!,
    async teardown() {},
  };
}

function postgresBackend(cluster: ReturnType<typeof testClusters>[number]): Backend {
  let db: TestDatabase | undefined;
  return {
    name: `postgres ${cluster.major}`,
    persistent: true,
    async setup() {
      db = await createTestDatabase(cluster, 'store');
    },
    open: () => new PostgresStateStore(db!.url),
    async teardown() {
      await db?.drop();
    },
  };
}

function redisBackend(): Backend {
  // A key prefix of its own keeps this file apart from every other user of the shared Redis.
  const keyPrefix = `floe-test-${randomBytes(4).toString('hex')}`;
  return {
    name: 'redis',
    persistent: true,
    async setup() {},
    open: () => new RedisStateStore({ url: inject('redisUrl'), keyPrefix }),
    async teardown() {},
  };
}

/** The same store through Sentinel (redis+sentinel://) and through the Cluster client against a one-node Cluster. */
function privateRedisBackend(mode: 'sentinel' | 'cluster'): Backend {
  let stop: (() => Promise<void>)[] = [];
  let url = '';
  return {
    name: `redis ${mode}`,
    persistent: true,
    async setup() {
      const server = await startRedis({ cluster: mode === 'cluster' });
      stop = [() => server.stop()];
      url = server.url;
      if (mode === 'sentinel') {
        const sentinel = await startSentinel(server);
        stop.unshift(() => sentinel.stop());
        url = sentinel.url;
      }
    },
    open: () => new RedisStateStore({ url }),
    async teardown() {
      for (const s of stop) await s();
    },
  };
}

const backends: Backend[] = [
  memoryBackend(),
  ...testClusters().map(postgresBackend),
  redisBackend(),
  privateRedisBackend('sentinel'),
  privateRedisBackend('cluster'),
];

const plan = (phase: TablePlan['phase'], snapshotLsn = 100n, rangeCount = 4): TablePlan => ({
  phase,
  snapshotLsn,
  rangeCount,
  pagesPerRange: 8,
});

/** LSNs above 2^53: a store that compares them as doubles would get these wrong. */
const HIGH = 0xffff_fff0_0000_0000n;

async function refusal(p: Promise<unknown>): Promise<FloeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the write must be refused').toBeInstanceOf(FloeError);
  return err as FloeError;
}

describe.each(backends)('state store conformance: $name', (backend) => {
  const opened: StateStore[] = [];
  const open = async (): Promise<StateStore> => {
    const s = backend.open();
    await s.init();
    if (!opened.includes(s)) opened.push(s);
    return s;
  };
  let store: StateStore;
  let pipeline: string;

  beforeAll(async () => {
    await backend.setup();
  });
  afterAll(async () => {
    await backend.teardown();
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });

  const fresh = async (): Promise<void> => {
    store = await open();
    // Pipeline names with characters that matter to key encodings and hash tags.
    pipeline = `p{${randomBytes(4).toString('hex')}}:x`;
  };

  it('starts an incarnation at its start LSN, with no tables', async () => {
    await fresh();
    expect(await store.getProgress(pipeline)).toBeUndefined();
    await store.beginIncarnation(pipeline, 'slot_a', 'inc-1', 42n);
    expect(await store.getProgress(pipeline)).toEqual({ slotName: 'slot_a', incarnation: 'inc-1', durableLsn: 42n, ackLsn: 42n });
    expect((await store.getTables(pipeline, 'inc-1')).size).toBe(0);
  });

  it('moves durable and ack LSNs forward only, exactly at 64 bits', async () => {
    await fresh();
    await store.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await store.recordDurable(pipeline, 'inc-1', HIGH + 10n, HIGH + 20n);
    await store.recordDurable(pipeline, 'inc-1', HIGH + 9n, HIGH + 21n); // durable behind, ack ahead
    await store.recordDurable(pipeline, 'inc-1', 5n, 5n);
    const p = await store.getProgress(pipeline);
    expect(p?.durableLsn).toBe(HIGH + 10n);
    expect(p?.ackLsn).toBe(HIGH + 21n);
  });

  it('refuses every write for another incarnation, and never shows it the current tables', async () => {
    await fresh();
    await store.beginIncarnation(pipeline, 'slot_a', 'old', 0n);
    await store.beginIncarnation(pipeline, 'slot_a', 'new', 1000n);
    await store.setTable(pipeline, 'new', 'public.t', plan('snapshot'));
    for (const write of [
      () => store.recordDurable(pipeline, 'old', 2000n, 2000n),
      () => store.setTable(pipeline, 'old', 'public.u', plan('snapshot')),
      () => store.markRangeDone(pipeline, 'old', 'public.t', 0),
      () => store.removeTable(pipeline, 'old', 'public.t'),
    ]) {
      const e = await refusal(write());
      expect(e.kind).toBe('state');
      expect(e.retry).toBe('none');
      expect(e.message).toMatch(/incarnation/);
    }
    const seen = await store.getTables(pipeline, 'old').catch(() => new Map());
    expect(seen.size).toBe(0);
    expect(await store.getProgress(pipeline)).toMatchObject({ incarnation: 'new', durableLsn: 1000n });
    expect([...(await store.getTables(pipeline, 'new')).values()]).toEqual([
      { table: 'public.t', phase: 'snapshot', snapshotLsn: 100n, rangeCount: 4, pagesPerRange: 8, rangesDone: new Set() },
    ]);
    // A pipeline that never began an incarnation refuses writes too.
    await refusal(store.recordDurable(`${pipeline}-none`, 'x', 1n, 1n));
  });

  it('a new incarnation forgets the previous one’s tables and finished ranges', async () => {
    await fresh();
    await store.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await store.recordDurable(pipeline, 'inc-1', 500n, 500n);
    await store.setTable(pipeline, 'inc-1', 'public.t', plan('snapshot'));
    await store.markRangeDone(pipeline, 'inc-1', 'public.t', 1);
    await store.beginIncarnation(pipeline, 'slot_b', 'inc-2', 0n);
    // Never max(old, new) across incarnations.
    expect(await store.getProgress(pipeline)).toEqual({ slotName: 'slot_b', incarnation: 'inc-2', durableLsn: 0n, ackLsn: 0n });
    expect((await store.getTables(pipeline, 'inc-2')).size).toBe(0);
    await store.setTable(pipeline, 'inc-2', 'public.t', plan('snapshot'));
    expect((await store.getTables(pipeline, 'inc-2')).get('public.t')?.rangesDone).toEqual(new Set());
  });

  it('keeps table phases and finished ranges; a plan update keeps the ranges', async () => {
    await fresh();
    const odd = 'public."we{ir}d:name"';
    await store.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await store.setTable(pipeline, 'inc-1', odd, plan('snapshot', HIGH, 3));
    await store.setTable(pipeline, 'inc-1', 'public.other', plan('snapshot'));
    await store.markRangeDone(pipeline, 'inc-1', odd, 0);
    await store.markRangeDone(pipeline, 'inc-1', odd, 2);
    await store.markRangeDone(pipeline, 'inc-1', odd, 2);
    await store.setTable(pipeline, 'inc-1', odd, plan('streaming', HIGH, 3));
    const tables = await store.getTables(pipeline, 'inc-1');
    expect(tables.get(odd)).toEqual({
      table: odd,
      phase: 'streaming',
      snapshotLsn: HIGH,
      rangeCount: 3,
      pagesPerRange: 8,
      rangesDone: new Set([0, 2]),
    });
    expect(tables.get('public.other')).toMatchObject({ phase: 'snapshot', rangesDone: new Set() });
    const e = await refusal(store.markRangeDone(pipeline, 'inc-1', 'public.unknown', 0));
    expect(e.kind).toBe('state');
  });

  it('removes one table with its ranges, leaving the others', async () => {
    await fresh();
    await store.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await store.setTable(pipeline, 'inc-1', 'public.a', plan('snapshot'));
    await store.setTable(pipeline, 'inc-1', 'public.b', plan('streaming'));
    await store.markRangeDone(pipeline, 'inc-1', 'public.a', 3);
    await store.removeTable(pipeline, 'inc-1', 'public.a');
    await store.removeTable(pipeline, 'inc-1', 'public.never-there');
    expect([...(await store.getTables(pipeline, 'inc-1')).keys()]).toEqual(['public.b']);
    await store.setTable(pipeline, 'inc-1', 'public.a', plan('snapshot'));
    expect((await store.getTables(pipeline, 'inc-1')).get('public.a')?.rangesDone).toEqual(new Set());
  });

  it('fencing: a higher token wins, and a stale token is refused on every write method', async () => {
    await fresh();
    const first = store.fenced(5n);
    await first.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await first.setTable(pipeline, 'inc-1', 'public.t', plan('snapshot'));
    await first.recordDurable(pipeline, 'inc-1', 100n, 100n);
    await first.recordDurable(pipeline, 'inc-1', 110n, 110n); // the same token writes again
    const second = store.fenced(6n);
    await second.recordDurable(pipeline, 'inc-1', 200n, 200n);
    for (const write of [
      () => first.beginIncarnation(pipeline, 'slot_a', 'inc-evil', 0n),
      () => first.recordDurable(pipeline, 'inc-1', 300n, 300n),
      () => first.setTable(pipeline, 'inc-1', 'public.t', plan('streaming')),
      () => first.markRangeDone(pipeline, 'inc-1', 'public.t', 1),
      () => first.removeTable(pipeline, 'inc-1', 'public.t'),
    ]) {
      const e = await refusal(write());
      expect(e.kind).toBe('state');
      expect(e.retry).toBe('none');
      expect(e.hint).toMatch(/lost the lease/);
    }
    expect(await store.getProgress(pipeline)).toEqual({ slotName: 'slot_a', incarnation: 'inc-1', durableLsn: 200n, ackLsn: 200n });
    expect((await store.getTables(pipeline, 'inc-1')).get('public.t')).toMatchObject({ phase: 'snapshot', rangesDone: new Set() });
    // Tokens are per pipeline: another pipeline is not fenced by this one's token.
    await first.beginIncarnation(`${pipeline}-other`, 'slot_b', 'inc-9', 0n);
    // Tokens beyond 2^53 compare exactly.
    await store.fenced(2n ** 62n + 1n).recordDurable(pipeline, 'inc-1', 201n, 201n);
    await refusal(store.fenced(2n ** 62n).recordDurable(pipeline, 'inc-1', 202n, 202n));
  });

  it('fencing holds between two store instances writing concurrently', async () => {
    await fresh();
    const a = (await open()).fenced(1n);
    const b = (await open()).fenced(2n);
    await a.beginIncarnation(pipeline, 'slot_a', 'inc-1', 0n);
    await a.setTable(pipeline, 'inc-1', 'public.t', plan('snapshot', 1n, 64));
    const writesA = Array.from({ length: 20 }, (_, i) =>
      i % 2 ? a.recordDurable(pipeline, 'inc-1', BigInt(1000 + i), BigInt(1000 + i)) : a.markRangeDone(pipeline, 'inc-1', 'public.t', i),
    );
    const writesB = Array.from({ length: 20 }, (_, i) =>
      i % 2
        ? b.recordDurable(pipeline, 'inc-1', BigInt(2000 + i), BigInt(2000 + i))
        : b.markRangeDone(pipeline, 'inc-1', 'public.t', 32 + i),
    );
    const [ra, rb] = await Promise.all([Promise.allSettled(writesA), Promise.allSettled(writesB)]);
    // The higher token never loses; the lower one may land only before the higher one's first write.
    expect(rb.filter((r) => r.status === 'rejected')).toEqual([]);
    for (const r of ra) if (r.status === 'rejected') expect((r.reason as FloeError).hint).toMatch(/lost the lease/);
    expect((await store.getProgress(pipeline))?.durableLsn).toBe(2019n);
    await refusal(a.recordDurable(pipeline, 'inc-1', 3000n, 3000n));
    await refusal(a.markRangeDone(pipeline, 'inc-1', 'public.t', 63));
    const ranges = (await store.getTables(pipeline, 'inc-1')).get('public.t')!.rangesDone;
    expect(ranges.has(63)).toBe(false);
    for (let i = 0; i < 20; i += 2) expect(ranges.has(32 + i)).toBe(true);
    // The unfenced store (floe replicate without leases) still writes.
    await store.recordDurable(pipeline, 'inc-1', 4000n, 4000n);
    expect((await store.getProgress(pipeline))?.durableLsn).toBe(4000n);
  });

  it.runIf(backend.persistent)('keeps everything, fencing included, across a reopen by a new client', async () => {
    await fresh();
    await store.fenced(7n).beginIncarnation(pipeline, 'slot_a', 'inc-1', 10n);
    await store.recordDurable(pipeline, 'inc-1', HIGH, HIGH + 1n);
    await store.setTable(pipeline, 'inc-1', 'public.t', plan('snapshot', HIGH, 2));
    await store.markRangeDone(pipeline, 'inc-1', 'public.t', 1);
    await store.close();
    opened.splice(opened.indexOf(store), 1);
    const again = await open();
    expect(again).not.toBe(store);
    expect(await again.getProgress(pipeline)).toEqual({ slotName: 'slot_a', incarnation: 'inc-1', durableLsn: HIGH, ackLsn: HIGH + 1n });
    expect((await again.getTables(pipeline, 'inc-1')).get('public.t')).toEqual({
      table: 'public.t',
      phase: 'snapshot',
      snapshotLsn: HIGH,
      rangeCount: 2,
      pagesPerRange: 8,
      rangesDone: new Set([1]),
    });
    await refusal(again.fenced(6n).recordDurable(pipeline, 'inc-1', HIGH + 5n, HIGH + 5n));
  });
});
