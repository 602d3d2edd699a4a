import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/harness/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: run two files at once; each file owns its databases.
    maxWorkers: 2,
    minWorkers: 1,
    pool: 'forks',
  },
});
