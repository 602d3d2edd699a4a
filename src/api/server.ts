/**
 * The HTTP API under /api/v1 (JSON in and out, OpenAPI document at /api/v1/openapi.json) and the web
 * console's static files under /. Mounted on the metrics server or on a listener of its own
 * (`--console-port`). Every error has one shape: `{ "error": { "kind", "message", "hint" } }`, from the
 * FloeError the operation raised; nothing here ever answers with a secret (operations.ts builds the
 * views; worker-reported errors were redacted before they reached the control plane).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type pg from 'pg';
import { z } from 'zod';
import { FloeError, coerceError, printable } from '../errors.js';
import { collectStatus, type StatusReport } from '../cli/status.js';
import type { PipelineHistory, RecentAlerts, SourceHealthBoard } from '../console/history.js';
import { serveConsoleFiles } from '../console/static.js';
import { authorize, type AuthPolicy } from './auth.js';
import { openApiDocument } from './openapi.js';
import * as ops from './operations.js';

/** Where the API's data comes from: the control plane (floe run) or one pipeline in this process (floe replicate). */
export interface ConsoleBackend {
  /** A control-plane connection for the duration of `fn`; undefined without a control plane. */
  readonly withDb?: <T>(fn: (db: pg.ClientBase) => Promise<T>) => Promise<T>;
  /** Every pipeline's status, as `floe status --json`. */
  status(): Promise<StatusReport>;
  readonly history: PipelineHistory;
  readonly alerts: RecentAlerts;
  readonly sources: SourceHealthBoard;
}

export interface ConsoleServerOptions {
  readonly backend: ConsoleBackend;
  readonly auth: AuthPolicy;
  /** Where the built console is (dist/web); a missing directory serves a page saying how to build it. */
  readonly webRoot?: string;
}

const name = z.string().max(200);
const jsonObject = z.record(z.string(), z.unknown());
const sourceBody = z.strictObject({
  name,
  url: z.string().max(2000),
  password: z.string().max(8000).nullable().optional(),
  options: jsonObject.optional(),
});
const sourceUpdateBody = sourceBody.omit({ name: true });
const destinationBody = z.strictObject({
  name,
  type: z.string().max(50),
  url: z.string().max(2000).optional(),
  path: z.string().max(2000).optional(),
  secrets: jsonObject.optional(),
  options: jsonObject.optional(),
});
const destinationUpdateBody = destinationBody.omit({ name: true });
const pipelineBody = z.strictObject({
  name,
  source: name,
  destination: name,
  publication: z.string().max(200),
  slot: z.string().max(200).optional(),
  options: jsonObject.optional(),
  start: z.boolean().optional(),
});
const pipelinePatchBody = z.strictObject({
  options: jsonObject.optional(),
  reset: z.array(z.string().max(100)).max(50).optional(),
  publication: z.string().max(200).optional(),
});
const actionBody = z.strictObject({ action: z.string().max(50), table: z.string().max(300).optional() });

/** Parses a request body with a zod schema; a mismatch is a 400 naming the first problem. */
function body<T>(schema: z.ZodType<T>, req: FastifyRequest): T {
  if (req.body === undefined || req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) {
    throw new FloeError('config', 'the request body must be a JSON object', { hint: 'send Content-Type: application/json' });
  }
  const r = schema.safeParse(req.body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new FloeError('config', `unknown field "${printable(issue.keys[0] ?? '')}"`, { hint: 'see /api/v1/openapi.json' });
  }
  const where = issue.path.map(String).join('.') || 'body';
  const message = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
  throw new FloeError('config', `${printable(where)} ${message}`, { hint: 'see /api/v1/openapi.json' });
}

export function errorBody(err: FloeError): { error: { kind: string; message: string; hint: string | null } } {
  return { error: { kind: err.kind, message: err.message, hint: err.hint ?? null } };
}

