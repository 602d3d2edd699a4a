/**
 * `floe demo --destination snowflake --once --verify --json`: embedded PostgreSQL, the Snowflake emulator
 * in the same process with a generated key, Snowpipe Streaming into the journals and MERGE into the
 * targets; every table compared through the emulator ends with zero mismatches, and the query command
 * the demo prints works as printed.
 */
import { describe, it, expect } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from './helpers/pipeline.js';
import { waitFor } from './helpers/wait.js';
import { availableMajors } from '../src/postgres/local-cluster.js';
import type { TableVerifyResult } from '../src/pipeline/verify.js';

const major = availableMajors()[0]!;

describe(`floe demo --destination snowflake on PostgreSQL ${major}`, () => {
  it('replicates through the emulator with zero mismatches and says how to look at the data', async () => {
    const dir = tempDir('floe-demo-sf-');
    try {
      const data = join(dir.path, 'sf.duckdb');
      const args = ['demo', '--destination', 'snowflake', '--once', '--verify', '--json', '--seed-rows', '300', '--transactions', '100'];
      // Run it in the background to read the read-only console while the demo runs.
      const child = spawn(process.execPath, ['bin/floe.js', ...args, '--rate', '50', '--data', data, '--pg-major', String(major)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      const consoleUrl = await waitFor(
        'the console URL',
        () => /floe demo: console at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr)?.[1],
        60_000,
      );
      const pipelines = await waitFor('the demo pipeline in the console', async () => {
        const res = await fetch(`${consoleUrl}api/v1/pipelines`);
        const body = (await res.json()) as { pipelines: { name: string; state: string }[] };
        return body.pipelines.find((p) => p.state === 'streaming') ? body : undefined;
      });
      expect(pipelines.pipelines.map((p) => p.name)).toEqual(['floe_demo']);
      // Read-only: no action, even with a token-less public console.
      const action = await fetch(`${consoleUrl}api/v1/pipelines/floe_demo/actions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"action":"pause"}',
      });
      expect(action.status).toBe(401);
      const r = { code: await exited, stdout, stderr };
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(1);
      const summary = JSON.parse(lines[0]!);
      expect(summary).toMatchObject({ destination: 'snowflake', mismatches: 0, verified: true, data });
      expect(summary.tables.map((t: TableVerifyResult) => t.table)).toEqual(['shop.customers', 'shop.orders', 'shop.events']);
      for (const t of summary.tables as TableVerifyResult[]) {
        expect(t.sourceRows).toBeGreaterThan(0);
        expect(t.targetRows).toBe(t.sourceRows);
      }
      expect(summary.streaming.changes).toBeGreaterThanOrEqual(500);
      const query = /^ {2}query: {4}(.*)$/m.exec(r.stderr)?.[1];
      expect(query, r.stderr).toMatch(/^node --input-type=module -e /);
      const out = execFileSync('sh', ['-c', query!], { encoding: 'utf8' });
      expect(out).toMatch(/CUSTOMER_ID/);
      expect(out).toMatch(/_FLOE_LSN/);
      expect(r.stderr).toContain(`  console:  ${consoleUrl} (while the demo runs)`);
    } finally {
      dir.remove();
    }
  });
});
