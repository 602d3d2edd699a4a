/** Flag value parsers shared by the commands: each names the flag in its error. */
import { InvalidArgumentError } from 'commander';

function numberArgument(what: string, ok: (n: number) => boolean, expected: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !ok(n)) throw new InvalidArgumentError(`${what} must be ${expected}`);
    return n;
  };
}

export const positiveInt = (what: string) => numberArgument(what, (n) => Number.isInteger(n) && n > 0, 'a positive integer');
export const nonNegativeInt = (what: string) => numberArgument(what, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
export const nonNegativeNumber = (what: string) => numberArgument(what, (n) => Number.isFinite(n) && n >= 0, 'a number >= 0');
