/**
 * `floe emulator`: a local Snowflake speaking the account-host and ingest-host
 * HTTP APIs on one port — key-pair JWT auth, Snowpipe Streaming named
 * channels, SQL API v2 — backed by DuckDB, with fault injection for tests.
 * docs/emulator.md is the user guide and lists the wire-level decisions.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { gunzipSync, gzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthFailure, Authenticator, type Principal } from './auth.js';
import { Faults, faultConfigSchema, type FaultConfig, type RouteName } from './faults.js';
import { SqlEngine, renderResult, type StatementResult } from './sql/engine.js';
import { StreamingFailure, StreamingService, type StreamingState } from './streaming.js';
import { SqlApi, type StatementRequest } from './sql-api.js';
import { SqlFailure } from './sql/failure.js';
import { BodyPool } from './body-pool.js';
import type { Readable } from 'node:stream';

export interface EmulatorOptions {
  /** TCP port; 0 picks a free one. (Default: 0) */
  readonly port?: number;
  /** (Default: '127.0.0.1') */
  readonly host?: string;
  /** DuckDB file, or ':memory:'. (Default: ':memory:') */
  readonly dataPath?: string;
  /** Account identifier tokens must name, upper-case. (Default: 'EMULATOR') */
  readonly account?: string;
  /** Delay between an append and its rows becoming visible. (Default: 200) */
  readonly commitDelayMs?: number;
  /** Up to this much more delay, uniformly random per batch; a channel's batches still commit in order. (Default: 0) */
  readonly commitJitterMs?: number;
  /** Bearer token the admin routes (`/_emulator/*`) require. (Default: a random one, see RunningEmulator.adminToken) */
  readonly adminToken?: string;
  /** Append requests per second per channel before 429; 0 disables. (Default: 10) */
  readonly channelRps?: number;
  /** Warehouses that exist. (Default: ['COMPUTE_WH']) */
  readonly warehouses?: readonly string[];
  /** How long a SQL API POST waits before answering 202. (Default: 45000) */
  readonly sqlSyncWaitMs?: number;
  /** Rows per SQL API result partition; bigger results are paged with `?partition=n`. (Default: 100000) */
  readonly sqlPartitionRows?: number;
  /** Largest append body on the wire, bytes. (Default: 4,000,000: Snowflake documents 4 MB) */
  readonly maxAppendBytes?: number;
  /** HTTP status of STALE_CONTINUATION_TOKEN_SEQUENCER. (Default: 400) */
  readonly staleTokenStatus?: number;
  /**
   * Check and load append bodies with DuckDB's JSON and regular-expression functions where that provably
   * stores what the row-by-row JavaScript path stores (ndjson-body.ts); false always takes that path, the
   * reference the tests compare against. (Default: true)
   */
  readonly plainLoads?: boolean;
  /** Called once per answered request (method, path without query, status, milliseconds). */
  readonly onRequest?: (line: { method: string; path: string; status: number; ms: number }) => void;
}

export interface EmulatorState {
  account: string;
  users: { name: string; fingerprint: string }[];
  channels: StreamingState['channels'];
  tables: { database: string; schema: string; name: string; rows: number }[];
  faults: FaultConfig;
}

