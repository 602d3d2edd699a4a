import { Command } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { FloeError } from '../errors.js';
import { applyPlan, exportConfig, formatPlan, parseConfigFile, planConfig } from '../declarative/config-file.js';
import { databaseUrlOption, inTransaction, print, withControlPlane } from './control-plane.js';

export function applyCommand(): Command {
  return new Command('apply')
    .description('make the control plane match a YAML file of sources, destinations and pipelines (idempotent)')
    .requiredOption('-f, --file <path>', 'the file (floe export writes one)')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--prune', 'also remove the pipelines, destinations and sources the file does not name')
    .addOption(databaseUrlOption())
    .action(async (opts: { file: string; dryRun?: boolean; prune?: boolean; databaseUrl?: string }) => {
      let text: string;
      try {
        text = readFileSync(opts.file, 'utf8');
      } catch (err) {
        throw new FloeError('config', `cannot read ${opts.file}: ${(err as { code?: string }).code ?? (err as Error).message}`);
      }
      const desired = parseConfigFile(text, opts.file);
      const steps = await withControlPlane(opts.databaseUrl, (db) =>
        inTransaction(db, async () => {
          // One writer at a time: two applies at once would plan against the same rows.
          await db.query(`SELECT pg_advisory_xact_lock(hashtext('floe apply'))`);
          const steps = await planConfig(db, desired, opts.prune ?? false);
          if (!opts.dryRun) await applyPlan(db, desired, steps);
          return steps;
        }),
      );
      print(formatPlan(steps));
      const changed = steps.some((s) => s.op !== 'unchanged');
      print(opts.dryRun ? 'dry run: nothing was changed' : changed ? 'applied' : 'nothing to change');
    });
}

export function exportCommand(): Command {
  return new Command('export')
    .description('write the control-plane configuration as a file floe apply takes (secrets stay references)')
    .option('-f, --file <path>', 'write here instead of standard output')
    .addOption(databaseUrlOption())
    .action(async (opts: { file?: string; databaseUrl?: string }) => {
      const text = await withControlPlane(opts.databaseUrl, (db) => exportConfig(db));
      if (opts.file) writeFileSync(opts.file, text, { mode: 0o600 });
      else process.stdout.write(text);
    });
}
