/**
 * `floe replicate` serves the console read-only on its metrics port: the pipeline's figures need the
 * token (or --console-public-read), and every action is refused because there is no control plane.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { startFloe, type FloeProcess } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';

const cluster = testClusters()[0]!;
const TOKEN = randomBytes(24).toString('hex');

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('read-only console of floe replicate', () => {
  let db: TestDatabase;
  let p: FloeProcess | undefined;
  const dir = tempDir();

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'crep');
    await db.sql(
      `CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 10) g; CREATE PUBLICATION cp FOR TABLE t;`,
    );
  });
  afterAll(async () => {
    p?.kill('SIGKILL');
    await p?.exited;
    await db.dropSlot('cslot').catch(() => undefined);
    await db.drop();
    dir.remove();
  });

  it('shows the pipeline with the token and refuses actions', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}/api/v1`;
    p = startFloe(
      [
        ...[
          'replicate',
          '--source',
          db.url,
          '--publication',
          'cp',
          '--slot',
          'cslot',
          '--destination',
          `duckdb:${join(dir.path, 'r.duckdb')}`,
        ],
        ...['--metrics-port', String(port), '--batch-max-ms', '50', '--status-interval-ms', '200', '--monitor-interval', '0.5'],
      ],
      { FLOE_API_TOKEN: TOKEN },
    );
    const auth = { authorization: `Bearer ${TOKEN}` };
    const body = await waitFor(
      'the pipeline streaming in the console',
      async () => {
        const r = await fetch(`${base}/pipelines`, { headers: auth }).catch(() => undefined);
        const b = r?.ok ? ((await r.json()) as { pipelines: { name: string; state: string; slot: string }[] }) : undefined;
        return b?.pipelines[0]?.state === 'streaming' ? b : undefined;
      },
      60_000,
    );
    expect(body.pipelines).toEqual([expect.objectContaining({ name: 'cslot', slot: 'cslot', publication: 'cp' })]);
    expect((await fetch(`${base}/pipelines`)).status).toBe(401);
    expect(await (await fetch(`${base}/session`)).json()).toEqual({ token_configured: true, public_read: false, read_only: true });
    const action = await fetch(`${base}/pipelines/cslot/actions`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"action":"pause"}',
    });
    expect(action.status).toBe(405);
    expect(((await action.json()) as { error: { message: string } }).error.message).toBe('this console is read-only');
    await waitFor('the source in the console', async () => {
      const r = (await (await fetch(`${base}/monitor/sources`, { headers: auth })).json()) as { sources: { slots: { slot: string }[] }[] };
      return r.sources[0]?.slots.some((s) => s.slot === 'cslot');
    });
  });
});
