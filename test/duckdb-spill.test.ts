/**
 * In-memory DuckDB databases spill into directories of their own (src/destination/duckdb/spill-directory.ts).
 * DuckDB's default for ':memory:' is `.tmp` in the working directory, shared by every in-memory database of
 * the process and of any process started there; floe's destination and the emulator both open such
 * databases, and two pipelines of one worker can.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DuckDbDestination } from '../src/destination/duckdb/duckdb-destination.js';
import { SqlEngine } from '../src/emulator/sql/engine.js';
import { memoryLog } from './helpers/pipeline.js';

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

  it('removes the range files of a process killed while loading when the database file is next opened', async () => {
    const spool = mkdtempSync(join(tmpdir(), 'floe-left-loads-'));
    const path = join(spool, 'w.duckdb');
    // A process loads a snapshot range into the file, is killed -9 while its rows still come, and so
    // leaves its range file behind.
    const code = `
      import { DuckDbDestination } from './src/destination/duckdb/duckdb-destination.ts';
      import { keyedTable, OID } from './test/helpers/schema.ts';
      const t = keyedTable('t', [['id', OID.INT4]]);
      const d = new DuckDbDestination({ path: ${JSON.stringify(path)} });
      await d.open('p', 'inc');
      await d.prepare(t);
      void d.writeSnapshotRange({ table: t, rangeIndex: 0, snapshotLsn: 1n }, (async function* () {
        yield [['1'], ['2']];
        process.stdout.write('loading\\n');
        await new Promise(() => undefined);
      })());`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      env: { ...process.env, FLOE_SPOOL_DIR: spool },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const before = process.env.FLOE_SPOOL_DIR;
    try {
      let out = '';
      for await (const chunk of child.stdout) if ((out += String(chunk)).includes('loading')) break;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      const left = readdirSync(spool).filter((n) => n.startsWith('floe-duckdb-load-'));
      expect(left).toHaveLength(1);
      // Another database's directory, whichever process made it, is not this file's to remove.
      mkdirSync(join(spool, 'floe-duckdb-load-0123456789abcdef-1-x'));
      writeFileSync(join(spool, 'floe-duckdb-load-0123456789abcdef-1-x', 'range-1.tsv'), '1\n');
      process.env.FLOE_SPOOL_DIR = spool;
      const log = memoryLog();
      const d = new DuckDbDestination({ path, log: log.log });
      await d.open('p', 'inc');
      await d.close();
      expect(readdirSync(spool).filter((n) => n.startsWith('floe-duckdb-load-'))).toEqual(['floe-duckdb-load-0123456789abcdef-1-x']);
      expect(log.tail()).toContain('removed range and batch files a stopped process left');
    } finally {
      child.kill('SIGKILL');
      if (before === undefined) delete process.env.FLOE_SPOOL_DIR;
      else process.env.FLOE_SPOOL_DIR = before;
      rmSync(spool, { recursive: true, force: true });
    }
  }, 60_000);
});
