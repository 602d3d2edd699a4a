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

  it.each([
    ['failing (503 on every call)', () => sf.url(), /503|Service temporarily unavailable/],
    ['unreachable (connection refused)', () => sf.url().replace(/base_url=[^&]+/, 'base_url=http://127.0.0.1:1'), /ECONNREFUSED/],
  ])(
    'a first SIGTERM while Snowflake setup is retried, Snowflake %s, stops floe at once; the log names the cause',
    async (_what, url, cause) => {
      sf.emulator.faults.set({ outage: { mode: 'http503' } });
      const p = startFloe(
        ['replicate', '--source', db.url, '--publication', 'pub', '--slot', 'floe_sig', '--state', 'memory', '--metrics-port', '0'].concat([
          '--destination',
          url(),
        ]),
        // The grace deadline is far: stopping must not depend on it.
        { FLOE_SHUTDOWN_GRACE_MS: '60000', FLOE_LOG_LEVEL: 'info' },
      );
      try {
        await waitFor('setup retried', async () => p.stderr().includes('Snowflake call failed; retrying'), 60_000);
        const sent = Date.now();
        p.kill('SIGTERM');
        const exit = await p.exited;
        // Well under the deadline, even on a loaded machine.
        expect(Date.now() - sent).toBeLessThan(15_000);
        expect(exit.stderr).toMatch(/SIGTERM received, draining/);
        expect(exit.code, exit.stderr.slice(-2000)).toBe(0);
        const retries = exit.stderr.split('\n').filter((l) => l.includes('Snowflake call failed; retrying'));
        expect(retries.length).toBeGreaterThan(0);
        for (const line of retries) expect(line).toMatch(cause);
        // The slot this first start created was dropped: nothing was copied under it.
        expect(await db.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'floe_sig'`)).toEqual([]);
      } finally {
        p.kill('SIGKILL');
        await p.exited;
        sf.emulator.faults.clear();
      }
    },
  );

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