export interface RunningEmulator {
  readonly url: string;
  readonly port: number;
  readonly account: string;
  /** What admin routes need in `Authorization: Bearer ...`. */
  readonly adminToken: string;
  /** Registers a user's RSA public key (PEM); returns its fingerprint `SHA256:...`. */
  addUser(name: string, publicKeyPem: string): string;
  readonly faults: {
    set(config: FaultConfig): void;
    clear(): void;
    get(): FaultConfig;
  };
  state(): Promise<EmulatorState>;
  /** Runs SQL directly (no auth, no faults), for test assertions. */
  query(sql: string, session?: { database?: string; schema?: string }): Promise<StatementResult>;
  /** Commits every pending batch now, regardless of the commit delay (not while commits are stalled). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;

export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const account = (options.account ?? 'EMULATOR').toUpperCase();
  const host = options.host ?? '127.0.0.1';
  const maxAppendBytes = options.maxAppendBytes ?? 4_000_000;
  const adminToken = options.adminToken ?? randomBytes(24).toString('base64url');
  if (adminToken.length < 16) throw new Error('the emulator admin token must be at least 16 characters');
  const engine = await SqlEngine.open(options.dataPath ?? ':memory:', account, options.warehouses ?? ['COMPUTE_WH']);
  const auth = new Authenticator(account);
  const faults = new Faults();
  // Request bodies; an append's comes back when its batch commits, any other is left to GC.
  const bodies = new BodyPool();
  const streaming = new StreamingService(engine, {
    releaseBody: (b) => bodies.release(b),
    commitDelayMs: options.commitDelayMs ?? 200,
    commitJitterMs: options.commitJitterMs ?? 0,
    channelRps: options.channelRps ?? 10,
    staleTokenStatus: options.staleTokenStatus ?? 400,
    plainLoads: options.plainLoads ?? true,
  });
  await streaming.load();
  const sqlApi = new SqlApi(engine, { syncWaitMs: options.sqlSyncWaitMs ?? 45_000, partitionRows: options.sqlPartitionRows ?? 100_000 });
  let refuseTimer: NodeJS.Timeout | undefined;
  let listening = true;

  const app: FastifyInstance = Fastify({ logger: false, bodyLimit: 64 * MiB, forceCloseConnections: true });
  const onRequest = options.onRequest;
  if (onRequest) {
    app.addHook('onResponse', async (request, reply) => {
      // The path only: query strings carry continuation tokens and request ids, which are noise here.
      onRequest({ method: request.method, path: request.url.split('?')[0]!, status: reply.statusCode, ms: Math.round(reply.elapsedTime) });
    });
  }
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', async (request: FastifyRequest, payload: Readable) =>
    bodies.read(payload, request.headers['content-length'], 64 * MiB),
  );

  const applyFaults = (config: FaultConfig) => {
    faults.set(config);
    if (config.stallCommits !== undefined) {
      streaming.stalled = config.stallCommits;
      if (!config.stallCommits) streaming.schedule();
    }
    if (config.compat?.oauthTtlSeconds !== undefined) auth.oauthTtlSeconds = config.compat.oauthTtlSeconds;
    if (config.compat?.partitionRows !== undefined) sqlApi.partitionRows = config.compat.partitionRows;
    if (config.invalidateChannels) streaming.invalidate(config.invalidateChannels.channel, config.invalidateChannels.code);
    if (config.outage?.mode === 'refuse') {
      refuse(config.outage.durationMs);
    }
  };
  const clearFaults = () => {
    faults.clear();
    streaming.stalled = false;
    auth.oauthTtlSeconds = 3600;
    sqlApi.partitionRows = options.sqlPartitionRows ?? 100_000;
    streaming.schedule();
    restoreListener();
  };

  // --- helpers -------------------------------------------------------------------

  const healthy = (code: string) => (code === 'SUCCESS' && faults.config.compat?.healthyStatus === 'ACTIVE' ? 'ACTIVE' : code);

  const streamingError = (reply: FastifyReply, status: number, code: string, message: string) => {
    const shape = faults.config.compat?.errorShape ?? 'code';
    const body =
      shape === 'string'
        ? JSON.stringify(code)
        : shape === 'error'
          ? { error: code }
          : shape === 'error_code'
            ? { error_code: code, message }
            : { code, message };
    return reply.code(status).type('application/json').send(body);
  };

  const drop = (request: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    request.raw.socket.destroy();
  };

  /**
   * The documented request headers (reference §1.3, §3.1): `Accept: application/json` on every call (391902
   * without it; `compat.requireAccept: false` relaxes it), and on the SQL API a `User-Agent` and, on a POST,
   * `Content-Type: application/json` (415 otherwise; none at all is read as JSON).
   */
  const refuseHeaders = (kind: 'streaming' | 'sql' | 'account', request: FastifyRequest): { status: number; body: object } | undefined => {
    const accept = request.headers.accept;
    if (faults.config.compat?.requireAccept !== false && !(accept && /application\/json|\*\/\*/.test(accept))) {
      return { status: 400, body: { code: '391902', message: `Unsupported Accept header ${accept ?? 'null'} is specified` } };
    }
    if (kind !== 'sql') return undefined;
    if (!request.headers['user-agent']) {
      return { status: 400, body: { code: '390142', message: 'The User-Agent header is required (<application>/<version>).' } };
    }
    const type = request.headers['content-type'];
    if (request.method === 'POST' && type !== undefined && !/^application\/json\b/i.test(type)) {
      return { status: 415, body: { message: `Unsupported Content-Type ${type}; send application/json.` } };
    }
    return undefined;
  };

