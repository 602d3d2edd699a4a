/**
 * A real `redis-server` (the system binary, found on PATH) for the tests: a free port on 127.0.0.1, a
 * temporary data directory, RDB snapshots off and the append-only file on, as floe's docs tell operators
 * to run it. The global setup starts one shared instance (`inject('redisUrl')`); a test that needs to
 * restart Redis starts its own with `startRedis()` so the shared one stays stable for everyone else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/postgres/local-cluster.js';

export interface RunningRedis {
  readonly port: number;
  readonly dataDir: string;
  readonly url: string;
  /** Graceful stop (SIGTERM: Redis flushes the append-only file) and start again on the same port and data. */
  restart(): Promise<void>;
  /** Stops the server (gracefully) without removing its data. */
  stopServer(): Promise<void>;
  /** Starts the server again after `stopServer()`. */
  startServer(): Promise<void>;
  /** Stops the server and removes its data directory. */
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RunningRedis> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'floe-redis-'));
  let child: ChildProcess | undefined = await launch(port, dataDir);
  const stopServer = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c) await terminate(c);
  };
  const startServer = async (): Promise<void> => {
    if (!child) child = await launch(port, dataDir);
  };
  return {
    port,
    dataDir,
    url: `redis://127.0.0.1:${port}`,
    stopServer,
    startServer,
    async restart() {
      await stopServer();
      await startServer();
    },
    async stop() {
      await stopServer();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function launch(port: number, dataDir: string): Promise<ChildProcess> {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dataDir,
    '--save',
    '',
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--daemonize',
    'no',
    '--logfile',
    '',
  ];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`redis-server did not start on port ${port}:\n${output}`)), 20_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        // Keep draining so a chatty server never blocks on a full pipe.
        child.stdout?.resume();
        resolve();
      }
    };
    const fail = (err: Error): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', (err) => fail(new Error(`cannot run redis-server (apt-get install redis-server): ${err.message}`)));
    child.once('exit', (code) => fail(new Error(`redis-server exited with code ${code}:\n${output}`)));
  });
  child.removeAllListeners('exit');
  child.removeAllListeners('error');
  return child;
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
