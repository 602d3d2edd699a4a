import { Command } from 'commander';
import { migrate } from '../control/schema.js';
import { databaseUrlOption, print, withControlPlane } from './control-plane.js';

export function migrateCommand(): Command {
  return new Command('migrate')
    .description('create or upgrade the control-plane schema floe (safe to run again, and from several machines at once)')
    .addOption(databaseUrlOption())
    .action(async (opts: { databaseUrl?: string }) => {
      const result = await withControlPlane(opts.databaseUrl, (db) => migrate(db), { migrating: true });
      for (const m of result.applied) print(`applied migration ${m.version}: ${m.description}`);
      print(
        result.applied.length === 0
          ? `control-plane schema is up to date (version ${result.version})`
          : `control-plane schema is at version ${result.version}`,
      );
    });
}
