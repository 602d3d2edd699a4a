/**
 * The web console in a real browser (Debian's chromium driven by playwright-core) against `floe run`,
 * a real control plane and source (PostgreSQL) and a DuckDB destination: the pipelines page shows a
 * running pipeline whose lag changes, an action without a token is refused, a resync clicked in the
 * browser re-snapshots the table and source and destination end equal, and nothing the browser received
 * holds a secret. With FLOE_CONSOLE_SCREENSHOTS=1 it writes the screenshots of docs/images/.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { startFloe, type FloeProcess } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { waitForSlotPastWrites } from './helpers/slot.js';
import { migrate } from '../src/control/schema.js';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { verifyDuckDb } from '../src/pipeline/verify.js';

const CHROMIUM = '/usr/bin/chromium';
const cluster = testClusters().at(-1)!;
const TOKEN = randomBytes(24).toString('hex');
const PASSWORD = `pw-${randomBytes(8).toString('hex')}`;
const ORDERS = 300;

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

describe.runIf(existsSync(CHROMIUM))(`web console in chromium, floe run on PostgreSQL ${cluster.major}`, () => {
  let control: TestDatabase;
  let source: TestDatabase;
  let db: pg.Pool;
  let worker: FloeProcess | undefined;
  let context: BrowserContext;
  let page: Page;
  let url: string;
  const dir = tempDir();
  const profile = mkdtempSync(join(tmpdir(), 'floe-chromium-'));
  const warehouse = join(dir.path, 'shop.duckdb');
  /** Every response body the browser received. */
  const received: string[] = [];
  const workload = new AbortController();
  let writing: Promise<void> | undefined;

  beforeAll(async () => {
    // The console under test is built from web/ now, not whatever dist/web holds.
    execFileSync(process.execPath, ['node_modules/vite/bin/vite.js', 'build', '--config', 'web/vite.config.ts', '--logLevel', 'warn']);
    control = await createTestDatabase(cluster, 'ctl');
    source = await createTestDatabase(cluster, 'shop');
    db = new pg.Pool({ connectionString: control.url, max: 2 });
    const c = await db.connect();
    await migrate(c);
    c.release();
    await source.sql(`CREATE TABLE orders (id serial PRIMARY KEY, amount int NOT NULL, note text);
      INSERT INTO orders (amount, note) SELECT g, 'order ' || g FROM generate_series(1, ${ORDERS}) g;
      CREATE TABLE customers (id int PRIMARY KEY, name text);
      INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g;
      CREATE PUBLICATION pub FOR TABLE orders, customers;`);
    // The test cluster trusts local connections: the password is only there to be kept secret.
    await db.query(
      `WITH s AS (INSERT INTO floe.source (name, url, password) VALUES ('shop', $1, 'env:FLOE_SECRET_CONSOLE_TEST') RETURNING id),
            d AS (INSERT INTO floe.destination (name, type, url) VALUES ('wh', 'duckdb', $2) RETURNING id)
       INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options, status)
       SELECT 'shop', s.id, d.id, 'pub', 'floe_shop', '{"batch_max_ms": 100, "merge_interval_ms": 300, "status_interval_ms": 500}', 'START' FROM s, d`,
      [source.url, `duckdb:${warehouse}`],
    );
    const port = await freePort();
    url = `http://127.0.0.1:${port}/`;
    worker = startFloe(
      [
        ...['run', '--worker-id', 'w1', '--poll-interval-ms', '500', '--metrics-port', String(port)],
        ...['--monitor-interval', '1', '--console-sample-interval', '1', '--console-public-read'],
      ],
      {
        FLOE_DATABASE_URL: control.url,
        FLOE_API_TOKEN: TOKEN,
        FLOE_SECRET_CONSOLE_TEST: PASSWORD,
        FLOE_LOG_LEVEL: process.env.FLOE_TEST_LOG ?? 'warn',
      },
    );
    await waitFor('the console to answer', async () => (await fetch(`${url}api/v1/session`).catch(() => undefined))?.ok, 60_000);
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 860 },
      args: [
        ...['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run'],
        ...['--disable-background-networking', '--disable-component-update', '--disable-sync'],
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('response', (r) => {
      void r
        .text()
        .then((t) => received.push(t))
        .catch(() => undefined);
    });
    // A steady trickle of changes, so lag moves.
    writing = (async () => {
      let i = 0;
      while (!workload.signal.aborted) {
        await source.sql(`UPDATE orders SET amount = amount + 1 WHERE id = $1`, [(i++ % ORDERS) + 1]);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  });

  afterAll(async () => {
    workload.abort();
    await writing?.catch(() => undefined);
    await context?.close().catch(() => undefined);
    worker?.kill('SIGKILL');
    await worker?.exited;
    await db?.end();
    await source?.dropSlot('floe_shop').catch(() => undefined);
    await source?.drop();
    await control?.drop();
    dir.remove();
    rmSync(profile, { recursive: true, force: true });
  });

  const cell = (field: string) => page.locator(`tr[data-pipeline="shop"] td[data-field="${field}"]`);

  it('lists the running pipeline with a lag that changes', async () => {
    await page.goto(url);
    await waitFor(
      'the pipeline to stream',
      async () => /streaming/.test((await page.locator('tr[data-pipeline="shop"]').textContent()) ?? ''),
      90_000,
    );
    const seen = new Set<string>();
    await waitFor(
      'the lag shown to change',
      async () => {
        seen.add((await cell('lag_bytes').textContent()) ?? '');
        return seen.size >= 2;
      },
      60_000,
    );
  });

  it('refuses an action without a token and changes nothing', async () => {
    await page.locator('tr[data-pipeline="shop"] button[data-action="pause"]').click();
    await waitFor('the confirmation', () => page.locator('#confirm').isVisible());
    await page.locator('#confirm-ok').click();
    await waitFor('the refusal', async () => /the API needs a token/.test((await page.locator('#notice').textContent()) ?? ''));
    expect((await db.query(`SELECT status FROM floe.pipeline WHERE name = 'shop'`)).rows).toEqual([{ status: 'START' }]);
  });

  it('shows the pipeline and source pages (screenshots with FLOE_CONSOLE_SCREENSHOTS=1)', async () => {
    await page.locator('#token').fill(TOKEN);
    await page.locator('#token-form button').click();
    const shots = process.env.FLOE_CONSOLE_SCREENSHOTS === '1';
    if (shots) await page.screenshot({ path: 'docs/images/console-pipelines.png' });
    await page.goto(`${url}#/pipelines/shop`);
    await waitFor('the table states', async () => (await page.locator('#tables tr[data-table="public.orders"]').count()) === 1, 60_000);
    await waitFor('a chart with samples', async () => (await page.locator('svg.chart path.line').count()) >= 1);
    if (shots) await page.screenshot({ path: 'docs/images/console-pipeline.png', fullPage: true });
    await page.goto(`${url}#/sources`);
    await waitFor(
      'the WAL monitor figures',
      async () => (await page.locator('section[data-source="shop"] td').filter({ hasText: 'floe_shop' }).count()) === 1,
      60_000,
    );
    if (shots) await page.screenshot({ path: 'docs/images/console-sources.png' });
  });

  it('re-snapshots a table resynced in the browser; source and destination end equal', async () => {
    const snapshotRows = async () => {
      const text = await (await fetch(`${url}metrics`)).text();
      const m = /^floe_snapshot_rows_total\{pipeline="shop"\} (\d+)/m.exec(text);
      return Number(m?.[1] ?? 0);
    };
    // The workload keeps updating orders through the resync: no update may be lost.
    const before = await snapshotRows();
    await page.goto(`${url}#/pipelines/shop`);
    await page.locator('#tables tr[data-table="public.orders"] button[data-action="resync"]').click();
    await waitFor('the confirmation', () => page.locator('#confirm').isVisible());
    expect(await page.locator('#confirm-text').textContent()).toBe('Really resync public.orders in pipeline shop?');
    await page.locator('#confirm-ok').click();
    await waitFor('the request to be accepted', async () => /requested/.test((await page.locator('#notice').textContent()) ?? ''));
    await waitFor('the table to be snapshotted again', async () => (await snapshotRows()) >= before + ORDERS, 90_000);
    await waitFor(
      'the resync to finish',
      async () =>
        (
          await db.query(
            `SELECT 1 FROM floe.pipeline_table t JOIN floe.pipeline p ON p.id = t.pipeline_id
              WHERE p.name = 'shop' AND t.table_name = 'public.orders' AND t.resync_requested_at IS NULL AND t.state = 'streaming'`,
          )
        ).rowCount === 1,
      90_000,
    );
    workload.abort();
    await writing;
    // Everything the workload wrote is durable once the slot confirms past it (floe confirms only what is).
    await waitForSlotPastWrites(source, 'floe_shop');
    // SIGTERM drains: everything received is written and merged before floe exits.
    worker!.kill('SIGTERM');
    expect((await worker!.exited).code).toBe(0);
    worker = undefined;
    const destination = new DuckDbDestination({ path: warehouse });
    await destination.open('verify', 'verify');
    try {
      const report = await verifyDuckDb({ url: source.url }, 'pub', destination);
      expect(report.tables.map((t) => [t.table, t.sourceRows, t.targetRows])).toEqual([
        ['public.customers', 20, 20],
        ['public.orders', ORDERS, ORDERS],
      ]);
      expect(report.mismatches, JSON.stringify(report.tables)).toBe(0);
    } finally {
      await destination.close();
    }
  });

  it('never received a secret', () => {
    const all = received.join('\n');
    expect(received.length).toBeGreaterThan(10);
    expect(all).not.toContain(PASSWORD);
    expect(all).not.toContain(TOKEN);
  });
});
