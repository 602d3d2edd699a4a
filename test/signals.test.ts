/**
 * The first SIGTERM stops floe within a bounded time, even while a destination's setup is being retried
 * (here: Snowflake answering 503 to everything), and the reason it was slow is in the log.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startFloe } from './helpers/cli.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { waitFor } from './helpers/wait.js';
import { onShutdownSignal } from '../src/cli/signals.js';

const cluster = testClusters()[0]!;

describe('shutdown signals', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    sf = await snowflakeFixture();
    db = await createTestDatabase(cluster, 'sig');
    await db.sql(`CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); CREATE PUBLICATION pub FOR TABLE t`);
  });
  afterAll(async () => {
    await db?.dropSlot('floe_sig').catch(() => undefined);
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('a first SIGTERM during retried Snowflake setup ends floe within the grace period', async () => {
    sf.emulator.faults.set({ outage: { mode: 'http503' } });
    const p = startFloe(
      ['replicate', '--source', db.url, '--publication', 'pub', '--slot', 'floe_sig', '--state', 'memory', '--metrics-port', '0'].concat([
        '--destination',
        sf.url(),
      ]),
      { FLOE_SHUTDOWN_GRACE_MS: '2000', FLOE_LOG_LEVEL: 'info' },
    );
    try {
      await waitFor('slot created, destination setup under way', async () => p.stderr().includes('replication slot created'), 60_000);
      const sent = Date.now();
      p.kill('SIGTERM');
      const exit = await p.exited;
      // 2 s of grace, plus a loaded machine's scheduling.
      expect(Date.now() - sent).toBeLessThan(15_000);
      expect(exit.stderr).toMatch(/SIGTERM received, draining/);
      expect(exit.code === 0 || /not stopped 2 s after SIGTERM; exiting/.test(exit.stderr), exit.stderr.slice(-2000)).toBe(true);
    } finally {
      p.kill('SIGKILL');
      await p.exited;
      sf.emulator.faults.clear();
    }
  });

  it('the deadline fires only after a first signal, and a second signal exits at once', async () => {
    const exits: number[] = [];
    let stops = 0;
    const release = onShutdownSignal(() => stops++, { graceMs: 100, exit: (code) => exits.push(code) });
    try {
      await new Promise((r) => setTimeout(r, 150));
      expect(exits).toEqual([]);
      process.emit('SIGTERM', 'SIGTERM');
      expect(stops).toBe(1);
      await waitFor('deadline', async () => exits.length > 0, 5000);
      expect(exits).toEqual([1]);
      process.emit('SIGINT', 'SIGINT');
      expect(exits).toEqual([1, 130]);
    } finally {
      release();
    }
  });
});
