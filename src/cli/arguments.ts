/** Flag value parsers shared by the commands: each names the flag in its error. */
import { InvalidArgumentError } from 'commander';

function numberArgument(what: string, ok: (n: number) => boolean, expected: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !ok(n)) throw new InvalidArgumentError(`${what} must be ${expected}`);
    return n;
  };
}

// Upper bounds catch typos and overflows (a 99999999999 ms interval would become Node's 1 ms timer).
export const positiveInt = (what: string, max = 2_147_483_647) =>
  numberArgument(what, (n) => Number.isInteger(n) && n > 0 && n <= max, `an integer from 1 to ${max}`);
export const nonNegativeInt = (what: string, max = 2_147_483_647) =>
  numberArgument(what, (n) => Number.isInteger(n) && n >= 0 && n <= max, `an integer from 0 to ${max}`);
export const nonNegativeNumber = (what: string, max = 2_147_483) =>
  numberArgument(what, (n) => Number.isFinite(n) && n >= 0 && n <= max, `a number from 0 to ${max}`);

/** Log levels pino knows; anything else is refused by the flag, not by pino's own message. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
