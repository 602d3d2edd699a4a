import pg from 'pg';
import { withTls } from './tls.js';

/**
 * A pg.Pool whose connection failures surface only as failed statements. The pool watches idle
 * clients, but a checked-out client between two statements (a transaction) is watched by no one: without
 * a listener of its own, a connection reset there would crash the process instead of failing the call.
 */
export function createPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(
    config.connectionString === undefined ? config : { ...config, connectionString: withTls(config.connectionString) },
  );
  pool.on('error', () => undefined); // an idle connection died; the next query gets a new one
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}
