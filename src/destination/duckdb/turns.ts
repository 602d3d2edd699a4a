/**
 * The order in which a DuckDB destination's transactions run. Every transaction takes its turn in the
 * order it asked for one. Most run alone (`alone`): after every transaction before them has ended, and
 * before any after them starts. Moves of snapshot ranges into targets may run beside one another
 * (`beside`), up to a limit the destination sets from moment to moment, but never beside a transaction
 * that runs alone: a reset of a table or a batch of changes waits for the moves under way, and a move
 * waits for them.
 */
export class Turns {
  /** The last turn handed out: the next one starts once it has. */
  #chain: Promise<unknown> = Promise.resolve();
  /** Transactions running beside one another, each settling (never rejecting) once it has ended. */
  readonly #beside = new Set<Promise<void>>();
  /** Wakes the one transaction waiting for room beside the others (turns start one at a time). */
  #wake: (() => void) | undefined;
  readonly #limit: () => number;

  /** `limit`: how many may run beside one another now; asked again on every `wake()`. */
  constructor(limit: () => number) {
    this.#limit = limit;
  }

  /** Runs fn once every transaction before it has ended; none after it starts until it has. */
  alone<T>(fn: () => Promise<T>): Promise<T> {
    const run = async () => {
      await Promise.all(this.#beside);
      return fn();
    };
    const next = this.#chain.then(run, run);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  /**
   * Runs fn once the transactions before it have started (and those that run alone have ended) and
   * fewer than the limit run beside one another.
   */
  beside(fn: () => Promise<void>): Promise<void> {
    let done!: Promise<void>;
    const started = this.#chain.then(async () => {
      while (this.#beside.size >= Math.max(1, this.#limit())) await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
      done = fn();
      const ended = () => {
        this.#beside.delete(settled);
        this.wake();
      };
      const settled: Promise<void> = done.then(ended, ended);
      this.#beside.add(settled);
    });
    this.#chain = started.catch(() => undefined);
    return started.then(() => done);
  }

  /** Asks the limit again: a transaction waiting for room beside the others starts if there is some now. */
  wake(): void {
    this.#wake?.();
  }

  /** Settles once every transaction that has asked for a turn so far has ended. */
  async idle(): Promise<void> {
    await this.#chain.catch(() => undefined);
    await Promise.all(this.#beside);
  }
}
