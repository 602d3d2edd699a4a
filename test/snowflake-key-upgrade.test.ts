/**
 * A Snowflake target created before `_FLOE_KEY` (issue 10 defect 5) gets the column at the next start,
 * filled from the journal, and keeps merging on it without duplicate rows.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { startPipeline } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { snowflakeFixture, type SnowflakeFixture } from './helpers/snowflake.js';
import { MemoryStateStore } from '../src/store/memory-store.js';

const cluster = testClusters()[0]!;
const TARGET = '"ANALYTICS"."PUBLIC"."PUBLIC_UP"';

describe('Snowflake targets from before _FLOE_KEY', () => {
  let db: TestDatabase;
  let sf: SnowflakeFixture;
  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'sfup');
    sf = await snowflakeFixture();
  });
  afterAll(async () => {
    await db?.drop();
    await sf?.emulator.close();
    sf?.dir.remove();
  });

  it('gets _FLOE_KEY filled from the journal and keeps merging without duplicates', async () => {
    await db.sql(`CREATE TABLE up (a int, b text, v text, PRIMARY KEY (a, b));
      INSERT INTO up SELECT g, 'k' || g, 'v' FROM generate_series(1, 30) g; CREATE PUBLICATION up_pub FOR TABLE up`);
    const store = new MemoryStateStore();
    const count = async (where = 'TRUE') => (await sf.rows(`SELECT COUNT(*) FROM ${TARGET} WHERE ${where}`))[0]![0];
    const run = async (body: () => Promise<void>) => {
      const destination = sf.destination();
      const p = startPipeline({ source: { url: db.url }, publication: 'up_pub', slotName: 'sfup_slot', destination, store });
      try {
        await body();
      } finally {
        await p.stop();
        await destination.close();
      }
    };
    try {
      await run(async () => {
        await waitFor('snapshot', async () => (await count().catch(() => '0')) === '30');
        await db.sql(`UPDATE up SET v = 'streamed' WHERE a <= 10`);
        await waitFor('stream', async () => (await count(`"V" = 'streamed'`)) === '10');
      });
      // What a target created by an earlier floe looks like.
      await sf.rows(`ALTER TABLE ${TARGET} DROP COLUMN "_FLOE_KEY"`);
      await db.sql(`UPDATE up SET v = 'after' WHERE a <= 20`);
      await run(async () => {
        await waitFor('after the upgrade', async () => (await count(`"V" = 'after'`)) === '20');
        expect(await count()).toBe('30');
        expect(await count(`"_FLOE_KEY" IS NULL`)).toBe('0');
        expect(await sf.rows(`SELECT "_FLOE_KEY" FROM ${TARGET} WHERE "A" = 7`)).toEqual([['1:72:k7']]);
      });
    } finally {
      await db.dropSlot('sfup_slot');
    }
  });
});
