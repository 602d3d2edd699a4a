import { Option, type Command } from 'commander';
import { LOG_LEVELS, nonNegativeInt, nonNegativeNumber } from './arguments.js';
import type { LogFormat } from '../telemetry/logger.js';
import { DEFAULT_METRICS_HOST } from '../telemetry/http.js';

/** Telemetry and source-health flags shared by `floe replicate` and `floe run`. */
export interface HealthOptions {
  metricsPort: number;
  metricsHost: string;
  readyzDetails: boolean;
  logLevel: string;
  logFormat: LogFormat;
  heartbeatInterval: number;
  monitorInterval: number;
  stallAfter: number;
}

export function addHealthOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--metrics-port <n>', 'port of /metrics, /healthz and /readyz (0: off)')
        .env('FLOE_METRICS_PORT')
        .argParser(nonNegativeInt('--metrics-port', 65535))
        .default(9000),
    )
    .addOption(
      new Option(
        '--metrics-host <address>',
        'address /metrics, /healthz and /readyz bind to; in a container, 0.0.0.0 lets the orchestrator probe them (they have no authentication)',
      )
        .env('FLOE_METRICS_HOST')
        .default(DEFAULT_METRICS_HOST),
    )
    .addOption(
      new Option('--readyz-details', "put the failing checks' error texts (user and host names) into /readyz bodies").env(
        'FLOE_READYZ_DETAILS',
      ),
    )
    .addOption(new Option('--log-level <level>', 'how much to log').choices(LOG_LEVELS).env('FLOE_LOG_LEVEL').default('info'))
    .addOption(
      new Option('--log-format <format>', 'json lines, or pretty for humans')
        .choices(['json', 'pretty'])
        .env('FLOE_LOG_FORMAT')
        .default('json'),
    )
    .addOption(
      new Option(
        '--heartbeat-interval <seconds>',
        'write a logical message to the source this often so the slot advances while published tables are idle (0: off)',
      )
        .env('FLOE_HEARTBEAT_INTERVAL')
        .argParser(nonNegativeNumber('--heartbeat-interval'))
        .default(60),
    )
    .addOption(
      new Option('--monitor-interval <seconds>', 'how often the WAL monitor checks the source and slot (0: off)')
        .env('FLOE_MONITOR_INTERVAL')
        .argParser(nonNegativeNumber('--monitor-interval'))
        .default(60),
    )
    .addOption(
      new Option('--stall-after <seconds>', 'alert when the slot confirms nothing while WAL grows for this long')
        .env('FLOE_STALL_AFTER')
        .argParser(nonNegativeNumber('--stall-after'))
        .default(600),
    );
}
