/**
 * Where an in-memory DuckDB database spills what does not fit its memory_limit. DuckDB's default for
 * ':memory:' is `.tmp` in the process's working directory, shared by every in-memory database of the
 * process (two pipelines of one worker with `duckdb::memory:`, the emulator beside a destination) and of
 * any other process started in the same directory: both spilling at once was an IO error, and the files
 * outlived the process. So each in-memory database gets a directory of its own, under FLOE_SPOOL_DIR (else
 * the OS temp directory) like floe's other spill files, removed when the database closes. A database file
 * spills beside itself (`<file>.tmp`), which is its own already.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FloeError } from '../../errors.js';

export interface SpillDirectory {
  /** DuckDB options to open the database with: `temp_directory`, for an in-memory one. */
  readonly options: Readonly<Record<string, string>>;
  /** Removes the directory (after the database closed). */
  remove(): void;
}

export function spillDirectory(path: string): SpillDirectory {
  if (path !== ':memory:') return { options: {}, remove: () => undefined };
  const dir = ownDirectory('floe-duckdb-spill-', 'a DuckDB spill directory');
  return { options: { temp_directory: dir.path }, remove: dir.remove };
}

/**
 * A directory of floe's own (mode 0700) under FLOE_SPOOL_DIR, else the OS temp directory: DuckDB's spill
 * files of an in-memory database, and the snapshot range files the DuckDB destination has DuckDB read.
 */
export function ownDirectory(prefix: string, what: string): { readonly path: string; remove(): void } {
  const root = process.env.FLOE_SPOOL_DIR || tmpdir();
  let dir: string;
  try {
    dir = mkdtempSync(join(root, prefix));
  } catch (err) {
    throw new FloeError('config', `cannot create ${what} in ${root}: ${(err as Error).message}`, {
      hint: 'set FLOE_SPOOL_DIR to a writable local directory',
      cause: err,
    });
  }
  return { path: dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
