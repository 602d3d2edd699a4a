/**
 * What bin/floe (the `floe` command) adds before it runs floe, mirrored so that the bench's floe
 * processes, which Node starts directly, run with floe's defaults. test/launcher.test.ts checks this
 * against the launcher itself.
 */
export const LAUNCHER_SEMI_SPACE_MB = 8;
export const LAUNCHER_MALLOC_ARENA_MAX = '2';

export interface Launch {
  /** Node flags before the script. */
  readonly execArgv: string[];
  readonly env: NodeJS.ProcessEnv;
}

export function launcherDefaults(env: NodeJS.ProcessEnv = process.env): Launch {
  const ownSemiSpace = (env.NODE_OPTIONS ?? '').includes('--max-semi-space-size');
  return {
    execArgv: ownSemiSpace ? [] : [`--max-semi-space-size=${LAUNCHER_SEMI_SPACE_MB}`],
    // `${MALLOC_ARENA_MAX:=2}`: an empty value counts as unset.
    env: { ...env, MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX || LAUNCHER_MALLOC_ARENA_MAX },
  };
}
