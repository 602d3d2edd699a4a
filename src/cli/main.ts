import { Command, CommanderError } from 'commander';
import { FloeError, coerceError } from '../errors.js';
import { replicateCommand } from './replicate.js';
import { demoCommand } from './demo.js';
import { doctorCommand } from './doctor.js';
import { emulatorCommand } from './emulator.js';

const program = new Command('floe').description('change data capture from PostgreSQL into DuckDB and Snowflake');
program.addCommand(replicateCommand());
program.addCommand(demoCommand());
program.addCommand(doctorCommand());
program.addCommand(emulatorCommand());
// Usage errors are one line, like every other error floe prints.
for (const cmd of [program, ...program.commands]) {
  cmd.exitOverride().configureOutput({ outputError: (str, write) => write(`floe: ${str.trim()} (see --help)\n`) });
}

try {
  await program.parseAsync(process.argv);
  // A command may set a non-zero exit code without failing (floe doctor with error findings).
  process.exit(process.exitCode ?? 0);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  const e = err instanceof FloeError ? err : coerceError(err);
  process.stderr.write(`floe: error: ${e.oneLine()}\n`);
  process.exit(e.kind === 'config' ? 2 : 1);
}
