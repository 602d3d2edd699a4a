/**
 * A small in-test Snowflake for the HTTP clients: it answers the documented shapes and, on request, the
 * variant shapes and faults of snowflake-api.md (hostname/token body variants, 202 polling, 422, 429 with
 * Retry-After, 5xx, a connection dropped after the request was applied, reopen-class codes, row errors).
 * Streaming state follows §1.16: client sequencer bumped on open, stale tokens rejected, uncommitted data
 * discarded on reopen, commits in order and atomic per request. It records what it committed so tests
 * can check for gaps and duplicates. SQL routes are scripted by the test.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { expect } from 'vitest';
import { FloeError } from '../../src/errors.js';

export type StubRoute = 'hostname' | 'token' | 'open' | 'append' | 'drop' | 'status' | 'submit' | 'poll' | 'cancel';

export interface RecordedRequest {
  readonly route: StubRoute;
  readonly method: string;
  readonly url: string;
  readonly query: URLSearchParams;
  readonly headers: Record<string, string | string[] | undefined>;
  /** Decompressed body text. */
  readonly body: string;
  readonly wireBytes: number;
  readonly at: number;
}

export type Fault =
  | { readonly kind: 'reply'; readonly status: number; readonly body?: unknown; readonly headers?: Record<string, string> }
  /** Apply the request (and optionally commit everything), then cut the connection without answering. */
  | { readonly kind: 'drop-after-apply'; readonly commit?: boolean }
  | { readonly kind: 'drop-before-apply' }
  /** Answer normally, but only after this long. */
  | { readonly kind: 'delay'; readonly ms: number };

interface Batch {
  readonly lines: string[];
  readonly endToken: string | null;
}

interface StubChannel {
  clientSeq: number;
  rowSeq: number;
  committed: string | null;
  pending: Batch[];
  rowsInserted: number;
  rowsErrorCount: number;
  lastErrorOffset: string | null;
  lastErrorMessage: string | null;
  statusCode: string;
}

export interface SqlCall {
  readonly query: URLSearchParams;
  readonly body: Record<string, unknown>;
}
export interface StubReply {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  readonly gzip?: boolean;
}

export interface StubOptions {
  /** What GET /v2/streaming/hostname answers with (Default: text). */
  hostnameShape?: 'text' | 'json' | 'quoted' | 'json-host';
  hostname?: string;
  tokenShape?: 'raw' | 'json';
  /** Lifetime of minted scoped tokens in seconds (Default: 3600). */
  tokenTtlSeconds?: number;
  /** When pending batches commit (Default: on every status request). */
  commit?: 'on-status' | 'manual';
  /** Wire-size limit of an append (Default: 4,000,000 → 413). */
  maxWireBytes?: number;
  /** Answer 401 to every request with this body (auth failure tests). */
  rejectAuth?: { status: number; body: unknown };
}

export class SnowflakeStub {
  readonly app: FastifyInstance;
  readonly requests: RecordedRequest[] = [];
  readonly channels = new Map<string, StubChannel>();
  /** Every committed line per channel, in commit order. */
  readonly committedLines = new Map<string, string[]>();
  readonly faults = new Map<StubRoute, Fault[]>();
  options: StubOptions;
  onSubmit: (call: SqlCall) => StubReply = () => ({ status: 200, body: result([], []) });
  onPoll: (handle: string, query: URLSearchParams) => StubReply = () => ({ status: 404 });
  #tokens = 0;
  url = '';

