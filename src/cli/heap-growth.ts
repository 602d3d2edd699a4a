import v8 from 'node:v8';
import { FloeError } from '../errors.js';

/**
 * How far V8 lets the old generation grow past the data that survived the last full collection, in
 * percent. V8's own factor goes up to 4× when allocation is fast, which floe's is (every row is decoded,
 * batched and encoded): 39 MB of live data let the process reach 350–470 MB RSS in the Snowflake
 * benchmark. At 50 % it stayed at 224–227 MB for about 10 % more CPU (bench/README.md, "rows as bytes and heap growth").
 * Unlike `--max-old-space-size` this is no limit: a process with more live data (a huge row) gets a
 * larger heap, not a crash.
 */
export const DEFAULT_HEAP_GROWING_PERCENT = 50;

/** Applies FLOE_HEAP_GROWING_PERCENT (0: V8's own heuristics); returns the percent in effect. */
export function applyHeapGrowth(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.FLOE_HEAP_GROWING_PERCENT?.trim();
  const percent = raw === undefined || raw === '' ? DEFAULT_HEAP_GROWING_PERCENT : Number(raw);
  if (!Number.isInteger(percent) || percent < 0 || percent > 1000) {
    throw new FloeError('config', `FLOE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000, not ${JSON.stringify(raw)}`, {
      hint: 'unset it for the default (50), or set 0 to leave heap growth to V8',
    });
  }
  // V8 reads the flag each time it sets the next collection's limit, so setting it at start-up takes
  // effect (unlike the heap size limits, which are fixed when the heap is created).
  if (percent > 0) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  return percent;
}