  /** Runs fault decisions, auth and the handler; maps errors to Snowflake bodies. */
  const handle =
    (
      route: RouteName,
      kind: 'streaming' | 'sql' | 'account',
      fn: (request: FastifyRequest, reply: FastifyReply, who: Principal) => Promise<unknown>,
    ) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
      const decision = faults.decide(route);
      if (decision.latencyMs > 0) await sleep(decision.latencyMs);
      if (faults.config.outage?.mode === 'http503') {
        return kind === 'sql'
          ? reply.code(503).send({ code: '390503', message: 'Service temporarily unavailable (emulated outage).' })
          : streamingError(reply, 503, 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST', 'Service temporarily unavailable (emulated outage).');
      }
      if (decision.dropBefore) return drop(request, reply);
      if (decision.error) {
        const { status, code, message } = decision.error;
        if (kind === 'sql') {
          return reply.code(status).send({ code: code ?? (status === 429 ? '390505' : '390503'), message: message ?? 'Injected fault.' });
        }
        return streamingError(
          reply,
          status,
          code ?? (status === 429 ? 'ERR_TOO_MANY_REQUESTS' : 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST'),
          message ?? 'Injected fault.',
        );
      }
      const refused = refuseHeaders(kind, request);
      if (refused) return reply.code(refused.status).send(refused.body);
      if (route === 'token' && request.headers['x-snowflake-authorization-token-type'] !== undefined) {
        // The documented exchange sends Authorization and Content-Type only: a token type there is a client bug.
        return reply.code(400).send({
          code: 'invalid_request',
          message:
            'X-Snowflake-Authorization-Token-Type is not part of the /oauth/token exchange; send only Authorization and Content-Type.',
        });
      }
      let who: Principal;
      try {
        let authorization = request.headers.authorization;
        if (!authorization && route === 'token') {
          const assertion = new URLSearchParams(bodyText(request)).get('assertion');
          if (assertion) authorization = `Bearer ${assertion}`;
        }
        const tokenType = request.headers['x-snowflake-authorization-token-type'];
        who = await auth.verify(authorization, typeof tokenType === 'string' ? tokenType : undefined);
        if ((route === 'hostname' || route === 'token') && who.kind !== 'keypair') {
          throw new AuthFailure('390144', 'JWT token is invalid. This route needs a key-pair JWT.');
        }
      } catch (err) {
        if (err instanceof AuthFailure) return reply.code(401).send({ code: err.code, message: err.message });
        throw err;
      }
      if (decision.dropAfter) {
        // The request takes full effect; instead of the response the client gets a dead connection (ambiguous outcome).
        Object.assign(reply, {
          send: () => {
            drop(request, reply);
            return reply;
          },
        });
      }
      try {
        await fn(request, reply, who);
      } catch (err) {
        if (err instanceof StreamingFailure) return streamingError(reply, err.status, err.code, err.message);
        if (err instanceof SqlFailure) return reply.code(422).send({ code: err.code, message: err.message, sqlState: err.sqlState });
        throw err;
      }
      return reply;
    };

  const bodyText = (request: FastifyRequest) => (Buffer.isBuffer(request.body) ? request.body.toString('utf8') : '');
  const bodyJson = (request: FastifyRequest): Record<string, unknown> => {
    const text = bodyText(request).trim();
    if (text === '') return {};
    try {
      const v: unknown = JSON.parse(text);
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // fall through
    }
    throw new StreamingFailure(400, 'ERR_INVALID_REQUEST_BODY', 'The request body is not a JSON object.');
  };

  interface PipePath {
    db: string;
    schema: string;
    pipe: string;
  }
  interface ChannelPath extends PipePath {
    channel: string;
  }

  // --- account host -------------------------------------------------------------

  app.get(
    '/v2/streaming/hostname',
    handle('hostname', 'account', async (request, reply) => {
      let h = request.headers.host ?? `${host}:${port}`;
      if (faults.config.compat?.hostnameUnderscores) h = h.replaceAll('-', '_');
      // The REST reference documents {"hostname": ...}; live services answer plain text (compat switch).
      const shape = faults.config.compat?.hostname ?? 'json';
      if (shape === 'json') return reply.type('application/json').send({ hostname: h });
      if (shape === 'quoted') return reply.type('application/json').send(JSON.stringify(h));
      return reply.type('text/plain').send(h);
    }),
  );

  app.post(
    '/oauth/token',
    handle('token', 'account', async (request, reply, who) => {
      const form = new URLSearchParams(bodyText(request));
      if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
        return reply.code(400).send({ code: 'invalid_grant', message: 'grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer' });
      }
      const role = /session:role:(\S+)/.exec(form.get('scope') ?? '')?.[1];
      const { token } = await auth.issueScoped(who.user, role);
      // Documented: {"token": ...}; observed: the bare token as text (compat switch).
      if (faults.config.compat?.token === 'text') return reply.type('text/plain').send(token);
      return reply.type('application/json').send({ token });
    }),
  );