  constructor(options: StubOptions = {}) {
    this.options = options;
    this.app = Fastify({ bodyLimit: 64 * 1024 * 1024 });
    this.app.removeAllContentTypeParsers();
    this.app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    this.app.all('/*', (req, reply) => this.#handle(req, reply));
  }

  async start(): Promise<string> {
    await this.app.listen({ port: 0, host: '127.0.0.1' });
    const addr = this.app.server.address();
    if (!addr || typeof addr === 'string') throw new Error('no address');
    this.url = `http://127.0.0.1:${addr.port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    await this.app.close();
  }

  /** Queues one-shot faults for a route; each request to it takes the next one. */
  inject(route: StubRoute, ...faults: Fault[]): void {
    this.faults.set(route, [...(this.faults.get(route) ?? []), ...faults]);
  }

  count(route: StubRoute): number {
    return this.requests.filter((r) => r.route === route).length;
  }

  of(route: StubRoute): RecordedRequest[] {
    return this.requests.filter((r) => r.route === route);
  }

  /** Commits every pending batch of every channel, in order. */
  commitAll(): void {
    for (const [name, ch] of this.channels) {
      for (const b of ch.pending) {
        const out = this.committedLines.get(name) ?? [];
        for (const line of b.lines) {
          if (line.includes('"bad":true')) {
            ch.rowsErrorCount++;
            ch.lastErrorOffset = b.endToken;
            ch.lastErrorMessage = "Numeric value 'abc' is not recognized";
          } else {
            out.push(line);
            ch.rowsInserted++;
          }
        }
        this.committedLines.set(name, out);
        if (b.endToken !== null) ch.committed = b.endToken;
      }
      ch.pending = [];
    }
  }

  /** Acts like another client opening the channel: stale tokens from now on, uncommitted data gone. */
  bumpSequencer(channel: string): void {
    const ch = this.channels.get(channel)!;
    ch.clientSeq++;
    ch.pending = [];
  }

  mintToken(): string {
    const b = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const exp = Math.floor(Date.now() / 1000) + (this.options.tokenTtlSeconds ?? 3600);
    return `${b({ alg: 'HS256', typ: 'JWT' })}.${b({ n: ++this.#tokens, exp })}.c2ln`;
  }

  #route(method: string, path: string): { route: StubRoute; m: RegExpExecArray | null } | undefined {
    const table: [string, RegExp, StubRoute][] = [
      ['GET', /^\/v2\/streaming\/hostname$/, 'hostname'],
      ['POST', /^\/oauth\/token$/, 'token'],
      ['PUT', /^\/v2\/streaming\/databases\/[^/]+\/schemas\/[^/]+\/pipes\/[^/]+\/channels\/([^/]+)$/, 'open'],
      ['DELETE', /^\/v2\/streaming\/databases\/[^/]+\/schemas\/[^/]+\/pipes\/[^/]+\/channels\/([^/]+)$/, 'drop'],
      ['POST', /^\/v2\/streaming\/data\/databases\/[^/]+\/schemas\/[^/]+\/pipes\/[^/]+\/channels\/([^/]+)\/rows$/, 'append'],
      ['POST', /^\/v2\/streaming\/databases\/[^/]+\/schemas\/[^/]+\/pipes\/[^/:]+:bulk-channel-status$/, 'status'],
      ['POST', /^\/api\/v2\/statements$/, 'submit'],
      ['GET', /^\/api\/v2\/statements\/([^/]+)$/, 'poll'],
      ['POST', /^\/api\/v2\/statements\/([^/]+)\/cancel$/, 'cancel'],
    ];
    for (const [m, re, route] of table) {
      const hit = m === method ? re.exec(path) : null;
      if (hit) return { route, m: hit };
    }
    return undefined;
  }

  async #handle(req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const url = new URL(req.url, 'http://stub');
    const found = this.#route(req.method, url.pathname);
    if (!found) return reply.code(404).send({ code: '404', message: `no route ${req.method} ${url.pathname}` });
    const raw = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
    const body = req.headers['content-encoding'] === 'gzip' && raw.length > 0 ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
    const rec: RecordedRequest = {
      route: found.route,
      method: req.method,
      url: req.url,
      query: url.searchParams,
      headers: req.headers,
      body,
      wireBytes: raw.length,
      at: Date.now(),
    };
    this.requests.push(rec);
    if (this.options.rejectAuth) return reply.code(this.options.rejectAuth.status).send(this.options.rejectAuth.body);
    if (!String(req.headers.authorization ?? '').startsWith('Bearer ') || req.headers.accept !== 'application/json') {
      return reply.code(400).send({ code: '391902', message: 'Unsupported Accept header null is specified' });
    }
    const fault = this.faults.get(found.route)?.shift();
    if (fault?.kind === 'reply') {
      return reply
        .code(fault.status)
        .headers(fault.headers ?? {})
        .send(typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body ?? {}));
    }
    if (fault?.kind === 'drop-before-apply') return this.#cut(reply);
    if (fault?.kind === 'delay') await new Promise((resolve) => setTimeout(resolve, fault.ms));
    const answer = this.#answer(found.route, found.m, rec);
    if (fault?.kind === 'drop-after-apply') {
      if (fault.commit) this.commitAll();
      return this.#cut(reply);
    }
    const headers = answer.headers ?? {};
    if (answer.gzip) {
      return reply
        .code(answer.status)
        .headers({ ...headers, 'content-encoding': 'gzip', 'content-type': 'application/json' })
        .send(gzipSync(JSON.stringify(answer.body)));
    }
    const payload = typeof answer.body === 'string' ? answer.body : answer.body === undefined ? '' : JSON.stringify(answer.body);
    return reply.code(answer.status).headers(headers).send(payload);
  }

  #cut(reply: FastifyReply): void {
    reply.hijack();
    reply.raw.socket?.destroy();
  }

