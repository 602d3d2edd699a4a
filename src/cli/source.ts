import { Command } from 'commander';
import { FloeError, coerceError } from '../errors.js';
import {
  checkName,
  checkSourceUrl,
  optionsFromFlags,
  parseSourceOptions,
  resolveSource,
  secretBinding,
  type SourceRow,
} from '../control/config.js';
import { checkSecretRef, redactSecrets, resolveSecret } from '../control/secrets.js';
import { findSource, listPipelines, listSources } from '../control/repository.js';
import { connectSource, preflight, serverInfo } from '../postgres/source.js';
import { collect, databaseUrlOption, formatTable, notFound, print, withControlPlane } from './control-plane.js';

export function sourceCommand(): Command {
  const cmd = new Command('source').description('PostgreSQL databases to replicate from');
  cmd
    .command('add <name>')
    .description('register a source database')
    .requiredOption('--url <url>', 'postgres://user@host:5432/database, without a password')
    .option('--password <reference>', 'env:NAME, file:/path or enc:v1:... (floe secret encrypt); never the password itself')
    .option('--option <key=value>', 'source option (repeatable): connect_timeout_ms', collect)
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { url: string; password?: string; option?: string[]; databaseUrl?: string }) => {
      checkName('source', name);
      checkSourceUrl(opts.url);
      if (opts.password !== undefined) {
        const ref = checkSecretRef(opts.password, '--password');
        // An enc: value must decrypt under the key this machine has, if it has one: catches a wrong key now.
        if (ref.kind === 'enc' && process.env.FLOE_SECRET_KEY) {
          resolveSecret(opts.password, '--password', process.env, secretBinding({ kind: 'source', name, url: opts.url }));
        }
      }
      const options = parseSourceOptions(optionsFromFlags(opts.option ?? []));
      await withControlPlane(opts.databaseUrl, async (db) => {
        if (await findSource(db, name))
          throw new FloeError('config', `source "${name}" already exists`, { hint: 'choose another name, or remove it first' });
        await db.query(`INSERT INTO floe.source (name, url, password, options) VALUES ($1, $2, $3, $4)`, [
          name,
          opts.url,
          opts.password ?? null,
          JSON.stringify(options),
        ]);
      });
      print(`source ${name} added`);
    });

  cmd
    .command('list')
    .description('list sources')
    .addOption(databaseUrlOption())
    .action(async (opts: { databaseUrl?: string }) => {
      const { sources, pipelines } = await withControlPlane(opts.databaseUrl, async (db) => ({
        sources: await listSources(db),
        pipelines: await listPipelines(db),
      }));
      const rows = sources.map((s) => [s.name, s.url, passwordLabel(s), String(pipelines.filter((p) => p.sourceId === s.id).length)]);
      print(formatTable(['NAME', 'URL', 'PASSWORD', 'PIPELINES'], rows));
    });

  cmd
    .command('remove <name>')
    .description('remove a source (refused while a pipeline uses it)')
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { databaseUrl?: string }) => {
      await withControlPlane(opts.databaseUrl, async (db) => {
        const source = await findSource(db, name);
        if (!source) throw notFound('source', name);
        const users = (await listPipelines(db)).filter((p) => p.sourceId === source.id).map((p) => p.name);
        if (users.length > 0) {
          throw new FloeError('config', `source "${name}" is used by pipeline${users.length > 1 ? 's' : ''} ${users.join(', ')}`, {
            hint: 'delete those pipelines first',
          });
        }
        await db.query(`DELETE FROM floe.source WHERE id = $1`, [source.id]);
      });
      print(`source ${name} removed`);
    });

  cmd
    .command('test <name>')
    .description("connect to a source with this machine's secrets and check it for every pipeline that uses it")
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { databaseUrl?: string }) => {
      const { source, publications } = await withControlPlane(opts.databaseUrl, async (db) => {
        const source = await findSource(db, name);
        if (!source) throw notFound('source', name);
        const publications = (await listPipelines(db))
          .filter((p) => p.sourceId === source.id)
          .map((p) => ({ pipeline: p.name, publication: p.publication }));
        return { source, publications };
      });
      await testSource(source, publications);
    });
  return cmd;
}

function passwordLabel(s: SourceRow): string {
  if (s.password === null) return '-';
  // References name where the secret is, which is not secret; a ciphertext is shortened for the table.
  return s.password.startsWith('enc:') ? `${s.password.slice(0, 7)}(encrypted)` : s.password;
}

async function testSource(source: SourceRow, publications: { pipeline: string; publication: string }[]): Promise<void> {
  let resolved: ReturnType<typeof resolveSource>;
  try {
    resolved = resolveSource(source);
  } catch (err) {
    const e = coerceError(err);
    throw new FloeError(e.kind, `source ${source.name}: ${e.message}`, { hint: e.hint });
  }
  const { config, secretValues } = resolved;
  const client = await connectSource({ ...config, applicationName: 'floe-source-test' }).catch((err: unknown) => {
    const e = coerceError(err);
    throw new FloeError(e.kind, redactSecrets(e.message, secretValues), { hint: e.hint });
  });
  let problems = 0;
  try {
    const info = await serverInfo(client);
    const facts = await client.query<{ wal_level: string; usr: string; rolreplication: boolean; rolsuper: boolean }>(
      `SELECT current_setting('wal_level') AS wal_level, current_user AS usr, r.rolreplication, r.rolsuper
         FROM pg_roles r WHERE r.rolname = current_user`,
    );
    const f = facts.rows[0]!;
    print(
      `connected: PostgreSQL ${info.major} as ${f.usr}; wal_level ${f.wal_level}; replication ${f.rolreplication || f.rolsuper ? 'yes' : 'no'}`,
    );
    // With pipelines, preflight below says the same with more context.
    if (publications.length === 0 && f.wal_level !== 'logical') {
      problems++;
      print("wal_level must be 'logical' (ALTER SYSTEM SET wal_level = 'logical', then restart PostgreSQL)");
    }
    if (publications.length === 0 && !(f.rolreplication || f.rolsuper)) {
      problems++;
      print(`the user ${f.usr} lacks the REPLICATION attribute (ALTER ROLE ... WITH REPLICATION)`);
    }
    for (const p of publications) {
      try {
        await preflight(client, p.publication);
        print(`pipeline ${p.pipeline}: publication ${p.publication} ok`);
      } catch (err) {
        problems++;
        print(`pipeline ${p.pipeline}: ${redactSecrets(coerceError(err).oneLine(), secretValues)}`);
      }
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  if (problems > 0) {
    throw new FloeError('source-setup', `source ${source.name}: ${problems} problem${problems > 1 ? 's' : ''} found`, {
      hint: 'see the lines above',
    });
  }
  print(`source ${source.name} ok`);
}
