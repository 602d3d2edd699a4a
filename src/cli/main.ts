import { Command, CommanderError } from 'commander';
import { FloeError, coerceError } from '../errors.js';
import { scrubLine } from '../telemetry/logger.js';
import { replicateCommand } from './replicate.js';
import { demoCommand } from './demo.js';
import { runCommand } from './run.js';
import { doctorCommand } from './doctor.js';
import { migrateCommand } from './migrate.js';
import { sourceCommand } from './source.js';
import { destinationCommand } from './destination.js';
import { pipelineCommand } from './pipeline.js';
import { statusCommand } from './status.js';
import { secretCommand } from './secret.js';
import { emulatorCommand } from './emulator.js';
import { applyCommand, exportCommand } from './apply.js';

const program = new Command('floe').description('change data capture from PostgreSQL into DuckDB and Snowflake');
program.addCommand(replicateCommand());
program.addCommand(demoCommand());
program.addCommand(runCommand());
program.addCommand(doctorCommand());
program.addCommand(migrateCommand());
program.addCommand(sourceCommand());
program.addCommand(destinationCommand());
program.addCommand(pipelineCommand());
program.addCommand(statusCommand());
program.addCommand(secretCommand());
program.addCommand(emulatorCommand());
program.addCommand(applyCommand());
program.addCommand(exportCommand());
// Usage errors are one line, like every other error floe prints (subcommands of subcommands too).
const allCommands = (cmd: Command): Command[] => [cmd, ...cmd.commands.flatMap(allCommands)];
for (const cmd of allCommands(program)) {
  cmd
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`floe: ${str.trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`) });
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
  process.stderr.write(`floe: error: ${scrubLine(e.oneLine())}\n`);
  process.exit(e.kind === 'config' ? 2 : 1);
}