function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  let e: FloeError;
  let status: number;
  const fastifyStatus = (err as { statusCode?: number }).statusCode;
  if (err instanceof FloeError) {
    e = err;
    status = ops.httpStatusOf(err);
  } else if (typeof fastifyStatus === 'number' && fastifyStatus >= 400 && fastifyStatus < 500) {
    // Fastify's own refusals: unparsable JSON, unsupported content type, a body too large.
    status = fastifyStatus;
    const message = status === 415 ? 'unsupported content-type: the API takes application/json' : (err as Error).message;
    e = new FloeError('config', message, {
      hint: status === 415 ? 'send Content-Type: application/json' : 'send a JSON object (see /api/v1/openapi.json)',
    });
  } else {
    const code = (err as { code?: string }).code ?? '';
    // A constraint of the control plane refused the write (e.g. a concurrent insert of the same name).
    if (code.startsWith('23')) {
      status = 409;
      e = new FloeError('config', (err as Error).message);
    } else {
      e = coerceError(err);
      status = e.kind === 'connection' || e.kind === 'state' ? 503 : 500;
    }
  }
  return reply.code(status).type('application/json').send(errorBody(e));
}

/** Adds the console's routes to `app` (the metrics server or the console's own). */
export async function registerConsole(app: FastifyInstance, options: ConsoleServerOptions): Promise<void> {
  const { backend, auth } = options;
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('cache-control', 'no-store');
    return payload;
  });
  await app.register(
    async (api) => {
      api.setErrorHandler((err, _req, reply) => sendError(reply, err));
      api.setNotFoundHandler((req, reply) =>
        sendError(
          reply,
          ops.withStatus(
            new FloeError('config', `no such endpoint: ${req.method} ${req.url.split('?')[0]!.slice(0, 100)}`, {
              hint: 'see /api/v1/openapi.json',
            }),
            404,
          ),
        ),
      );
      api.addHook('onRequest', async (req) => {
        if (req.url.startsWith('/api/v1/openapi.json') || req.url.startsWith('/api/v1/session')) return;
        authorize(auth, req, req.method !== 'GET' && req.method !== 'HEAD');
      });
      registerRoutes(api, backend, auth);
    },
    { prefix: '/api/v1' },
  );
  serveConsoleFiles(app, options.webRoot);
}

function controlPlane(backend: ConsoleBackend) {
  if (!backend.withDb) {
    throw ops.withStatus(
      new FloeError('config', 'this floe has no control plane (floe replicate)', {
        hint: 'sources, destinations and actions need floe run',
      }),
      405,
    );
  }
  return backend.withDb;
}

