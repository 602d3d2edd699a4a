/** Pluggable readiness: every check must pass; a hanging or throwing check fails with a reason; results are cached briefly. */
import { describe, it, expect } from 'vitest';
import { ReadinessChecks } from '../src/telemetry/http.js';

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