  // --- streaming ------------------------------------------------------------------

  const channelPath = '/v2/streaming/databases/:db/schemas/:schema/pipes/:pipe/channels/:channel';
  app.put(
    channelPath,
    handle('open', 'streaming', async (request, reply) => {
      const p = request.params as ChannelPath;
      const body = bodyJson(request);
      const r = await streaming.open(p.db, p.schema, p.pipe, p.channel, body);
      r.channel_status.channel_status_code = healthy(r.channel_status.channel_status_code);
      return reply.send(r);
    }),
  );
  app.delete(
    channelPath,
    handle('drop', 'streaming', async (request, reply) => {
      const p = request.params as ChannelPath;
      const body = bodyJson(request);
      await streaming.drop(p.db, p.schema, p.pipe, p.channel, body.fail_on_uncommitted_rows === true);
      return reply.send({});
    }),
  );
  app.post(
    '/v2/streaming/data/databases/:db/schemas/:schema/pipes/:pipe/channels/:channel/rows',
    handle('append', 'streaming', async (request, reply) => {
      const p = request.params as ChannelPath;
      const q = request.query as Record<string, string | undefined>;
      const ch = streaming.checkAppend(p.db, p.schema, p.pipe, p.channel, q.continuationToken);
      const { clientSeq, rowSeq } = ch;
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      if (raw.length > maxAppendBytes) {
        throw new StreamingFailure(
          413,
          'ERR_REQUEST_TOO_LARGE',
          `The request body is ${raw.length} bytes; the limit is ${maxAppendBytes} bytes.`,
        );
      }
      let bytes: Buffer;
      const encoding = (request.headers['content-encoding'] ?? '').toLowerCase();
      if (encoding === 'gzip') {
        try {
          bytes = gunzipSync(raw, { maxOutputLength: 64 * MiB });
        } catch {
          throw new StreamingFailure(400, 'ERR_INVALID_REQUEST_BODY', 'The gzip body could not be decompressed.');
        }
        bodies.release(raw);
      } else if (encoding === '' || encoding === 'identity') {
        bytes = raw;
      } else {
        throw new StreamingFailure(
          415,
          'ERR_UNSUPPORTED_CONTENT_ENCODING',
          `Content-Encoding ${encoding} is not supported by the emulator.`,
        );
      }
      const rows = streaming.checkBody(ch, clientSeq, rowSeq, bytes);
      const end = q.endOffsetToken ?? q.offsetToken ?? null;
      const start = q.startOffsetToken ?? null;
      const next = streaming.append(ch, rows, start === '' ? null : start, end === '' ? null : end);
      return reply.send({ next_continuation_token: next });
    }),
  );
  app.post(
    '/v2/streaming/databases/:db/schemas/:schema/pipes/:pipeAction',
    handle('status', 'streaming', async (request, reply) => {
      const p = request.params as { db: string; schema: string; pipeAction: string };
      const i = p.pipeAction.lastIndexOf(':');
      const action = i < 0 ? '' : p.pipeAction.slice(i + 1);
      if (action !== 'bulk-channel-status') {
        throw new StreamingFailure(404, 'ERR_NOT_FOUND', `Unknown pipe action '${action}' (the emulator implements :bulk-channel-status).`);
      }
      const body = bodyJson(request);
      const names = Array.isArray(body.channel_names) ? body.channel_names.filter((x): x is string => typeof x === 'string') : [];
      const statuses = await streaming.bulkStatus(p.db, p.schema, p.pipeAction.slice(0, i), names);
      for (const s of Object.values(statuses)) s.channel_status_code = healthy(s.channel_status_code);
      return reply.send({ channel_statuses: statuses });
    }),
  );

