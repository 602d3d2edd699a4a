/**
 * The order of a DuckDB destination's transactions (Turns): moves of snapshot ranges run beside one another
 * up to a limit, everything else alone, each in the order it asked.
 */
import { describe, it, expect } from 'vitest';
import { Turns } from '../src/destination/duckdb/turns.js';

/** A transaction the test ends when it likes; `started` says whether it has begun. */
function transaction(log: string[], name: string) {
  let end!: (err?: Error) => void;
  const t = {
    started: false,
    run: () => {
      t.started = true;
      log.push(`${name} starts`);
      return new Promise<void>((resolve, reject) => (end = (err) => (err ? reject(err) : resolve()))).finally(() =>
        log.push(`${name} ends`),
      );
    },
    end: (err?: Error) => end(err),
  };
  return t;
}

/** Lets every promise ready to settle do so (each turn takes a few microtasks and no timer). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('Turns', () => {
  it('runs moves beside one another up to the limit, and asks the limit again when woken', async () => {
    let limit = 1;
    const turns = new Turns(() => limit);
    const log: string[] = [];
    const [a, b, c] = ['a', 'b', 'c'].map((n) => transaction(log, n));
    const runs = [turns.beside(a!.run), turns.beside(b!.run), turns.beside(c!.run)];
    await settle();
    expect([a!.started, b!.started]).toEqual([true, false]);
    // A range's copy ended: two may run now.
    limit = 2;
    turns.wake();
    await settle();
    expect([b!.started, c!.started]).toEqual([true, false]);
    a!.end();
    await settle();
    expect(c!.started).toBe(true);
    b!.end();
    c!.end();
    await Promise.all(runs);
    expect(log).toEqual(['a starts', 'b starts', 'a ends', 'c starts', 'b ends', 'c ends']);
  });

  it('runs a transaction that runs alone after the moves under way, and the moves asked after it once it has ended', async () => {
    const turns = new Turns(() => 2);
    const log: string[] = [];
    const [a, b, reset, c] = ['a', 'b', 'reset', 'c'].map((n) => transaction(log, n));
    const runs = [turns.beside(a!.run), turns.beside(b!.run), turns.alone(reset!.run), turns.beside(c!.run)];
    await settle();
    expect([a!.started, b!.started, reset!.started]).toEqual([true, true, false]);
    a!.end();
    await settle();
    expect(reset!.started).toBe(false);
    b!.end();
    await settle();
    expect([reset!.started, c!.started]).toEqual([true, false]);
    reset!.end();
    await settle();
    expect(c!.started).toBe(true);
    c!.end();
    await Promise.all(runs);
    expect(log).toEqual(['a starts', 'b starts', 'a ends', 'b ends', 'reset starts', 'reset ends', 'c starts', 'c ends']);
  });

  it('hands a failed move its error and goes on with the next; idle waits for the moves under way', async () => {
    const turns = new Turns(() => 2);
    const log: string[] = [];
    const [a, b] = ['a', 'b'].map((n) => transaction(log, n));
    const failed = turns.beside(a!.run);
    const next = turns.beside(b!.run);
    let idle = false;
    const idling = turns.idle().then(() => (idle = true));
    await settle();
    a!.end(new Error('out of disk'));
    await expect(failed).rejects.toThrow('out of disk');
    await settle();
    expect(idle).toBe(false);
    b!.end();
    await next;
    await idling;
    expect(idle).toBe(true);
    expect(await turns.alone(async () => 'after')).toBe('after');
  });
});
