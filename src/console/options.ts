/** The console's flags, shared by `floe run` and `floe replicate`. */
import { Option, type Command } from 'commander';
import { nonNegativeInt, positiveInt } from '../cli/arguments.js';

export interface ConsoleFlags {
  consolePort?: number;
  consoleHost: string;
  consolePublicRead?: boolean;
  consoleSampleInterval: number;
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
    .addOption(
      new Option('--console-sample-interval <seconds>', "how often the console's charts take a sample (the last hour is kept)")
        .argParser(positiveInt('--console-sample-interval'))
        .default(10),
    )
    .option('--console-public-read', 'let the console and GET /api/v1 be read without FLOE_API_TOKEN (actions still need it)');
}
