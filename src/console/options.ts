/** The console's flags, shared by `floe run` and `floe replicate`. */
import { Option, type Command } from 'commander';
import { nonNegativeInt } from '../cli/arguments.js';

export interface ConsoleFlags {
  consolePort?: number;
  consoleHost: string;
  consolePublicRead?: boolean;
}

export function addConsoleOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--console-port <n>', 'serve the web console and /api/v1 on this port instead of the metrics port (0: no console)')
        .env('FLOE_CONSOLE_PORT')
        .argParser(nonNegativeInt('--console-port')),
    )
    .addOption(
      new Option('--console-host <host>', 'address the --console-port listener binds to (0.0.0.0 to listen wider)')
        .env('FLOE_CONSOLE_HOST')
        .default('127.0.0.1'),
    )
    .option('--console-public-read', 'let the console and GET /api/v1 be read without FLOE_API_TOKEN (actions still need it)');
}