/** Runs `fn` in one transaction on a control-plane connection: a refused request writes nothing. */
async function write<T>(backend: ConsoleBackend, fn: (db: pg.ClientBase) => Promise<T>): Promise<T> {
  return controlPlane(backend)(async (db) => {
    await db.query('BEGIN');
    try {
      const r = await fn(db);
      await db.query('COMMIT');
      return r;
    } catch (err) {
      await db.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  });
}

const read = <T>(backend: ConsoleBackend, fn: (db: pg.ClientBase) => Promise<T>): Promise<T> => controlPlane(backend)(fn);

type Named = { Params: { name: string } };

function registerRoutes(api: FastifyInstance, backend: ConsoleBackend, auth: AuthPolicy): void {
  api.get('/openapi.json', async () => openApiDocument());
  // What the console needs to know before it asks for a token; says nothing secret.
  api.get('/session', async () => ({
    token_configured: auth.token !== undefined,
    public_read: auth.publicRead,
    read_only: auth.readOnly || !backend.withDb,
  }));
  api.get('/status', async () => backend.status());

  // ---- sources ----
  api.get('/sources', async () => ({ sources: await read(backend, ops.sourcesView) }));
  api.get<Named>('/sources/:name', async (req) => read(backend, (db) => ops.sourceViewOf(db, req.params.name)));
  api.post('/sources', async (req, reply) => {
    const input = body(sourceBody, req);
    reply.code(201);
    return write(backend, async (db) => {
      await ops.addSource(db, input);
      return ops.sourceViewOf(db, input.name);
    });
  });
  api.put<Named>('/sources/:name', async (req) => {
    const input = { ...body(sourceUpdateBody, req), name: req.params.name };
    return write(backend, async (db) => {
      await ops.updateSource(db, input);
      return ops.sourceViewOf(db, input.name);
    });
  });
  api.delete<Named>('/sources/:name', async (req, reply) => {
    await write(backend, (db) => ops.removeSource(db, req.params.name));
    return reply.code(204).send();
  });

  // ---- destinations ----
  api.get('/destinations', async () => ({ destinations: await read(backend, ops.destinationsView) }));
  api.get<Named>('/destinations/:name', async (req) => read(backend, (db) => ops.destinationViewOf(db, req.params.name)));
  api.post('/destinations', async (req, reply) => {
    const input = body(destinationBody, req);
    reply.code(201);
    return write(backend, async (db) => {
      await ops.addDestination(db, input);
      return ops.destinationViewOf(db, input.name);
    });
  });
  api.put<Named>('/destinations/:name', async (req) => {
    const input = { ...body(destinationUpdateBody, req), name: req.params.name };
    return write(backend, async (db) => {
      await ops.updateDestination(db, input);
      return ops.destinationViewOf(db, input.name);
    });
  });
  api.delete<Named>('/destinations/:name', async (req, reply) => {
    await write(backend, (db) => ops.removeDestination(db, req.params.name));
    return reply.code(204).send();
  });

  // ---- pipelines ----
  api.get('/pipelines', async () => ({
    pipelines: (await backend.status()).pipelines.map((p) => ({
      ...p,
      throughput_bytes_per_second: backend.history.samples(p.name).at(-1)?.throughput_bytes_per_second ?? null,
    })),
  }));
  api.get<Named>('/pipelines/:name', async (req) => pipelineDetail(backend, req.params.name));
  api.post('/pipelines', async (req, reply) => {
    const { start, ...input } = body(pipelineBody, req);
    await write(backend, (db) => ops.addPipeline(db, input, start ?? false));
    reply.code(201);
    return pipelineDetail(backend, input.name);
  });
  api.patch<Named>('/pipelines/:name', async (req) => {
    const change = body(pipelinePatchBody, req);
    await write(backend, (db) => ops.updatePipeline(db, req.params.name, change));
    return pipelineDetail(backend, req.params.name);
  });
  api.delete<{ Params: { name: string }; Querystring: { drop_slot?: string } }>('/pipelines/:name', async (req, reply) => {
    const dropSlot = req.query.drop_slot;
    if (dropSlot !== undefined && dropSlot !== 'true' && dropSlot !== 'false') {
      throw new FloeError('config', 'drop_slot must be true or false');
    }
    await write(backend, (db) => ops.deletePipeline(db, req.params.name, dropSlot === 'true'));
    return reply.code(dropSlot === 'true' ? 202 : 204).send();
  });
  api.post<Named>('/pipelines/:name/actions', async (req, reply) => {
    const { action, table } = body(actionBody, req);
    await write(backend, (db) => ops.pipelineAction(db, req.params.name, action as ops.PipelineAction, table));
    reply.code(202);
    return { pipeline: req.params.name, action, ...(table === undefined ? {} : { table }), accepted: true };
  });

  // ---- monitoring ----
  api.get('/monitor/sources', async () => ({ thresholds: backend.sources.thresholds, sources: backend.sources.list() }));
  api.get('/alerts', async () => ({ alerts: backend.alerts.list() }));
}

async function pipelineDetail(backend: ConsoleBackend, name: string) {
  const entry = (await backend.status()).pipelines.find((p) => p.name === name);
  if (!entry) throw ops.notFound('pipeline', name);
  const config = backend.withDb ? (await read(backend, ops.pipelineConfigs)).find((p) => p.name === name) : undefined;
  const tables = backend.withDb ? await read(backend, (db) => ops.pipelineTables(db, name)) : [];
  const slot = entry.slot;
  return {
    ...entry,
    options: config?.options ?? {},
    table_states: tables,
    history: backend.history.samples(name),
    alerts: backend.alerts.list().filter((a) => a.slot === slot),
  };
}

/** A control-plane backend on a pool (floe run). */
export function controlPlaneBackend(pool: pg.Pool, parts: Omit<ConsoleBackend, 'withDb' | 'status'>): ConsoleBackend {
  const withDb = async <T>(fn: (db: pg.ClientBase) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
  return { ...parts, withDb, status: () => withDb((db) => collectStatus(db)) };
}
