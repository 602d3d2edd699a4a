/** A Snowflake emulator with a registered key pair, and destination URLs for it (tests only). */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './pipeline.js';
import { startEmulator, type RunningEmulator } from '../../src/emulator/emulator.js';
import { parseSnowflakeUrl } from '../../src/destination/snowflake/config.js';
import { createSnowflakeDestination, type SnowflakeDestination } from '../../src/destination/snowflake/snowflake-destination.js';
import { silentLogger, createLogger, type Logger } from '../../src/telemetry/logger.js';

export interface SnowflakeFixture {
  readonly emulator: RunningEmulator;
  readonly dir: { path: string; remove(): void };
  /** A destination URL for the emulator with extra parameters. */
  url(params?: string): string;
  /** `log`: where the destination logs (default: FLOE_TEST_LOG, else nowhere). */
  destination(params?: string, log?: Logger): SnowflakeDestination;
  /** Rows of a query on the emulator (no auth, no faults). */
  rows(sql: string): Promise<(string | null)[][]>;
}

export async function snowflakeFixture(options: Parameters<typeof startEmulator>[0] = {}): Promise<SnowflakeFixture> {
  const emulator = await startEmulator({ commitDelayMs: 20, ...options });
  const dir = tempDir('floe-sf-');
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(dir.path, 'rsa_key.p8');
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  emulator.addUser('FLOE', publicKey.export({ type: 'spki', format: 'pem' }).toString());
  const url = (params = '') =>
    `snowflake://floe@${emulator.account}/ANALYTICS/PUBLIC?private_key_file=${keyFile}&warehouse=COMPUTE_WH&merge_interval=0s&base_url=${emulator.url}${params}`;
  return {
    emulator,
    dir,
    url,
    destination: (params = '', log?: Logger) =>
      createSnowflakeDestination(parseSnowflakeUrl(url(params)), {
        log: log ?? (process.env.FLOE_TEST_LOG ? createLogger({ level: process.env.FLOE_TEST_LOG }) : silentLogger),
      }),
    rows: async (sql) => (await emulator.query(sql)).rows,
  };
}