  // --- SQL API ----------------------------------------------------------------------

  app.post(
    '/api/v2/statements',
    handle('sql', 'sql', async (request, reply, who) => {
      let body: StatementRequest;
      try {
        body = JSON.parse(bodyText(request)) as StatementRequest;
      } catch {
        return reply.code(400).send({ code: '390142', message: 'Incoming request does not contain a valid payload.' });
      }
      const r = await sqlApi.submit(body, request.query as Record<string, string>, who.user, who.role);
      if (r.link) reply.header('Link', r.link);
      return reply.code(r.status).send(r.body);
    }),
  );
  app.get(
    '/api/v2/statements/:handle',
    handle('sql-status', 'sql', async (request, reply) => {
      const r = sqlApi.status((request.params as { handle: string }).handle, (request.query as { partition?: string }).partition);
      if (r.link) reply.header('Link', r.link);
      if (r.gzip)
        return reply
          .code(r.status)
          .header('Content-Encoding', 'gzip')
          .type('application/json')
          .send(gzipSync(JSON.stringify(r.body)));
      return reply.code(r.status).send(r.body);
    }),
  );
  app.post(
    '/api/v2/statements/:handle/cancel',
    handle('cancel', 'sql', async (request, reply) => {
      const r = await sqlApi.cancel((request.params as { handle: string }).handle);
      return reply.code(r.status).send(r.body);
    }),
  );

  // A route called with a method it does not take: 405, as the SQL API answers (its documented error codes).
  const wrongMethod = (allowed: string) => async (_request: FastifyRequest, reply: FastifyReply) =>
    reply
      .code(405)
      .header('Allow', allowed)
      .send({ message: `method not allowed; this route takes ${allowed}` });
  app.route({ method: ['GET', 'PUT', 'DELETE', 'PATCH'], url: '/api/v2/statements', handler: wrongMethod('POST') });
  app.route({ method: ['POST', 'PUT', 'DELETE', 'PATCH'], url: '/api/v2/statements/:handle', handler: wrongMethod('GET') });
  app.route({ method: ['GET', 'PUT', 'DELETE', 'PATCH'], url: '/api/v2/statements/:handle/cancel', handler: wrongMethod('POST') });

  // --- admin (admin token, no faults) ---------------------------------------------------

