/**
 * `floe demo --destination snowflake --once --verify --json`: embedded PostgreSQL, the Snowflake emulator
 * in the same process with a generated key, Snowpipe Streaming into the journals and MERGE into the
 * targets; every table compared through the emulator ends with zero mismatches, and the query command
 * the demo prints works as printed.
 */
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from './helpers/pipeline.js';
import { runFloe } from './helpers/cli.js';
import { availableMajors } from '../src/postgres/local-cluster.js';
import type { TableVerifyResult } from '../src/pipeline/verify.js';

const major = availableMajors()[0]!;

describe(`floe demo --destination snowflake on PostgreSQL ${major}`, () => {
  it('replicates through the emulator with zero mismatches and says how to look at the data', async () => {
    const dir = tempDir('floe-demo-sf-');
    try {
      const data = join(dir.path, 'sf.duckdb');
      const args = ['demo', '--destination', 'snowflake', '--once', '--verify', '--json', '--seed-rows', '300', '--transactions', '100'];
      const r = await runFloe([...args, '--rate', '0', '--data', data, '--pg-major', String(major)], {}, 120_000);
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
    } finally {
      dir.remove();
    }
  });
});
