/**
 * FLOE_HEAP_GROWING_PERCENT: every floe command applies it at start-up, and a bad value stops floe with
 * one line before anything runs. (What the setting does to memory is measured in bench/, not here.)
 */
import { describe, it, expect } from 'vitest';
import { applyHeapGrowth, DEFAULT_HEAP_GROWING_PERCENT } from '../src/cli/heap-growth.js';
import { FloeError } from '../src/errors.js';
import { runFloe } from './helpers/cli.js';

describe('heap growth setting', () => {
  it('takes a whole percent from 0 (V8 decides) to 1000, and refuses anything else in one line', () => {
    expect(applyHeapGrowth({ FLOE_HEAP_GROWING_PERCENT: '0' })).toBe(0);
    expect(DEFAULT_HEAP_GROWING_PERCENT).toBe(50);
    for (const bad of ['abc', '-1', '2.5', '1001', '50%']) {
      let err: unknown;
      try {
        applyHeapGrowth({ FLOE_HEAP_GROWING_PERCENT: bad });
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(FloeError);
      expect((err as FloeError).kind).toBe('config');
      expect((err as FloeError).oneLine()).toMatch(/FLOE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000/);
    }
  });

  it('is applied by every command before it runs: a bad value stops floe with exit code 2', async () => {
    const bad = await runFloe(['--help'], { FLOE_HEAP_GROWING_PERCENT: 'lots' });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^floe: error: FLOE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000, not "lots"/);
    expect(bad.stdout).toBe('');
    const good = await runFloe(['--help'], { FLOE_HEAP_GROWING_PERCENT: '30' });
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('Usage: floe');
  });
});
