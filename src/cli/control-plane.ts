/** What the control-plane commands (migrate, source, destination, pipeline, status) share. */
import { Option } from 'commander';
import type pg from 'pg';
import { FloeError } from '../errors.js';
import { DATABASE_URL_ENV, connectControlPlane, controlPlaneError } from '../control/repository.js';

export function databaseUrlOption(): Option {
  return new Option('--database-url <url>', 'control-plane PostgreSQL URL (schema floe)').env(DATABASE_URL_ENV);
}

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Runs `fn` on one control-plane connection and closes it. Constraint violations from the database
 * (a row changed by someone else between our check and our write) become one-line config errors.
 */
export async function withControlPlane<T>(
  url: string | undefined,
  fn: (db: pg.Client) => Promise<T>,
  options: { migrating?: boolean } = {},
): Promise<T> {
  const db = await connectControlPlane(url, options);
  try {
    return await fn(db);
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (!(err instanceof FloeError) && code.startsWith('23')) {
      const e = err as { message: string; hint?: string };
      throw new FloeError('config', e.message, e.hint ? { hint: e.hint, cause: err } : { cause: err });
    }
    throw controlPlaneError(err);
  } finally {
    await db.end().catch(() => undefined);
  }
}

/** Runs statements in one transaction (all or nothing). */
export async function inTransaction<T>(db: pg.Client, fn: () => Promise<T>): Promise<T> {
  await db.query('BEGIN');
  try {
    const r = await fn();
    await db.query('COMMIT');
    return r;
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** A plain, left-aligned text table. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

export function notFound(kind: 'source' | 'destination' | 'pipeline', name: string): FloeError {
  return new FloeError('config', `no ${kind} named "${name}"`, { hint: `floe ${kind} list shows the ${kind}s` });
}
