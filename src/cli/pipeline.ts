import { Command } from 'commander';
import type pg from 'pg';
import { FloeError } from '../errors.js';
import {
  PIPELINE_OPTION_NAMES,
  checkName,
  checkPublication,
  checkSlotName,
  checkTableName,
  defaultSlotName,
  optionsFromFlags,
  parsePipelineOptions,
  type PipelineRow,
} from '../control/config.js';
import {
  findDestination,
  findPipeline,
  findSource,
  listDestinations,
  listPipelineTables,
  listPipelines,
  listSources,
} from '../control/repository.js';
import { collect, databaseUrlOption, formatTable, inTransaction, notFound, print, withControlPlane } from './control-plane.js';

const OPTION_HELP = `pipeline option (repeatable): ${PIPELINE_OPTION_NAMES.join(', ')}`;

export function pipelineCommand(): Command {
  const cmd = new Command('pipeline').description('source + publication → destination, run by floe run workers');

  cmd
    .command('add <name>')
    .description('define a pipeline (created paused: floe pipeline start <name> starts it)')
    .requiredOption('--source <name>', 'source name')
    .requiredOption('--destination <name>', 'destination name')
    .requiredOption('--publication <name>', 'publication whose tables are replicated')
    .option('--slot <name>', 'replication slot name (default: floe_<name>); fixed for the life of the pipeline')
    .option('--option <key=value>', OPTION_HELP, collect)
    .addOption(databaseUrlOption())
    .action(
      async (
        name: string,
        opts: { source: string; destination: string; publication: string; slot?: string; option?: string[]; databaseUrl?: string },
      ) => {
        checkName('pipeline', name);
        checkPublication(opts.publication);
        const slot = checkSlotName(opts.slot ?? defaultSlotName(name));
        const options = parsePipelineOptions(optionsFromFlags(opts.option ?? []));
        await withControlPlane(opts.databaseUrl, async (db) => {
          const source = await findSource(db, opts.source);
          if (!source) throw notFound('source', opts.source);
          const destination = await findDestination(db, opts.destination);
          if (!destination) throw notFound('destination', opts.destination);
          const existing = await listPipelines(db);
          if (existing.some((p) => p.name === name)) throw new FloeError('config', `pipeline "${name}" already exists`);
          const clash = existing.find((p) => p.slotName === slot);
          if (clash) {
            throw new FloeError('config', `slot "${slot}" is already used by pipeline ${clash.name}`, { hint: 'choose another --slot' });
          }
          await db.query(
            `INSERT INTO floe.pipeline (name, source_id, destination_id, publication, slot_name, options) VALUES ($1, $2, $3, $4, $5, $6)`,
            [name, source.id, destination.id, opts.publication, slot, JSON.stringify(options)],
          );
        });
        print(`pipeline ${name} added (slot ${slot}, paused)`);
      },
    );

  cmd
    .command('list')
    .description('list pipelines')
    .addOption(databaseUrlOption())
    .action(async (opts: { databaseUrl?: string }) => {
      const { pipelines, names } = await withControlPlane(opts.databaseUrl, async (db) => ({
        pipelines: await listPipelines(db),
        names: await endpointNames(db),
      }));
      const rows = pipelines.map((p) => [
        p.name,
        names.sources.get(p.sourceId) ?? `#${p.sourceId}`,
        names.destinations.get(p.destinationId) ?? `#${p.destinationId}`,
        p.publication,
        p.slotName,
        p.deleteRequestedAt ? 'DELETE' : p.status,
        p.state,
      ]);
      print(formatTable(['NAME', 'SOURCE', 'DESTINATION', 'PUBLICATION', 'SLOT', 'STATUS', 'STATE'], rows));
    });

  cmd
    .command('show <name>')
    .description("a pipeline's configuration, state and tables")
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { databaseUrl?: string }) => {
      const { pipeline, tables, names } = await withControlPlane(opts.databaseUrl, async (db) => {
        const pipeline = await findPipeline(db, name);
        if (!pipeline) throw notFound('pipeline', name);
        return { pipeline, tables: await listPipelineTables(db, pipeline.id), names: await endpointNames(db) };
      });
      const p = pipeline;
      const lines: [string, string][] = [
        ['name', p.name],
        ['source', names.sources.get(p.sourceId) ?? `#${p.sourceId} (missing)`],
        ['destination', names.destinations.get(p.destinationId) ?? `#${p.destinationId} (missing)`],
        ['publication', p.publication],
        ['slot', p.slotName],
        ['options', JSON.stringify(p.options)],
        ['status', p.deleteRequestedAt ? `${p.status} (delete requested${p.dropSlot ? ', dropping the slot' : ''})` : p.status],
        ['state', p.state],
        ['owner worker', p.ownerWorker ?? '-'],
        ['lag bytes', p.lagBytes === null ? '-' : String(p.lagBytes)],
        ['durable LSN', p.durableLsn ?? '-'],
        ['last error', p.lastError ? `${p.lastErrorAt?.toISOString() ?? ''} ${p.lastError}`.trim() : '-'],
        ['config version', String(p.configVersion)],
      ];
      const width = Math.max(...lines.map(([k]) => k.length));
      print(lines.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${v}`).join('\n'));
      if (tables.length > 0) {
        print('');
        print(
          formatTable(
            ['TABLE', 'STATE', 'SKIP', 'RESYNC REQUESTED', 'ROWS SNAPSHOTTED', 'LAST ERROR'],
            tables.map((t) => [
              t.tableName,
              t.state ?? '-',
              t.skip ? 'yes' : 'no',
              t.resyncRequestedAt?.toISOString() ?? '-',
              t.rowsSnapshotted === null ? '-' : String(t.rowsSnapshotted),
              t.lastError ?? '-',
            ]),
          ),
        );
      }
    });

  for (const [verb, status, description] of [
    ['start', 'START', 'ask the workers to run the pipeline'],
    ['resume', 'START', 'same as start: run a paused pipeline again'],
    ['pause', 'PAUSE', 'ask the worker running the pipeline to stop it (the slot keeps its position)'],
  ] as const) {
    cmd
      .command(`${verb} <name>`)
      .description(description)
      .addOption(databaseUrlOption())
      .action(async (name: string, opts: { databaseUrl?: string }) => {
        await withControlPlane(opts.databaseUrl, async (db) => {
          const p = await existingPipeline(db, name);
          await db.query(`UPDATE floe.pipeline SET status = $2 WHERE id = $1`, [p.id, status]);
        });
        print(`pipeline ${name}: status ${status}`);
      });
  }

  cmd
    .command('delete <name>')
    .description('delete a pipeline; its slot is kept unless --drop-slot')
    .option('--drop-slot', 'a worker stops the pipeline, drops its replication slot, then deletes the row')
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { dropSlot?: boolean; databaseUrl?: string }) => {
      const p = await withControlPlane(opts.databaseUrl, async (db) => {
        // A pipeline already being deleted may be deleted again: at once, if no worker finishes the job.
        const p = await findPipeline(db, name);
        if (!p) throw notFound('pipeline', name);
        if (opts.dropSlot) {
          await db.query(`UPDATE floe.pipeline SET delete_requested_at = now(), drop_slot = true, status = 'PAUSE' WHERE id = $1`, [p.id]);
        } else {
          await db.query(`DELETE FROM floe.pipeline WHERE id = $1`, [p.id]);
        }
        return p;
      });
      if (opts.dropSlot) {
        print(`pipeline ${name}: delete requested; a worker stops it, drops slot ${p.slotName} and then removes the pipeline`);
      } else {
        print(`pipeline ${name} deleted; replication slot ${p.slotName} was kept and holds WAL on the source until dropped:`);
        print(`  SELECT pg_drop_replication_slot('${p.slotName}');  -- on the source, once no worker runs the pipeline`);
      }
    });

  cmd
    .command('resync <name>')
    .description('snapshot one table again while the other tables keep streaming')
    .requiredOption('--table <schema.table>', 'the table, with its schema')
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { table: string; databaseUrl?: string }) => {
      checkTableName(opts.table);
      await withControlPlane(opts.databaseUrl, async (db) => {
        const p = await existingPipeline(db, name);
        await db.query(
          `INSERT INTO floe.pipeline_table (pipeline_id, table_name, resync_requested_at) VALUES ($1, $2, now())
           ON CONFLICT (pipeline_id, table_name) DO UPDATE SET resync_requested_at = now(), updated_at = now()`,
          [p.id, opts.table],
        );
      });
      print(`pipeline ${name}: resync of ${opts.table} requested`);
    });

  for (const [verb, skip] of [
    ['skip', true],
    ['unskip', false],
  ] as const) {
    cmd
      .command(`${verb} <name>`)
      .description(skip ? 'stop replicating one table of the publication' : 'replicate a skipped table again (it is snapshotted anew)')
      .requiredOption('--table <schema.table>', 'the table, with its schema')
      .addOption(databaseUrlOption())
      .action(async (name: string, opts: { table: string; databaseUrl?: string }) => {
        checkTableName(opts.table);
        await withControlPlane(opts.databaseUrl, async (db) => {
          const p = await existingPipeline(db, name);
          await db.query(
            `INSERT INTO floe.pipeline_table (pipeline_id, table_name, skip) VALUES ($1, $2, $3)
             ON CONFLICT (pipeline_id, table_name) DO UPDATE SET skip = $3, updated_at = now()`,
            [p.id, opts.table, skip],
          );
        });
        print(`pipeline ${name}: ${opts.table} ${skip ? 'skipped' : 'no longer skipped'}`);
      });
  }

  cmd
    .command('set <name>')
    .description('change a pipeline (a running pipeline restarts with the new configuration)')
    .option('--option <key=value>', OPTION_HELP, collect)
    .option('--reset <key>', 'back to the default (repeatable)', collect)
    .option('--publication <name>', 'replicate another publication')
    .addOption(databaseUrlOption())
    .action(async (name: string, opts: { option?: string[]; reset?: string[]; publication?: string; databaseUrl?: string }) => {
      const flags = opts.option ?? [];
      const resetFlags = opts.reset ?? [];
      if (flags.length === 0 && resetFlags.length === 0 && opts.publication === undefined) {
        throw new FloeError('config', 'nothing to change', { hint: 'pass --option key=value, --reset key or --publication name' });
      }
      if (opts.publication !== undefined) checkPublication(opts.publication);
      const changes = parsePipelineOptions(optionsFromFlags(flags));
      const resets = resetFlags.map((k) => k.replaceAll('-', '_'));
      for (const key of resets) {
        if (!(PIPELINE_OPTION_NAMES as string[]).includes(key)) {
          throw new FloeError('config', `unknown pipeline option "${key}"`, { hint: `known: ${PIPELINE_OPTION_NAMES.join(', ')}` });
        }
      }
      await withControlPlane(opts.databaseUrl, (db) =>
        inTransaction(db, async () => {
          const r = await db.query<{ id: string; options: Record<string, unknown> }>(
            `SELECT id::text, options FROM floe.pipeline WHERE name = $1 FOR UPDATE`,
            [name],
          );
          const row = r.rows[0];
          if (!row) throw notFound('pipeline', name);
          const merged: Record<string, unknown> = { ...row.options, ...changes };
          for (const key of resets) delete merged[key];
          // The stored options may have been written by hand: the result must be valid as a whole.
          const options = parsePipelineOptions(merged);
          await db.query(`UPDATE floe.pipeline SET options = $2, publication = coalesce($3, publication) WHERE id = $1`, [
            row.id,
            JSON.stringify(options),
            opts.publication ?? null,
          ]);
        }),
      );
      print(`pipeline ${name} changed`);
    });
  return cmd;
}

async function existingPipeline(db: pg.Client, name: string): Promise<PipelineRow> {
  const p = await findPipeline(db, name);
  if (!p) throw notFound('pipeline', name);
  if (p.deleteRequestedAt) throw new FloeError('config', `pipeline "${name}" is being deleted`);
  return p;
}

async function endpointNames(db: pg.Client): Promise<{ sources: Map<string, string>; destinations: Map<string, string> }> {
  return {
    sources: new Map((await listSources(db)).map((s) => [s.id, s.name])),
    destinations: new Map((await listDestinations(db)).map((d) => [d.id, d.name])),
  };
}