  #status(name: string, ch: StubChannel): Record<string, unknown> {
    return {
      channel_name: name,
      channel_status_code: ch.statusCode,
      last_committed_offset_token: ch.committed,
      rows_inserted: ch.rowsInserted,
      rows_parsed: ch.rowsInserted + ch.rowsErrorCount,
      rows_error_count: ch.rowsErrorCount,
      rows_errors: ch.rowsErrorCount,
      last_error_offset_upper_bound: ch.lastErrorOffset,
      last_error_message: ch.lastErrorMessage,
      last_error_timestamp: null,
    };
  }

  #answer(route: StubRoute, m: RegExpExecArray | null, rec: RecordedRequest): StubReply {
    const o = this.options;
    switch (route) {
      case 'hostname': {
        const host = o.hostname ?? 'my_org-my_account.ingest.local';
        const shape = o.hostnameShape ?? 'text';
        if (shape === 'json') return { status: 200, body: { hostname: host }, headers: { 'content-type': 'application/json' } };
        if (shape === 'json-host') return { status: 200, body: { host }, headers: { 'content-type': 'application/json' } };
        if (shape === 'quoted') return { status: 200, body: JSON.stringify(host) };
        return { status: 200, body: `${host}\n`, headers: { 'content-type': 'text/plain' } };
      }
      case 'token': {
        const form = new URLSearchParams(rec.body);
        if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return { status: 400, body: 'bad grant_type' };
        const token = this.mintToken();
        return o.tokenShape === 'json'
          ? { status: 200, body: { token } }
          : { status: 200, body: token, headers: { 'content-type': 'text/plain' } };
      }
      case 'open': {
        const name = decodeURIComponent(m![1]!);
        let ch = this.channels.get(name);
        if (!ch) {
          ch = {
            clientSeq: 0,
            rowSeq: 0,
            committed: null,
            pending: [],
            rowsInserted: 0,
            rowsErrorCount: 0,
            lastErrorOffset: null,
            lastErrorMessage: null,
            statusCode: 'SUCCESS',
          };
          this.channels.set(name, ch);
        }
        ch.clientSeq++;
        ch.pending = [];
        ch.statusCode = 'SUCCESS';
        return { status: 200, body: { next_continuation_token: token(name, ch), channel_status: this.#status(name, ch) } };
      }
      case 'append': {
        const name = decodeURIComponent(m![1]!);
        const ch = this.channels.get(name);
        if (!ch) return { status: 404, body: { code: 'ERR_CHANNEL_DOES_NOT_EXIST_OR_IS_NOT_AUTHORIZED', message: 'no channel' } };
        if (rec.wireBytes > (o.maxWireBytes ?? 4_000_000))
          return { status: 413, body: { code: 'ERR_REQUEST_TOO_LARGE', message: 'too large' } };
        const t = JSON.parse(Buffer.from(rec.query.get('continuationToken') ?? '', 'base64url').toString() || '{}') as {
          cs?: number;
          rs?: number;
        };
        if (t.cs !== ch.clientSeq) {
          return {
            status: 400,
            body: {
              code: 'STALE_CONTINUATION_TOKEN_SEQUENCER',
              message: 'Channel sequencer in the continuation token is stale. Please reopen the channel',
            },
          };
        }
        if (t.rs !== ch.rowSeq) return { status: 400, body: { code: 'ERR_CHANNEL_HAS_INVALID_ROW_SEQUENCER', message: 'row sequencer' } };
        if (ch.statusCode !== 'SUCCESS') return { status: 400, body: { code: ch.statusCode, message: 'reopen' } };
        const lines = rec.body.split('\n').filter((l) => l !== '');
        ch.pending.push({ lines, endToken: rec.query.get('endOffsetToken') ?? rec.query.get('offsetToken') });
        ch.rowSeq++;
        return { status: 200, body: { next_continuation_token: token(name, ch) } };
      }
      case 'drop': {
        const name = decodeURIComponent(m![1]!);
        if (!this.channels.delete(name)) return { status: 404, body: { code: 'ERR_CHANNEL_DOES_NOT_EXIST_OR_IS_NOT_AUTHORIZED' } };
        return { status: 200, body: {} };
      }
      case 'status': {
        if ((o.commit ?? 'on-status') === 'on-status') this.commitAll();
        const names = (JSON.parse(rec.body) as { channel_names: string[] }).channel_names;
        const statuses: Record<string, unknown> = {};
        for (const n of names) {
          const ch = this.channels.get(n);
          if (ch) statuses[n] = this.#status(n, ch);
        }
        return { status: 200, body: { channel_statuses: statuses } };
      }
      case 'submit':
        return this.onSubmit({ query: rec.query, body: JSON.parse(rec.body) as Record<string, unknown> });
      case 'poll':
        return this.onPoll(decodeURIComponent(m![1]!), rec.query);
      case 'cancel':
        return { status: 200, body: { code: '000604', sqlState: '57014', message: 'SQL execution canceled', statementHandle: m![1] } };
    }
  }
}

function token(name: string, ch: StubChannel): string {
  return Buffer.from(JSON.stringify({ c: name, cs: ch.clientSeq, rs: ch.rowSeq })).toString('base64url');
}

/** A finished single-statement answer with text columns. */
export function result(columns: string[], data: (string | null)[][], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    resultSetMetaData: {
      numRows: data.length,
      format: 'jsonv2',
      rowType: columns.map((name) => ({ name, type: 'text', nullable: true })),
      partitionInfo: [{ rowCount: data.length, uncompressedSize: 100 }],
    },
    data,
    code: '090001',
    sqlState: '00000',
    statementHandle: '01b00000-0000-0000-0000-000000000001',
    message: 'Statement executed successfully.',
    createdOn: 1620151584132,
    ...extra,
  };
}

/** Awaits `p` and returns the FloeError it rejected with; fails the test if it resolved or threw something else. */
export async function floeFailure(p: Promise<unknown>): Promise<FloeError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FloeError);
    return err as FloeError;
  }
  throw new Error('expected a rejection');
}
