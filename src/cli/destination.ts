import { Command, Option } from 'commander';
import { isAbsolute, resolve } from 'node:path';
import { FloeError } from '../errors.js';
import { DESTINATION_TYPES, checkDestination, checkDestinationSecrets, checkName, optionsFromFlags } from '../control/config.js';
import { findDestination, listDestinations, listPipelines } from '../control/repository.js';
import { collect, databaseUrlOption, formatTable, notFound, print, withControlPlane } from './control-plane.js';

interface AddOptions {
  type: string;
  path?: string;
  url?: string;
  secret?: string[];
  databaseUrl?: string;
}

export function destinationCommand(): Command {
  const cmd = new Command('destination').description('where pipelines replicate to');
  cmd
    .command('add <name>')
    .description('register a destination (checked, not opened)')
    .addOption(new Option('--type <type>', 'destination type').choices(DESTINATION_TYPES).makeOptionMandatory())
    .option('--path <file>', 'duckdb: the database file (made absolute, so every worker finds it)')
    .option('--url <url>', 'duckdb:/path/file.duckdb[?memory_limit=2GB] or snowflake://..., without secrets')
    .option('--secret <name=reference>', 'secret as a reference (repeatable), e.g. private_key_passphrase=env:SF_PASSPHRASE', collect)
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: AddOptions) => {
      checkName('destination', name);
      const url = destinationUrl(opts);
      const type = checkDestination(opts.type, url);
      const secrets = checkDestinationSecrets(type, optionsFromFlags(opts.secret ?? [], '--secret'));
      await withControlPlane(opts.databaseUrl, async (db) => {
        if (await findDestination(db, name)) {
          throw new FloeError('config', `destination "${name}" already exists`, { hint: 'choose another name, or remove it first' });
        }
        await db.query(`INSERT INTO floe.destination (name, type, url, secrets) VALUES ($1, $2, $3, $4)`, [
          name,
          type,
          url,
          JSON.stringify(secrets),
        ]);
      });
      print(`destination ${name} added`);
    });

  cmd
    .command('list')
    .description('list destinations')
    .addOption(databaseUrlOption())
    .action(async (opts: { databaseUrl?: string }) => {
      const { destinations, pipelines } = await withControlPlane(opts.databaseUrl, async (db) => ({
        destinations: await listDestinations(db),
        pipelines: await listPipelines(db),
      }));
      const rows = destinations.map((d) => [
        d.name,
        d.type,
        d.url,
        // Only the names: the references are the operator's business, and enc: values are long.
        Object.keys((d.secrets ?? {}) as object).join(',') || '-',
        String(pipelines.filter((p) => p.destinationId === d.id).length),
      ]);
      print(formatTable(['NAME', 'TYPE', 'URL', 'SECRETS', 'PIPELINES'], rows));
    });

  cmd
    .command('remove <name>')
    .description('remove a destination (refused while a pipeline uses it; the data stays where it is)')
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { databaseUrl?: string }) => {
      await withControlPlane(opts.databaseUrl, async (db) => {
        const destination = await findDestination(db, name);
        if (!destination) throw notFound('destination', name);
        const users = (await listPipelines(db)).filter((p) => p.destinationId === destination.id).map((p) => p.name);
        if (users.length > 0) {
          throw new FloeError('config', `destination "${name}" is used by pipeline${users.length > 1 ? 's' : ''} ${users.join(', ')}`, {
            hint: 'delete those pipelines first',
          });
        }
        await db.query(`DELETE FROM floe.destination WHERE id = $1`, [destination.id]);
      });
      print(`destination ${name} removed`);
    });
  return cmd;
}

function destinationUrl(opts: AddOptions): string {
  if (opts.path !== undefined && opts.url !== undefined) throw new FloeError('config', 'give either --path or --url, not both');
  if (opts.type === 'duckdb') {
    if (opts.path !== undefined) {
      if (opts.path.trim() === '' || opts.path.includes('?')) throw new FloeError('config', `invalid --path "${opts.path}"`);
      return `duckdb:${resolve(opts.path)}`;
    }
    if (opts.url === undefined) throw new FloeError('config', 'a duckdb destination needs --path <file>');
    // A relative file would be found relative to each worker's working directory: anchor it here.
    const m = /^duckdb:(?:\/\/)?([^?]+)(\?.*)?$/.exec(opts.url);
    if (m && m[1] !== ':memory:' && !isAbsolute(m[1]!)) return `duckdb:${resolve(m[1]!)}${m[2] ?? ''}`;
    return opts.url;
  }
  if (opts.path !== undefined) throw new FloeError('config', `--path is for duckdb destinations; a ${opts.type} destination takes --url`);
  if (opts.url === undefined)
    throw new FloeError('config', `a ${opts.type} destination needs --url`, {
      hint: 'e.g. --url snowflake://user@account/database/schema?warehouse=wh',
    });
  return opts.url;
}
