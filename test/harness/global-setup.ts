import type { TestProject } from 'vitest/node';
import { availableMajors, startCluster, type RunningCluster } from '../../src/postgres/local-cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    clusters: { major: number; port: number; binDir: string }[];
  }
}

let running: RunningCluster[] = [];

export async function setup(project: TestProject): Promise<void> {
  const majors = availableMajors();
  if (majors.length === 0) throw new Error('no PostgreSQL binaries found (install postgresql-15 or npm ci)');
  running = await Promise.all(majors.map((major) => startCluster({ major })));
  project.provide(
    'clusters',
    running.map((c) => ({ major: c.major, port: c.port, binDir: c.binDir })),
  );
}

export async function teardown(): Promise<void> {
  await Promise.all(running.map((c) => c.stop()));
}
