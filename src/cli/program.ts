/**
 * The floe command tree and how its failures become an exit code and one line: shared by bin/floe.js
 * (main.ts) and the in-process bad-input tests, so both report errors the same way.
 */
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

export function buildProgram(output: { writeOut?: (s: string) => void; writeErr?: (s: string) => void } = {}): Command {
  const program = new Command('floe').description('change data capture from PostgreSQL into DuckDB and Snowflake');
  for (const c of [
    replicateCommand(),
    demoCommand(),
    runCommand(),
    doctorCommand(),
    migrateCommand(),
    sourceCommand(),
    destinationCommand(),
    pipelineCommand(),
    statusCommand(),
    secretCommand(),
    emulatorCommand(),
    applyCommand(),
    exportCommand(),
  ]) {
    program.addCommand(c);
  }
  // Usage errors are one line, like every other error floe prints (subcommands of subcommands too).
  const allCommands = (cmd: Command): Command[] => [cmd, ...cmd.commands.flatMap(allCommands)];
  for (const cmd of allCommands(program)) {
    cmd.exitOverride().configureOutput({
      ...output,
      outputError: (str, write) => write(`floe: ${str.trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`),
    });
  }
  return program;
}

/** Exit code and stderr line of a failed command: 2 for bad input (usage, configuration), 1 otherwise. */
export function failure(err: unknown): { code: number; line?: string } {
  if (err instanceof CommanderError) return { code: err.exitCode === 0 ? 0 : 2 };
  const e = err instanceof FloeError ? err : coerceError(err);
  return { code: e.kind === 'config' ? 2 : 1, line: `floe: error: ${scrubLine(e.oneLine())}\n` };
}
