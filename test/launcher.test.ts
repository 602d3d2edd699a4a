/**
 * bin/floe, the `floe` command: it sets floe's memory defaults that only take effect before Node
 * starts, keeps the operator's own, and execs Node (same process, so signals reach floe). The bench
 * starts its floe processes with bench/launch-defaults.ts, which must say what the launcher does.
 * (What the defaults do to memory is measured in bench/, not here.)
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launcherDefaults } from '../bench/launch-defaults.js';

const LAUNCHER = resolve('bin/floe');
let dir: string;

interface Report {
  readonly pid: number;
  readonly execArgv: string[];
  readonly script: string;
  readonly arenaMax: string | null;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'floe-launcher-'));
  // Preloaded into the Node process the launcher starts: says, as it exits, how it was started.
  await writeFile(
    join(dir, 'report.cjs'),
    `process.on('exit', () => require('node:fs').writeFileSync(process.env.REPORT_FILE, JSON.stringify({ pid: process.pid,
      execArgv: process.execArgv, script: process.argv[1], arenaMax: process.env.MALLOC_ARENA_MAX ?? null })));`,
  );
  // As npm installs the command: a symlink in node_modules/.bin.
  await symlink(LAUNCHER, join(dir, 'floe'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function launch(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; pid: number; report: Report }> {
  const reportFile = join(dir, `report-${Math.random().toString(36).slice(2)}.json`);
  const base = { ...process.env };
  delete base.MALLOC_ARENA_MAX;
  delete base.NODE_OPTIONS;
  const preload = `--require ${join(dir, 'report.cjs')}`;
  const childEnv = { ...base, ...env, REPORT_FILE: reportFile, NODE_OPTIONS: `${preload} ${env.NODE_OPTIONS ?? ''}`.trim() };
  const child = spawn(join(dir, 'floe'), ['--help'], { env: childEnv, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  const code = await new Promise<number | null>((done) => child.on('exit', (c) => done(c)));
  const report = JSON.parse(await readFile(reportFile, 'utf8')) as Report;
  return { code, stdout, pid: child.pid!, report };
}

describe('bin/floe', () => {
  it('runs floe in its own process with two arenas and 8 MB semi-spaces, as the bench does', async () => {
    const run = await launch({});
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: floe');
    // exec, not a child: the process the operator signals is floe itself.
    expect(run.report.pid).toBe(run.pid);
    // Found through the symlink, as from node_modules/.bin.
    expect(run.report.script).toBe(resolve('bin/floe.js'));
    expect(run.report.execArgv).toEqual(['--max-semi-space-size=8']);
    expect(run.report.arenaMax).toBe('2');
    const bench = launcherDefaults({});
    expect(run.report.execArgv).toEqual(bench.execArgv);
    expect(run.report.arenaMax).toBe(bench.env.MALLOC_ARENA_MAX);
  });

  it("keeps the operator's own MALLOC_ARENA_MAX and semi-space size", async () => {
    const own = await launch({ MALLOC_ARENA_MAX: '8', NODE_OPTIONS: '--max-semi-space-size=32' });
    expect(own.code).toBe(0);
    expect(own.report.execArgv).toEqual([]);
    expect(own.report.arenaMax).toBe('8');
    const bench = launcherDefaults({ MALLOC_ARENA_MAX: '8', NODE_OPTIONS: '--max-semi-space-size=32' });
    expect(bench.execArgv).toEqual([]);
    expect(bench.env.MALLOC_ARENA_MAX).toBe('8');
  });
});
