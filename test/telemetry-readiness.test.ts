/** Pluggable readiness: every check must pass; a hanging or throwing check fails with a reason; results are cached briefly. */
import { describe, it, expect } from 'vitest';
import type { AddressInfo } from 'node:net';
import { ReadinessChecks, startTelemetryServer } from '../src/telemetry/http.js';
import { FloeMetrics } from '../src/telemetry/metrics.js';

describe('ReadinessChecks', () => {
  it('is ready only when every check passes, and names the failing ones', async () => {
    let storeDown = false;
    const checks = new ReadinessChecks({ timeoutMs: 100, cacheMs: 0 })
      .addCheck('pipeline', () => undefined)
      .addCheck('state store', async () => (storeDown ? 'connect ECONNREFUSED' : undefined));
    expect(await checks.ready()).toEqual({ ok: true, checks: { pipeline: 'ok', 'state store': 'ok' } });
    storeDown = true;
    expect(await checks.ready()).toEqual({
      ok: false,
      reason: 'state store: connect ECONNREFUSED',
      checks: { pipeline: 'ok', 'state store': 'connect ECONNREFUSED' },
    });
    checks.addCheck('control plane', () => new Promise(() => undefined)); // never answers
    checks.addCheck('broken', () => {
      throw new Error('boom');
    });
    const r = await checks.ready();
    expect(r.ok).toBe(false);
    expect(r.checks).toMatchObject({ 'control plane': 'no answer within 100 ms', broken: 'boom' });
    checks.removeCheck('control plane');
    checks.removeCheck('broken');
    storeDown = false;
    expect((await checks.ready()).ok).toBe(true);
  });

  it('reuses a result within the cache time', async () => {
    let calls = 0;
    const checks = new ReadinessChecks({ cacheMs: 60_000 }).addCheck('source', () => {
      calls++;
      return undefined;
    });
    await Promise.all([checks.ready(), checks.ready(), checks.ready()]);
    await checks.ready();
    expect(calls).toBe(1);
  });
});

describe('the operator endpoints', () => {
  const driverError = 'connect ECONNREFUSED 10.20.30.40:5432 (role "alice_admin" on host db-prod-7)';
  const readiness = () => new ReadinessChecks({ cacheMs: 0 }).addCheck('pipeline', () => undefined).addCheck('source', () => driverError);

  it('listen on loopback by default and keep driver errors out of /readyz bodies', async () => {
    const app = await startTelemetryServer({ port: 0, metrics: new FloeMetrics(), readiness: readiness() });
    try {
      const address = app.server.address() as AddressInfo;
      expect(address.address).toBe('127.0.0.1');
      const r = await fetch(`http://127.0.0.1:${address.port}/readyz`);
      expect(r.status).toBe(503);
      const text = await r.text();
      expect(JSON.parse(text)).toEqual({
        status: 'not ready',
        reason: 'failing: source (details in the log, or with --readyz-details)',
        checks: { pipeline: 'ok', source: 'failing' },
      });
      for (const leak of ['alice_admin', '10.20.30.40', 'db-prod-7', 'ECONNREFUSED']) expect(text).not.toContain(leak);
    } finally {
      await app.close();
    }
  });

  it('bind where the operator says and show details when asked', async () => {
    const app = await startTelemetryServer({
      port: 0,
      host: '0.0.0.0',
      readyzDetails: true,
      metrics: new FloeMetrics(),
      readiness: readiness(),
    });
    try {
      const address = app.server.address() as AddressInfo;
      expect(address.address).toBe('0.0.0.0');
      const body = (await (await fetch(`http://127.0.0.1:${address.port}/readyz`)).json()) as {
        reason: string;
        checks: Record<string, string>;
      };
      expect(body.reason).toBe(`source: ${driverError}`);
      expect(body.checks.source).toBe(driverError);
    } finally {
      await app.close();
    }
  });
});
