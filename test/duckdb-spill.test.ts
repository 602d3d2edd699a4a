/**
 * In-memory DuckDB databases spill into directories of their own (src/destination/duckdb/spill-directory.ts).
 * DuckDB's default for ':memory:' is `.tmp` in the working directory, shared by every in-memory database of
 * the process and of any process started there; floe's destination and the emulator both open such
 * databases, and two pipelines of one worker can.
 */
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { SqlEngine } from '../src/emulator/sql/engine.js';

async function spillDir(d: DuckDbDestination): Promise<string> {
  const [[dir]] = (await d.query("SELECT current_setting('temp_directory')")) as [[string]];
  return dir;
}

describe('DuckDB spill directories', () => {
  it('gives each in-memory destination a directory of its own under the temp directory, removed at close', async () => {
    const [a, b] = [
      new DuckDbDestination({ path: ':memory:', memoryLimit: '32MB' }),
      new DuckDbDestination({ path: ':memory:', memoryLimit: '32MB' }),
    ];
    await a.open('p1', 'i');
    await b.open('p2', 'i');
    const dirs = [await spillDir(a), await spillDir(b)];
    try {
      expect(dirs[0]).not.toBe(dirs[1]);
      for (const dir of dirs) {
        expect(isAbsolute(dir)).toBe(true);
        expect(relative(tmpdir(), dir).startsWith('..')).toBe(false);
        expect(existsSync(dir)).toBe(true);
      }
      // Both spill at once: sorts far larger than 32MB, each checked.
      const sort = 'SELECT count(*), sum(i) FROM (SELECT i, md5(i::VARCHAR) AS h FROM range(1500000) r(i) ORDER BY h)';
      const results = await Promise.all([a.query(sort), b.query(sort)]);
      for (const r of results) expect(r).toEqual([[1500000n, 1124999250000n]]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    for (const dir of dirs) expect(existsSync(dir)).toBe(false);
  });

  it("gives the emulator's in-memory database a directory of its own, removed at close", async () => {
    const engine = await SqlEngine.open(':memory:', 'EMULATOR', []);
    const conn = await engine.connect();
    const [[dir]] = (await conn.runAndReadAll("SELECT current_setting('temp_directory')")).getRows() as [[string]];
    conn.closeSync();
    expect(relative(tmpdir(), dir).startsWith('..')).toBe(false);
    expect(existsSync(dir)).toBe(true);
    engine.close();
    expect(existsSync(dir)).toBe(false);
  });

  it('names FLOE_SPOOL_DIR when it cannot create the spill directory, and leaves nothing open', async () => {
    const before = process.env.FLOE_SPOOL_DIR;
    process.env.FLOE_SPOOL_DIR = '/nonexistent/floe-spool';
    const d = new DuckDbDestination({ path: ':memory:' });
    try {
      await expect(d.open('p', 'i')).rejects.toThrow(/spill directory in \/nonexistent\/floe-spool.*ENOENT/);
      await expect(d.open('p', 'i')).rejects.toMatchObject({ hint: expect.stringMatching(/FLOE_SPOOL_DIR/) });
      await expect(SqlEngine.open(':memory:', 'EMULATOR', [])).rejects.toMatchObject({ hint: expect.stringMatching(/FLOE_SPOOL_DIR/) });
    } finally {
      if (before === undefined) delete process.env.FLOE_SPOOL_DIR;
      else process.env.FLOE_SPOOL_DIR = before;
      await d.close();
    }
  });

  it('leaves a database file spilling beside itself', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const work = mkdtempSync(join(tmpdir(), 'floe-spill-test-'));
    const d = new DuckDbDestination({ path: join(work, 'w.duckdb') });
    try {
      await d.open('p', 'i');
      expect(await spillDir(d)).toBe(join(work, 'w.duckdb.tmp'));
    } finally {
      await d.close();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
