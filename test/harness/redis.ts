/**
 * A real `redis-server` (the system binary, found on PATH) for the tests: a free port on 127.0.0.1, a
 * temporary data directory, RDB snapshots off and the append-only file on, as floe's docs tell operators
 * to run it. The global setup starts one shared instance (`inject('redisUrl')`); a test that needs to
 * restart Redis starts its own with `startRedis()` so the shared one stays stable for everyone else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
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

export interface StartRedisOptions {
  /** A one-node Redis Cluster that serves every hash slot (so the Cluster client and its rules are used). */
  readonly cluster?: boolean;
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RunningRedis> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'floe-redis-'));
  // A short node timeout: a fresh one-node Cluster reports cluster_state:ok only after a rejoin delay
  // derived from it (seconds with the default 15 s). A lone node does not know its own address (peers
  // tell it), so it is announced, or CLUSTER SLOTS names no host.
  const extra = options.cluster
    ? [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dataDir, 'nodes.conf'),
        '--cluster-node-timeout',
        '1000',
        '--cluster-announce-ip',
        '127.0.0.1',
      ]
    : [];
  const launch = (): Promise<ChildProcess> => launchServer(['--port', String(port), '--dir', dataDir, ...extra], port);
  let child: ChildProcess | undefined = await launch();
  if (options.cluster) await assignAllSlots(port);
  const stopServer = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c) await terminate(c);
  };
  const startServer = async (): Promise<void> => {
    if (!child) child = await launch();
  };
  return {
    port,
    dataDir,
    url: `${options.cluster ? 'redis-cluster' : 'redis'}://127.0.0.1:${port}`,
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

/** A Sentinel that monitors `primary` under the name `floe-primary`; its URL is redis+sentinel://. */
export async function startSentinel(primary: RunningRedis): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'floe-sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  // Sentinel rewrites its configuration file, so it must be a writable file of its own.
  writeFileSync(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor floe-primary 127.0.0.1 ${primary.port} 1\n`);
  const child = await launchServer([conf, '--sentinel'], port, 'sentinel');
  return {
    url: `redis+sentinel://127.0.0.1:${port}/floe-primary`,
    async stop() {
      await terminate(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function assignAllSlots(port: number): Promise<void> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  try {
    await client.connect();
    await client.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    const deadline = Date.now() + 20_000;
    for (;;) {
      const info = String(await client.call('CLUSTER', 'INFO'));
      if (info.includes('cluster_state:ok')) return;
      if (Date.now() > deadline) throw new Error(`the one-node Redis Cluster on port ${port} did not become ready:\n${info}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    client.disconnect();
  }
}

async function launchServer(first: string[], port: number, kind: 'server' | 'sentinel' = 'server'): Promise<ChildProcess> {
  const args = [...first, '--bind', '127.0.0.1', '--daemonize', 'no', '--logfile', ''];
  if (kind === 'server') args.push('--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec');
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`redis-server did not start on port ${port}:\n${output}`)), 20_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes(kind === 'server' ? 'Ready to accept connections' : '+monitor master')) {
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