  // Admin routes replace user keys and inject faults: they need the admin token, compared in constant time.
  const adminDigest = createHash('sha256').update(adminToken).digest();
  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/_emulator/')) return;
    const given = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1] ?? '';
    if (!timingSafeEqual(createHash('sha256').update(given).digest(), adminDigest)) {
      return reply.code(401).send({
        message: 'admin routes need Authorization: Bearer <admin token> (printed by floe emulator at start, or FLOE_EMULATOR_ADMIN_TOKEN)',
      });
    }
  });

  app.post('/_emulator/users', async (request, reply) => {
    const body = safeJson(request);
    if (typeof body?.name !== 'string' || typeof body.publicKeyPem !== 'string') {
      return reply.code(400).send({ message: 'expected {"name": "...", "publicKeyPem": "-----BEGIN PUBLIC KEY-----..."}' });
    }
    try {
      const fingerprint = auth.addUser(body.name, body.publicKeyPem);
      return reply.send({ name: body.name.toUpperCase(), fingerprint });
    } catch (err) {
      return reply.code(400).send({ message: `not a usable RSA public key: ${(err as Error).message}` });
    }
  });
  app.post('/_emulator/warehouses', async (request, reply) => {
    const body = safeJson(request);
    if (typeof body?.name !== 'string') return reply.code(400).send({ message: 'expected {"name": "WH"}' });
    engine.warehouses.add(body.name);
    return reply.send({ warehouses: [...engine.warehouses] });
  });
  app.get('/_emulator/faults', async (_request, reply) => reply.send(faults.config));
  app.post('/_emulator/faults', async (request, reply) => {
    const parsed = faultConfigSchema.safeParse(safeJson(request));
    if (!parsed.success) return reply.code(400).send({ message: parsed.error.message });
    applyFaults(parsed.data);
    return reply.send(faults.config);
  });
  app.delete('/_emulator/faults', async (_request, reply) => {
    clearFaults();
    return reply.send({});
  });
  app.get('/_emulator/state', async (_request, reply) => reply.send(await state()));
  app.post('/_emulator/flush', async (_request, reply) => {
    await flush();
    return reply.send({});
  });

  const safeJson = (request: FastifyRequest): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(bodyText(request)) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };

  async function state(): Promise<EmulatorState> {
    const conn = await engine.connect();
    try {
      const t = await conn.runAndReadAll(
        `SELECT schema_name, table_name, estimated_size FROM duckdb_tables() WHERE database_name = current_database() AND schema_name LIKE '%.%' ORDER BY 1, 2`,
      );
      const tables: EmulatorState['tables'] = [];
      for (const [s, n] of t.getRowsJS()) {
        const schemaName = String(s);
        const c = await conn.runAndReadAll(
          `SELECT count(*) FROM "${schemaName.replaceAll('"', '""')}"."${String(n).replaceAll('"', '""')}"`,
        );
        const dot = schemaName.indexOf('.');
        tables.push({
          database: schemaName.slice(0, dot),
          schema: schemaName.slice(dot + 1),
          name: String(n),
          rows: Number(c.getRowsJS()[0]![0]),
        });
      }
      return { account, users: auth.users(), channels: streaming.state().channels, tables, faults: faults.config };
    } finally {
      conn.closeSync();
    }
  }

  async function flush(): Promise<void> {
    await streaming.commitAll();
  }

  function refuse(durationMs: number | undefined): void {
    if (listening) {
      listening = false;
      app.server.close();
      app.server.closeAllConnections();
    }
    if (refuseTimer) clearTimeout(refuseTimer);
    if (durationMs !== undefined) refuseTimer = setTimeout(restoreListener, durationMs);
  }

  function restoreListener(): void {
    if (refuseTimer) clearTimeout(refuseTimer);
    refuseTimer = undefined;
    if (faults.config.outage?.mode === 'refuse') faults.set({ outage: undefined });
    if (!listening) {
      listening = true;
      app.server.listen(port, host);
    }
  }

  await app.listen({ port: options.port ?? 0, host });
  const port = (app.server.address() as AddressInfo).port;
  const url = `http://${host}:${port}`;

  return {
    url,
    port,
    account,
    adminToken,
    addUser: (name, pem) => auth.addUser(name, pem),
    faults: { set: (c) => applyFaults(faultConfigSchema.parse(c)), clear: clearFaults, get: () => faults.config },
    state,
    async query(sql, session = {}) {
      const conn = await engine.connect();
      try {
        const s = {
          database: session.database ?? null,
          schema: session.schema ?? null,
          warehouse: null,
          role: 'ACCOUNTADMIN',
          user: 'EMULATOR',
        };
        let last: StatementResult = { columns: [], rows: [] };
        for (const st of engine.split(sql)) last = await engine.execute(conn, s, st);
        return last;
      } finally {
        conn.closeSync();
      }
    },
    flush,
    async close() {
      if (refuseTimer) clearTimeout(refuseTimer);
      await streaming.close();
      if (!listening) {
        listening = true;
        await new Promise<void>((r) => app.server.listen(port, host, () => r()));
      }
      await app.close();
      await engine.writeLock.run(async () => engine.close());
    },
  };
}

export { renderResult };
