import type { TestProject } from 'vitest/node';
import { availableMajors, startCluster, type RunningCluster } from '../../src/postgres/local-cluster.js';
import { startRedis, type RunningRedis } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    clusters: { major: number; port: number; binDir: string }[];
    redisUrl: string;
  }
}

let running: RunningCluster[] = [];
let redis: RunningRedis | undefined;

export async function setup(project: TestProject): Promise<void> {
  const majors = availableMajors();
  if (majors.length === 0) throw new Error('no PostgreSQL binaries found (install postgresql-15 or npm ci)');
  [running, redis] = await Promise.all([Promise.all(majors.map((major) => startCluster({ major }))), startRedis()]);
  project.provide('redisUrl', redis.url);
  project.provide(
    'clusters',
    running.map((c) => ({ major: c.major, port: c.port, binDir: c.binDir })),
  );
}

export async function teardown(): Promise<void> {
  await Promise.all([...running.map((c) => c.stop()), redis?.stop()]);
}
