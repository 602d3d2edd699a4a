/**
 * `floe emulator` in its own process for the benchmarks, so that its DuckDB work never shares floe's event
 * loop or CPU accounting. It gets a fresh RSA key pair (user BENCH), a random admin token and an in-memory
 * database; `sql` runs statements through the real SQL API v2 with the key-pair JWT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { KeyPairAuth } from '../src/destination/snowflake/auth.js';

export interface EmulatorProcess {
  readonly url: string;
  readonly account: string;
  readonly user: string;
  /** PKCS#8 PEM file of the user's private key. */
  readonly keyFile: string;
  readonly adminToken: string;
  readonly pid: number;
  /** CPU seconds (user + system, all threads) the emulator process has used so far (Linux /proc). */
  cpuSeconds(): number;
  /** A key-pair JWT for the user. */
  jwt(): string;
  /** Runs one statement through the SQL API; returns its rows (one partition, which is all the benches need). */
  sql(statement: string): Promise<(string | null)[][]>;
  /** Batches the emulator committed, and those it loaded by SQL alone rather than row by row in JavaScript (src/emulator/ndjson-body.ts). */
  batches(): Promise<{ committed: number; loadedBySql: number }>;
  close(): Promise<void>;
}

export interface EmulatorProcessOptions {
  readonly work: string;
  readonly commitDelayMs: number;
  readonly commitJitterMs?: number;
  /** Append requests per second per channel before 429 (Default: 10, Snowflake's documented limit). */
  readonly channelRps?: number;
}

const ACCOUNT = 'EMULATOR';
const USER = 'BENCH';

export async function spawnEmulator(o: EmulatorProcessOptions): Promise<EmulatorProcess> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(o.work, 'bench_key.p8');
  const pubFile = join(o.work, 'bench_key.pub');
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(pubFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const adminToken = randomBytes(24).toString('base64url');
  const args = [
    'bin/floe.js',
    'emulator',
    '--port=0',
    '--data=:memory:',
    `--account=${ACCOUNT}`,
    `--user=${USER}=${pubFile}`,
    `--commit-delay-ms=${o.commitDelayMs}`,
    `--channel-rps=${o.channelRps ?? 10}`,
    ...(o.commitJitterMs ? [`--commit-jitter-ms=${o.commitJitterMs}`] : []),
  ];
  const prof = process.env.FLOE_BENCH_EMULATOR_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.FLOE_BENCH_EMULATOR_PROFILE}`] : [];
  // FLOE_BENCH_EMULATOR_CHECKOUT runs another checkout's emulator (before/after comparisons).
  const child = spawn(process.execPath, [...prof, ...args], {
    cwd: process.env.FLOE_BENCH_EMULATOR_CHECKOUT,
    env: { ...process.env, FLOE_EMULATOR_ADMIN_TOKEN: adminToken },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await listeningUrl(child);
  const auth = new KeyPairAuth({ account: ACCOUNT, user: USER, privateKey });
  const jwt = () => auth.token();
  return {
    url,
    account: ACCOUNT,
    user: USER,
    keyFile,
    adminToken,
    pid: child.pid!,
    jwt,
    cpuSeconds: () => processCpuSeconds(child.pid!),
    sql: async (statement) => runSql(url, jwt(), statement),
    async batches() {
      const res = await fetch(`${url}/_emulator/state`, { headers: { authorization: `Bearer ${adminToken}` } });
      const { channels } = (await res.json()) as { channels: { batchesCommitted: number; sqlBatches: number }[] };
      return {
        committed: channels.reduce((n, c) => n + c.batchesCommitted, 0),
        loadedBySql: channels.reduce((n, c) => n + c.sqlBatches, 0),
      };
    },
    async close() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

function processCpuSeconds(pid: number): number {
  // Fields 14 and 15 of /proc/<pid>/stat (utime, stime) in clock ticks; the command name may hold spaces.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Waits for the banner line `... listening on http://host:port`. */
async function listeningUrl(child: ChildProcess): Promise<string> {
  let seen = '';
  return new Promise<string>((resolve, reject) => {
    const onData = (b: Buffer) => {
      seen += b.toString('utf8');
      const m = /listening on (http:\/\/\S+)/.exec(seen);
      if (m) {
        child.stdout!.off('data', onData);
        child.stdout!.resume(); // keep draining so the child never blocks on a full pipe
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`floe emulator exited with ${code} before listening`)));
  });
}

async function runSql(url: string, jwt: string, statement: string): Promise<(string | null)[][]> {
  const res = await fetch(`${url}/api/v2/statements`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${jwt}`,
      'content-type': 'application/json',
      accept: 'application/json',
      'user-agent': 'floe-bench/1',
    },
    body: JSON.stringify({ statement, warehouse: 'COMPUTE_WH', timeout: 600 }),
  });
  const body = (await res.json()) as { data?: (string | null)[][]; message?: string };
  if (res.status !== 200) throw new Error(`SQL API ${res.status}: ${body.message ?? ''} (${statement.slice(0, 80)})`);
  return body.data ?? [];
}
