/**
 * `floe emulator`: runs the local Snowflake emulator (src/emulator) until
 * SIGINT/SIGTERM. It is a development and test tool, and says so.
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { nonNegativeInt } from './arguments.js';
import { FloeError } from '../errors.js';
import { onShutdownSignal } from './signals.js';

interface EmulatorCliOptions {
  port: number;
  host: string;
  data: string;
  account: string;
  user: string[];
  warehouse: string[];
  commitDelayMs: number;
  commitJitterMs: number;
  adminToken?: string;
  channelRps: number;
  verbose?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function emulatorCommand(): Command {
  return new Command('emulator')
    .description(
      'run a local Snowflake emulator (SQL API v2, Snowpipe Streaming, key-pair auth) backed by DuckDB, for development and tests',
    )
    .option('--port <port>', 'TCP port (0: a free one)', nonNegativeInt('--port', 65535), 8080)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--data <path>', "DuckDB file holding the emulated databases (':memory:' for none)", './.floe/snowflake.duckdb')
    .option('--account <name>', 'account identifier the JWTs must name', 'EMULATOR')
    .option('--user <NAME=public-key.pem>', 'register a user and its RSA public key (repeatable)', collect, [])
    .option('--warehouse <name>', 'a warehouse that exists (repeatable; default COMPUTE_WH)', collect, [])
    .option('--commit-delay-ms <ms>', 'delay before appended rows are committed', nonNegativeInt('--commit-delay-ms'), 200)
    .option('--commit-jitter-ms <ms>', 'up to this much more commit delay, random per batch', nonNegativeInt('--commit-jitter-ms'), 0)
    .option(
      '--admin-token <token>',
      'token the admin routes /_emulator/* require (default: FLOE_EMULATOR_ADMIN_TOKEN, else a random one, printed)',
    )
    .option('--channel-rps <n>', 'append requests per second per channel before 429 (0: unlimited)', nonNegativeInt('--channel-rps'), 10)
    .option('--verbose', 'print one line per request on stderr (method, path, status, milliseconds)')
    .action(async (opts: EmulatorCliOptions) => {
      await runEmulator(opts);
    });
}

async function runEmulator(opts: EmulatorCliOptions): Promise<void> {
  const users = opts.user.map((spec) => {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw new FloeError('config', `--user expects NAME=path/to/public-key.pem, got '${spec}'`);
    const path = spec.slice(eq + 1);
    let pem: string;
    try {
      pem = readFileSync(path, 'utf8');
    } catch (err) {
      throw new FloeError('config', `cannot read the public key file ${path}`, {
        cause: err,
        hint: 'pass the .pub file, not the private key',
      });
    }
    return { name: spec.slice(0, eq), pem };
  });
  const fromEnv = opts.adminToken ?? process.env.FLOE_EMULATOR_ADMIN_TOKEN;
  if (fromEnv !== undefined && fromEnv.length < 16) {
    throw new FloeError('config', 'the emulator admin token must be at least 16 characters', { hint: 'e.g. openssl rand -base64 24' });
  }
  if (!isLoopback(opts.host)) {
    process.stderr.write(
      `\n  WARNING: floe emulator is listening on ${opts.host}, reachable from other machines.\n` +
        `  It is a test tool: anyone who can reach it and holds a registered key can read and change its data,\n` +
        `  and anyone with the admin token can replace keys. Use --host 127.0.0.1 unless you need otherwise.\n\n`,
    );
  }
  // Loaded here: the emulator (and DuckDB under it) is not part of any other command.
  const { startEmulator } = await import('../emulator/emulator.js');
  const emulator = await startEmulator({
    adminToken: fromEnv,
    commitJitterMs: opts.commitJitterMs,
    port: opts.port,
    host: opts.host,
    dataPath: opts.data,
    account: opts.account,
    commitDelayMs: opts.commitDelayMs,
    channelRps: opts.channelRps,
    warehouses: opts.warehouse.length > 0 ? opts.warehouse : undefined,
    onRequest: opts.verbose ? (l) => process.stderr.write(`${l.method} ${l.path} ${l.status} ${l.ms}ms\n`) : undefined,
  });
  const registered = users.map((u) => {
    try {
      return `${u.name.toUpperCase()} (${emulator.addUser(u.name, u.pem)})`;
    } catch (err) {
      throw new FloeError('config', `the key for user ${u.name} is not a usable RSA public key: ${(err as Error).message}`);
    }
  });
  const out = process.stdout;
  out.write(
    [
      `floe Snowflake EMULATOR listening on ${emulator.url}`,
      `  This is a local emulator for development and tests, not Snowflake.`,
      `  account:    ${emulator.account}`,
      `  data:       ${opts.data}`,
      `  warehouses: ${(opts.warehouse.length > 0 ? opts.warehouse : ['COMPUTE_WH']).join(', ')}`,
      `  users:      ${registered.length > 0 ? registered.join(', ') : '(none yet)'}`,
      ``,
      `Register a user's public key:`,
      `  openssl genrsa 2048 | openssl pkcs8 -topk8 -inform PEM -out rsa_key.p8 -nocrypt`,
      `  openssl rsa -in rsa_key.p8 -pubout -out rsa_key.pub`,
      `  floe emulator --user FLOE_USER=rsa_key.pub ...      (at start), or while running:`,
      `  curl -X POST ${emulator.url}/_emulator/users -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \\`,
      `       -d "{\\"name\\": \\"FLOE_USER\\", \\"publicKeyPem\\": $(jq -Rs . < rsa_key.pub)}"`,
      ``,
      `Use it from floe: snowflake://FLOE_USER@${emulator.account}/DB/SCHEMA?private_key_file=./rsa_key.p8&base_url=${emulator.url}`,
      `Admin routes (faults, state; docs/emulator.md) need Authorization: Bearer <admin token>:`,
      `  admin token: ${fromEnv === undefined ? emulator.adminToken : '(as given by --admin-token / FLOE_EMULATOR_ADMIN_TOKEN)'}`,
      `Ctrl-C stops.`,
      ``,
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    const off = onShutdownSignal(() => {
      off();
      resolve();
    });
  });
  await emulator.close();
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
