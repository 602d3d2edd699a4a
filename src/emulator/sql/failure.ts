/**
 * A Snowflake SQL error as the SQL API reports it (code, SQLSTATE, message).
 * This is a wire value the emulator sends to its client, not a floe failure,
 * which is why it is not a FloeError.
 */
export class SqlFailure extends Error {
  constructor(
    readonly code: string,
    readonly sqlState: string,
    message: string,
  ) {
    super(message);
    this.name = 'SqlFailure';
  }

  /** `SQL compilation error: ...` (default code 001003 / 42000, Snowflake's syntax error). */
  static compilation(detail: string, code = '001003', sqlState = '42000'): SqlFailure {
    return new SqlFailure(code, sqlState, `SQL compilation error:\n${detail}`);
  }

  static unsupported(what: string, pos = 0): SqlFailure {
    return SqlFailure.compilation(`error line 1 at position ${pos}\nunsupported by the floe Snowflake emulator: ${what}`);
  }

  static notFound(object: string): SqlFailure {
    return SqlFailure.compilation(`Object '${object}' does not exist or not authorized.`, '002003', '42S02');
  }
}
