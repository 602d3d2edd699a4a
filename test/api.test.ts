/**
 * The HTTP API against a real control plane (PostgreSQL): a round trip for every operation, bad requests
 * that each get a 4xx with a clear message and change nothing, the token and cross-site rules, and no
 * secret in any answer.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import pg from 'pg';
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify';
import { randomBytes } from 'node:crypto';
import { testClusters, createTestDatabase, type TestDatabase } from './harness/database.js';
import { tempDir } from './helpers/pipeline.js';
import { migrate } from '../src/control/schema.js';
import { registerConsole, controlPlaneBackend } from '../src/api/server.js';
import { PipelineHistory, RecentAlerts, SourceHealthBoard } from '../src/console/history.js';
import { Console } from '../src/console/console.js';
import { encryptSecret } from '../src/control/secrets.js';
import { secretBinding } from '../src/control/config.js';
import type { AuthPolicy } from '../src/api/auth.js';

const cluster = testClusters()[0]!;
const TOKEN = randomBytes(24).toString('hex');
const SECRET_VALUE = `pw-${randomBytes(8).toString('hex')}`;

describe('HTTP API /api/v1', () => {
  let control: TestDatabase;
  let pool: pg.Pool;
  const dir = tempDir();
  const apps: FastifyInstance[] = [];
  let api: FastifyInstance;
  /** Every body the API answered with, to look for secrets at the end. */
  const answers: string[] = [];

  async function appWith(auth: Partial<AuthPolicy> = {}): Promise<FastifyInstance> {
    const app = Fastify({ logger: false });
    const backend = controlPlaneBackend(pool, {
      history: new PipelineHistory({ intervalMs: 1000 }),
      alerts: new RecentAlerts(undefined),
      sources: new SourceHealthBoard({ warningMb: 3000, dangerMb: 6000 }),
    });
    await registerConsole(app, { backend, auth: { token: TOKEN, publicRead: false, readOnly: false, ...auth }, webRoot: dir.path });
    apps.push(app);
    return app;
  }

  async function call(opts: InjectOptions, app = api) {
    const headers = { authorization: `Bearer ${TOKEN}`, ...(opts.headers ?? {}) };
    const r = await app.inject({ ...opts, headers });
    answers.push(r.body);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field
    return { status: r.statusCode, body: r.body ? (JSON.parse(r.body) as Record<string, any>) : undefined, headers: r.headers };
  }

  /** Everything the API could have changed. */
  async function snapshot(): Promise<string> {
    const tables = ['source', 'destination', 'pipeline', 'pipeline_table'];
    const out: unknown[] = [];
    for (const t of tables) out.push((await pool.query(`SELECT * FROM floe.${t} ORDER BY 1`)).rows);
    return JSON.stringify(out);
  }

  beforeAll(async () => {
    control = await createTestDatabase(cluster, 'api');
    const c = new pg.Client({ connectionString: control.url });
    await c.connect();
    await migrate(c);
    await c.end();
    pool = new pg.Pool({ connectionString: control.url, max: 4 });
    process.env.FLOE_SECRET_API_TEST = SECRET_VALUE;
    api = await appWith();
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await pool.end();
    await control.drop();
    dir.remove();
  });

  it('round-trips every operation', async () => {
    const key = randomBytes(32);
    const encrypted = encryptSecret(
      SECRET_VALUE,
      key,
      secretBinding({ kind: 'source', name: 'other', url: 'postgres://floe@other:5432/x' }),
    );
    // sources
    let r = await call({
      method: 'POST',
      url: '/api/v1/sources',
      payload: { name: 'app', url: 'postgres://floe@db.example:5432/app', password: 'env:FLOE_SECRET_API_TEST' },
    });
    expect(r.status, r.body && JSON.stringify(r.body)).toBe(201);
    expect(r.body).toEqual({
      name: 'app',
      url: 'postgres://floe@db.example:5432/app',
      password: 'env:FLOE_SECRET_API_TEST',
      options: {},
      pipelines: [],
    });
    r = await call({
      method: 'POST',
      url: '/api/v1/sources',
      payload: { name: 'other', url: 'postgres://floe@other:5432/x', password: encrypted, options: { connect_timeout_ms: 5000 } },
    });
    expect(r.status).toBe(201);
    expect(r.body!.password).toBe('enc:v2:(encrypted)');
    r = await call({ method: 'PUT', url: '/api/v1/sources/other', payload: { url: 'postgres://floe@other2:5432/x', password: null } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ name: 'other', url: 'postgres://floe@other2:5432/x', password: null });
    r = await call({ method: 'GET', url: '/api/v1/sources' });
    expect(r.body!.sources.map((s: { name: string }) => s.name)).toEqual(['app', 'other']);
    r = await call({ method: 'GET', url: '/api/v1/sources/app' });
    expect(r.body!.name).toBe('app');
    // destinations
    r = await call({ method: 'POST', url: '/api/v1/destinations', payload: { name: 'wh', type: 'duckdb', path: `${dir.path}/wh.duckdb` } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ name: 'wh', type: 'duckdb', url: `duckdb:${dir.path}/wh.duckdb`, secrets: {} });
    r = await call({
      method: 'POST',
      url: '/api/v1/destinations',
      payload: {
        name: 'sf',
        type: 'snowflake',
        url: 'snowflake://floe@org-acct/DB/PUBLIC?warehouse=wh',
        secrets: { private_key: 'file:/etc/floe/key.p8' },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body!.secrets).toEqual({ private_key: 'file:/etc/floe/key.p8' });
    r = await call({
      method: 'PUT',
      url: '/api/v1/destinations/wh',
      payload: { type: 'duckdb', url: `duckdb:${dir.path}/wh.duckdb?memory_limit=1GB` },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    r = await call({ method: 'GET', url: '/api/v1/destinations' });
    expect(r.body!.destinations.map((d: { name: string }) => d.name)).toEqual(['sf', 'wh']);
    r = await call({ method: 'GET', url: '/api/v1/destinations/sf' });
    expect(r.body!.type).toBe('snowflake');
    // pipelines
    r = await call({
      method: 'POST',
      url: '/api/v1/pipelines',
      payload: { name: 'p1', source: 'app', destination: 'wh', publication: 'pub', options: { batch_max_ms: 200 } },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({
      name: 'p1',
      status: 'PAUSE',
      slot: 'floe_p1',
      options: { batch_max_ms: 200 },
      source: 'app',
      destination: 'wh',
    });
    r = await call({ method: 'PATCH', url: '/api/v1/pipelines/p1', payload: { options: { merge_interval_ms: 500 }, publication: 'pub2' } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ publication: 'pub2', options: { batch_max_ms: 200, merge_interval_ms: 500 }, config_version: 2 });
    r = await call({ method: 'PATCH', url: '/api/v1/pipelines/p1', payload: { reset: ['batch-max-ms'] } });
    expect(r.body!.options).toEqual({ merge_interval_ms: 500 });
    for (const [action, table] of [
      ['start'],
      ['pause'],
      ['resume'],
      ['resync', 'public.t'],
      ['skip', 'public.u'],
      ['unskip', 'public.u'],
    ] as const) {
      r = await call({ method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: table ? { action, table } : { action } });
      expect(r.status, `${action}: ${JSON.stringify(r.body)}`).toBe(202);
    }
    r = await call({ method: 'GET', url: '/api/v1/pipelines/p1' });
    expect(r.body).toMatchObject({ status: 'START' });
    expect(r.body!.table_states).toEqual([
      expect.objectContaining({ table: 'public.t', skip: false, resync_requested_at: expect.any(String) }),
      expect.objectContaining({ table: 'public.u', skip: false }),
    ]);
    r = await call({ method: 'GET', url: '/api/v1/pipelines' });
    expect(r.body!.pipelines.map((p: { name: string }) => p.name)).toEqual(['p1']);
    r = await call({ method: 'GET', url: '/api/v1/status' });
    expect(r.body).toMatchObject({ pipelines: [expect.objectContaining({ name: 'p1' })], workers: [] });
    r = await call({ method: 'GET', url: '/api/v1/monitor/sources' });
    expect(r.body).toEqual({ thresholds: { warningMb: 3000, dangerMb: 6000 }, sources: [] });
    r = await call({ method: 'GET', url: '/api/v1/alerts' });
    expect(r.body).toEqual({ alerts: [] });
    r = await call({ method: 'GET', url: '/api/v1/openapi.json', headers: { authorization: '' } });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body!.paths)).toContain('/api/v1/pipelines/{name}/actions');
    // deletes
    r = await call({
      method: 'POST',
      url: '/api/v1/pipelines',
      payload: { name: 'p2', source: 'other', destination: 'sf', publication: 'pub', start: true },
    });
    expect(r.body!.status).toBe('START');
    r = await call({ method: 'DELETE', url: '/api/v1/pipelines/p2?drop_slot=true' });
    expect(r.status).toBe(202);
    expect((await pool.query(`SELECT drop_slot, status FROM floe.pipeline WHERE name = 'p2'`)).rows).toEqual([
      { drop_slot: true, status: 'PAUSE' },
    ]);
    r = await call({ method: 'DELETE', url: '/api/v1/pipelines/p2' });
    expect(r.status).toBe(204);
    r = await call({ method: 'DELETE', url: '/api/v1/destinations/sf' });
    expect(r.status).toBe(204);
    r = await call({ method: 'DELETE', url: '/api/v1/sources/other' });
    expect(r.status).toBe(204);
    expect((await pool.query(`SELECT name FROM floe.source`)).rows).toEqual([{ name: 'app' }]);
  });

  it('answers 20+ bad requests with a 4xx, one clear message and nothing changed', async () => {
    const before = await snapshot();
    const long = 'x'.repeat(300);
    const cases: [InjectOptions, number, RegExp][] = [
      [{ method: 'POST', url: '/api/v1/sources', payload: { name: 'Bad-Name', url: 'postgres://u@h/d' } }, 400, /invalid source name/],
      [
        { method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'postgres://u:pw@h/d' } },
        400,
        /source URL contains a password/,
      ],
      [{ method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'mysql://u@h/d' } }, 400, /must start with postgres/],
      [{ method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'postgres://u@h/d', password: 'hunter2' } }, 400, /password/],
      [
        { method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'postgres://u@h/d', options: { nope: 1 } } },
        400,
        /unknown source option "nope"/,
      ],
      [{ method: 'POST', url: '/api/v1/sources', payload: { name: 'app', url: 'postgres://u@h/d' } }, 409, /source "app" already exists/],
      [{ method: 'POST', url: '/api/v1/sources', payload: { url: 'postgres://u@h/d' } }, 400, /name is required/],
      [
        { method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'postgres://u@h/d', extra: true } },
        400,
        /unknown field "extra"/,
      ],
      [
        { method: 'POST', url: '/api/v1/sources', payload: '[1,2]', headers: { 'content-type': 'application/json' } },
        400,
        /must be a JSON object/,
      ],
      [{ method: 'POST', url: '/api/v1/sources', payload: '{"name":', headers: { 'content-type': 'application/json' } }, 400, /JSON/i],
      [
        { method: 'POST', url: '/api/v1/sources', payload: 'name=ok', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        415,
        /content-type/i,
      ],
      [{ method: 'DELETE', url: '/api/v1/sources/app' }, 409, /used by pipeline p1/],
      [{ method: 'DELETE', url: '/api/v1/sources/nosuch' }, 404, /no source named "nosuch"/],
      [{ method: 'PUT', url: '/api/v1/sources/nosuch', payload: { url: 'postgres://u@h/d' } }, 404, /no source named/],
      [
        { method: 'POST', url: '/api/v1/destinations', payload: { name: 'd', type: 'oracle', url: 'x' } },
        400,
        /unknown destination type "oracle"/,
      ],
      [{ method: 'POST', url: '/api/v1/destinations', payload: { name: 'd', type: 'duckdb' } }, 400, /needs a path/],
      [
        {
          method: 'POST',
          url: '/api/v1/destinations',
          payload: { name: 'd', type: 'snowflake', url: 'snowflake://u:pw@acct/DB/S?warehouse=w' },
        },
        400,
        /contains a secret/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/destinations',
          payload: { name: 'd', type: 'duckdb', path: '/tmp/x.duckdb', secrets: { private_key: 'env:X' } },
        },
        400,
        /takes no secret "private_key"/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/destinations',
          payload: { name: 'd', type: 'snowflake', url: 'snowflake://u@acct/DB/S?warehouse=w', secrets: { private_key: 'BEGIN KEY' } },
        },
        400,
        /secret private_key/,
      ],
      [
        { method: 'POST', url: '/api/v1/destinations', payload: { name: 'wh', type: 'duckdb', path: '/tmp/y.duckdb' } },
        409,
        /destination "wh" already exists/,
      ],
      [{ method: 'DELETE', url: '/api/v1/destinations/wh' }, 409, /used by pipeline p1/],
      [
        { method: 'POST', url: '/api/v1/pipelines', payload: { name: 'p3', source: 'nosuch', destination: 'wh', publication: 'pub' } },
        404,
        /no source named "nosuch"/,
      ],
      [
        { method: 'POST', url: '/api/v1/pipelines', payload: { name: 'p3', source: 'app', destination: 'nosuch', publication: 'pub' } },
        404,
        /no destination named/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/pipelines',
          payload: { name: 'p3', source: 'app', destination: 'wh', publication: 'pub', slot: 'floe_p1' },
        },
        409,
        /slot "floe_p1" is already used by pipeline p1/,
      ],
      [
        { method: 'POST', url: '/api/v1/pipelines', payload: { name: 'p1', source: 'app', destination: 'wh', publication: 'pub' } },
        409,
        /pipeline "p1" already exists/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/pipelines',
          payload: { name: 'p3', source: 'app', destination: 'wh', publication: 'pub', options: { batch_max_bytes: 1 } },
        },
        400,
        /batch_max_bytes must be an integer from 1024/,
      ],
      [
        { method: 'POST', url: '/api/v1/pipelines', payload: { name: 'p3', source: 'app', destination: 'wh', publication: '' } },
        400,
        /invalid publication name/,
      ],
      [
        { method: 'POST', url: '/api/v1/pipelines', payload: { name: long, source: 'app', destination: 'wh', publication: 'p' } },
        400,
        /name/,
      ],
      [{ method: 'PATCH', url: '/api/v1/pipelines/p1', payload: {} }, 400, /nothing to change/],
      [{ method: 'PATCH', url: '/api/v1/pipelines/p1', payload: { reset: ['nope'] } }, 400, /unknown pipeline option "nope"/],
      [
        { method: 'PATCH', url: '/api/v1/pipelines/p1', payload: { options: { delete_mode: 'maybe' } } },
        400,
        /delete_mode must be hard or soft/,
      ],
      [{ method: 'PATCH', url: '/api/v1/pipelines/nosuch', payload: { options: { batch_max_ms: 5 } } }, 404, /no pipeline named "nosuch"/],
      [{ method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: { action: 'explode' } }, 400, /unknown action "explode"/],
      [{ method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: { action: 'resync' } }, 400, /resync needs a table/],
      [
        { method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: { action: 'resync', table: 'orders' } },
        400,
        /invalid table name "orders"/,
      ],
      [
        { method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: { action: 'pause', table: 'public.t' } },
        400,
        /pause takes no table/,
      ],
      [{ method: 'POST', url: '/api/v1/pipelines/nosuch/actions', payload: { action: 'pause' } }, 404, /no pipeline named/],
      [{ method: 'DELETE', url: '/api/v1/pipelines/p1?drop_slot=maybe' }, 400, /drop_slot must be true or false/],
      [{ method: 'GET', url: '/api/v1/pipelines/nosuch' }, 404, /no pipeline named "nosuch"/],
      [{ method: 'GET', url: '/api/v1/nothing-here' }, 404, /no such endpoint: GET \/api\/v1\/nothing-here/],
      [
        {
          method: 'POST',
          url: '/api/v1/sources',
          payload: { name: 'ok', url: 'postgres://u@h/d' },
          headers: { authorization: 'Bearer wrong-token-value' },
        },
        401,
        /API token is wrong/,
      ],
      [
        { method: 'POST', url: '/api/v1/sources', payload: { name: 'ok', url: 'postgres://u@h/d' }, headers: { authorization: '' } },
        401,
        /needs a token/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/sources',
          payload: { name: 'ok', url: 'postgres://u@h/d' },
          headers: { 'sec-fetch-site': 'cross-site' },
        },
        403,
        /cross-site request refused/,
      ],
      [
        {
          method: 'POST',
          url: '/api/v1/sources',
          payload: { name: 'ok', url: 'postgres://u@h/d' },
          headers: { origin: 'https://evil.example' },
        },
        403,
        /cross-origin request refused/,
      ],
    ];
    expect(cases.length).toBeGreaterThanOrEqual(20);
    for (const [request, status, message] of cases) {
      const r = await call(request);
      const what = `${request.method} ${request.url} ${JSON.stringify(request.payload)}`;
      expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBe(status);
      expect(Object.keys(r.body!), what).toEqual(['error']);
      expect(r.body!.error.message, what).toMatch(message);
      expect(typeof r.body!.error.kind, what).toBe('string');
      expect(r.body!.error.message, what).not.toMatch(/\n/);
    }
    expect(await snapshot()).toBe(before);
  });

  it('needs a configured token for everything but the document; reads are public only when the operator says so', async () => {
    const closed = await appWith({ token: undefined });
    let r = await call({ method: 'GET', url: '/api/v1/status' }, closed);
    expect(r.status).toBe(401);
    expect(r.body!.error).toMatchObject({ kind: 'auth', message: 'the API needs a token and none is configured' });
    expect(r.body!.error.hint).toMatch(/FLOE_API_TOKEN/);
    r = await call({ method: 'GET', url: '/api/v1/session' }, closed);
    expect(r.body).toEqual({ token_configured: false, public_read: false, read_only: false });
    r = await call({ method: 'GET', url: '/api/v1/status', headers: { authorization: '' } });
    expect(r.status).toBe(401);

    const publicRead = await appWith({ publicRead: true });
    r = await call({ method: 'GET', url: '/api/v1/pipelines', headers: { authorization: '' } }, publicRead);
    expect(r.status).toBe(200);
    const before = await snapshot();
    r = await call(
      { method: 'POST', url: '/api/v1/pipelines/p1/actions', payload: { action: 'pause' }, headers: { authorization: '' } },
      publicRead,
    );
    expect(r.status).toBe(401);
    expect(await snapshot()).toBe(before);
    // The same-origin request the console sends is accepted.
    r = await call(
      {
        method: 'POST',
        url: '/api/v1/pipelines/p1/actions',
        payload: { action: 'pause' },
        headers: { origin: 'http://localhost:80', host: 'localhost:80', 'sec-fetch-site': 'same-origin' },
      },
      publicRead,
    );
    expect(r.status, JSON.stringify(r.body)).toBe(202);
  });

  it('serves the console with a strict content security policy, or says how to build it', async () => {
    const r = await api.inject({ method: 'GET', url: '/' });
    expect(r.statusCode).toBe(503);
    expect(r.body).toMatch(/npm run build:web/);
    expect(r.headers['content-security-policy']).toMatch(/default-src 'self'/);
    expect(r.headers['x-frame-options']).toBe('DENY');
  });

  it('listens on 127.0.0.1 unless told otherwise', async () => {
    const c = new Console(
      { port: 0, publicRead: false, readOnly: false },
      { alertSink: undefined, thresholds: { warningMb: 1, dangerMb: 2 } },
    );
    // port 0 means "no console"; an ephemeral port is what a test needs, so listen through a real one.
    const probe = Fastify();
    await probe.listen({ port: 0, host: '127.0.0.1' });
    const port = (probe.server.address() as { port: number }).port;
    await probe.close();
    const own = new Console(
      { port, publicRead: false, readOnly: false },
      { alertSink: undefined, thresholds: { warningMb: 1, dangerMb: 2 } },
    );
    const backend = controlPlaneBackend(pool, { history: own.history, alerts: own.alerts, sources: own.sources });
    expect(await c.listen(backend)).toBeUndefined();
    const url = await own.listen(backend);
    try {
      expect(url).toBe(`http://127.0.0.1:${port}/`);
      const res = await fetch(`${url}api/v1/session`);
      expect(await res.json()).toMatchObject({ read_only: false });
    } finally {
      await own.close();
    }
  });

  it('never answered with a secret value', () => {
    const all = answers.join('\n');
    expect(all).not.toContain(SECRET_VALUE);
    expect(all).not.toContain('enc:v2:' + 'A');
    expect(all).not.toContain(TOKEN);
  });
});
