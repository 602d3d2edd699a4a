/**
 * Where an in-memory DuckDB database spills what does not fit its memory_limit. DuckDB's default for
 * ':memory:' is `.tmp` in the process's working directory, shared by every in-memory database of the
 * process (two pipelines of one worker with `duckdb::memory:`, the emulator beside a destination) and of
 * any other process started in the same directory: both spilling at once was an IO error, and the files
 * outlived the process. So each in-memory database gets a directory of its own, under FLOE_SPOOL_DIR (else
 * the OS temp directory) like floe's other spill files, removed when the database closes. A database file
 * spills beside itself (`<file>.tmp`), which is its own already.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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
  const root = spoolRoot();
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

const spoolRoot = (): string => process.env.FLOE_SPOOL_DIR || tmpdir();

/** The start of every load directory's name of the database file at `path` (see loadDirectoryPrefix). */
const fileLoadPrefix = (path: string): string =>
  `floe-duckdb-load-${createHash('sha256').update(resolve(path)).digest('hex').slice(0, 16)}-`;

/**
 * How a DuckDB destination names the directories of its snapshot range files and batch files. Those of a
 * database file are named after the file and the process, so that the next process to open the file can
 * remove what one killed while loading left behind (removeLeftLoadDirectories). An in-memory database's
 * are not: no later process opens it.
 */
export function loadDirectoryPrefix(path: string): string {
  return path === ':memory:' ? 'floe-duckdb-load-' : `${fileLoadPrefix(path)}${process.pid}-`;
}

/**
 * Removes the load directories of the database file at `path` that other processes made; returns how
 * many. Called holding DuckDB's lock on the file: no other live process writes it, so no other process's
 * directory for it is still in use. This process's own are left alone (another destination of it may be
 * using one).
 */
export function removeLeftLoadDirectories(path: string): number {
  if (path === ':memory:') return 0;
  const root = spoolRoot();
  const prefix = fileLoadPrefix(path);
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return 0; // no spool directory yet: nothing was left in it
  }
  let removed = 0;
  for (const name of names.filter((n) => n.startsWith(prefix) && !n.startsWith(`${prefix}${process.pid}-`))) {
    try {
      rmSync(join(root, name), { recursive: true, force: true });
      removed++;
    } catch {
      // Not floe's to remove (another user's, by the look of it): leave it.
    }
  }
  return removed;
}
