/** SQL API v2 client and the shared request layer (headers, retries, auth errors, circuit breaker) against an in-test stub. */
import { generateKeyPairSync } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KeyPairAuth } from '../src/destination/snowflake/auth.js';
import { BreakerOpenError, parseErrorBody, SnowflakeBreaker, SnowflakeHttpError } from '../src/destination/snowflake/http.js';
import { SNOWFLAKE_METRIC, SnowflakeMetrics } from '../src/destination/snowflake/metrics.js';
import { SqlApiClient, SqlStatementError } from '../src/destination/snowflake/sql-api.js';
import { silentLogger } from '../src/telemetry/logger.js';
import { floeFailure as failure, result, SnowflakeStub, type SqlCall } from './helpers/snowflake-stub.js';
import { waitFor } from './helpers/wait.js';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const auth = new KeyPairAuth({ account: 'myorg-myaccount', user: 'floe_user', privateKey });
const fastRetry = { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

let stub: SnowflakeStub;
let client: SqlApiClient;
let registry: Registry;

function newClient(extra: Partial<ConstructorParameters<typeof SqlApiClient>[0]> = {}): SqlApiClient {
  return new SqlApiClient({
    baseUrl: stub.url,
    auth,
    warehouse: 'LOAD_WH',
    role: 'FLOE_ROLE',
    database: 'ANALYTICS',
    schema: 'PUBLIC',
    log: silentLogger,
    metrics: new SnowflakeMetrics(registry),
    retry: fastRetry,
    pollIntervalMs: { min: 5, max: 20 },
    ...extra,
  });
}

beforeEach(async () => {
  stub = new SnowflakeStub();
  await stub.start();
  registry = new Registry();
  client = newClient();
});
afterEach(async () => {
  await client.close();
  await stub.stop();
});

describe('SQL API v2 requests', () => {
  it('sends the documented headers and body fields, with a requestId', async () => {
    stub.onSubmit = () => ({ status: 200, body: result(['A', 'B'], [['1', null]]) });
    const r = await client.query('select 1 as a, null as b', { timeoutSeconds: 30, requestId: '7d3b4c1e-0000-4000-8000-000000000001' });
    expect(r.columns).toEqual([
      { name: 'A', type: 'text' },
      { name: 'B', type: 'text' },
    ]);
    expect(r.rows).toEqual([['1', null]]);
    const [req] = stub.of('submit');
    expect(req!.headers.authorization).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect(req!.headers['x-snowflake-authorization-token-type']).toBe('KEYPAIR_JWT');
    expect(req!.headers.accept).toBe('application/json');
    expect(req!.headers['content-type']).toBe('application/json');
    expect(req!.headers['user-agent']).toMatch(/^floe\/\d+\.\d+\.\d+/);
    expect(req!.query.get('requestId')).toBe('7d3b4c1e-0000-4000-8000-000000000001');
    expect(req!.query.get('retry')).toBeNull();
    expect(JSON.parse(req!.body)).toEqual({
      statement: 'select 1 as a, null as b',
      timeout: 30,
      database: 'ANALYTICS',
      schema: 'PUBLIC',
      warehouse: 'LOAD_WH',
      role: 'FLOE_ROLE',
    });
  });

  it('polls a 202 until the result is there, then fetches the remaining partitions (gzip)', async () => {
    const handle = '01b2c3d4-0000-0000-0000-000000000042';
    stub.onSubmit = () => ({
      status: 202,
      body: {
        code: '333334',
        message: 'Asynchronous execution in progress.',
        statementHandle: handle,
        statementStatusUrl: `/api/v2/statements/${handle}`,
      },
    });
    let polls = 0;
    stub.onPoll = (h, q) => {
      expect(h).toBe(handle);
      const partition = q.get('partition');
      if (partition === '1') return { status: 200, body: { data: [['3'], ['4']] }, gzip: true };
      if (partition === '2') return { status: 200, body: [['5']], gzip: true }; // a bare array is tolerated too
      if (++polls < 3) return { status: 202, body: { code: '333334', statementHandle: handle } };
      const r = result(['N'], [['1'], ['2']], { statementHandle: handle });
      (r.resultSetMetaData as { partitionInfo: unknown[] }).partitionInfo = [{ rowCount: 2 }, { rowCount: 2 }, { rowCount: 1 }];
      return { status: 200, body: r };
    };
    const r = await client.query('select n from t');
    expect(r.rows).toEqual([['1'], ['2'], ['3'], ['4'], ['5']]);
    expect(polls).toBe(3);
    expect(stub.of('poll').map((p) => p.query.get('partition'))).toEqual([null, null, null, '1', '2']);
  });

  it('runs several statements in one request and fetches each child result', async () => {
    let call: SqlCall | undefined;
    stub.onSubmit = (c) => {
      call = c;
      return {
        status: 200,
        body: result(['multiple statement execution'], [['Multiple statements executed successfully.']], {
          statementHandles: ['h1', 'h2', 'h3'],
        }),
      };
    };
    stub.onPoll = (h) => {
      if (h === 'h1') return { status: 200, body: result(['status'], [['Statement executed successfully.']], { statementHandle: 'h1' }) };
      if (h === 'h2') {
        return {
          status: 200,
          body: result(['number of rows inserted', 'number of rows updated'], [['2', '3']], { statementHandle: 'h2' }),
        };
      }
      return { status: 200, body: result(['status'], [['Statement executed successfully.']], { statementHandle: 'h3' }) };
    };
    const results = await client.multi(['BEGIN', 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.v = s.v;', 'COMMIT']);
    expect(call!.body.statement).toBe('BEGIN;\nMERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.v = s.v;\nCOMMIT');
    expect(call!.body.parameters).toEqual({ MULTI_STATEMENT_COUNT: '3' });
    expect(results).toHaveLength(3);
    expect(results[1]!.rowsAffected).toBe(5);
    expect(results.map((r) => r.statementHandle)).toEqual(['h1', 'h2', 'h3']);
  });

  it('reports 422 with code, SQLSTATE and a category, never retrying and never quoting the SQL', async () => {
    stub.onSubmit = () => ({
      status: 422,
      body: {
        code: '000904',
        message: "SQL compilation error: error line 1 at position 7\ninvalid identifier 'AFAF'",
        sqlState: '42000',
        statementHandle: 'h9',
      },
    });
    const err = await failure(client.query("select afaf from secret_values where v = 'hunter2'"));
    expect(err).toBeInstanceOf(SqlStatementError);
    const e = err as SqlStatementError;
    expect(e.category).toBe('compilation');
    expect(e.code).toBe('000904');
    expect(e.sqlState).toBe('42000');
    expect(e.retry).toBe('none');
    expect(e.message).toContain("invalid identifier 'AFAF'");
    expect(e.message).not.toContain('hunter2');
    expect(stub.count('submit')).toBe(1);

    stub.onSubmit = () => ({
      status: 422,
      body: { code: '100090', message: 'Duplicate row detected during DML action', sqlState: '42P18' },
    });
    const dup = (await failure(client.query('merge ...'))) as SqlStatementError;
    expect(dup.category).toBe('duplicate-row');
    expect(dup.message).toMatch(/^Snowflake duplicate row detected during DML action .*100090 \(42P18\)/);
  });

  it('looks at the handle once after a 408 and reports the statement timeout as retryable', async () => {
    stub.onSubmit = () => ({
      status: 408,
      body: { code: '000630', message: 'Statement reached its statement or warehouse timeout', statementHandle: 'h8' },
    });
    stub.onPoll = () => ({
      status: 408,
      body: { code: '000630', message: 'Statement reached its statement or warehouse timeout', statementHandle: 'h8' },
    });
    const e = (await failure(client.query('select system$wait(100)', { timeoutSeconds: 1 }))) as SqlStatementError;
    expect(e.category).toBe('timeout');
    expect(e.retry).toBe('timed');
    expect(stub.count('poll')).toBe(1);
  });

  it('cancels a running statement when the signal aborts', async () => {
    stub.onSubmit = () => ({ status: 202, body: { code: '333334', statementHandle: 'h5' } });
    stub.onPoll = () => ({ status: 202, body: { code: '333334', statementHandle: 'h5' } });
    const controller = new AbortController();
    const p = client.query('select system$wait(100)', { signal: controller.signal });
    await waitFor('a poll', () => stub.count('poll') >= 1);
    controller.abort();
    const e = await failure(p);
    expect(e.message).toMatch(/cancelled/);
    await waitFor('the cancel request', () => stub.count('cancel') === 1);
  });
});

describe('retries', () => {
  it('retries 5xx and lost connections with the same requestId and retry=true', async () => {
    stub.inject('submit', { kind: 'reply', status: 503, body: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' }, { kind: 'drop-after-apply' });
    stub.onSubmit = () => ({ status: 200, body: result(['X'], [['1']]) });
    const r = await client.query('insert into t values (1)');
    expect(r.rows).toEqual([['1']]);
    const submits = stub.of('submit');
    expect(submits).toHaveLength(3);
    const ids = new Set(submits.map((s) => s.query.get('requestId')));
    expect(ids.size).toBe(1);
    expect(submits.map((s) => s.query.get('retry'))).toEqual([null, 'true', 'true']);
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.retries)).toMatch(/route="statement_submit"} 2/);
  });

  it('honours Retry-After on 429', async () => {
    stub.inject('submit', {
      kind: 'reply',
      status: 429,
      body: { code: '390505', message: 'Too many requests.' },
      headers: { 'retry-after': '0.05' },
    });
    stub.onSubmit = () => ({ status: 200, body: result(['X'], [['1']]) });
    await client.query('select 1');
    expect(stub.count('submit')).toBe(2);
  });

  it('times out a request that gets no answer and resubmits it', async () => {
    await client.close();
    client = newClient({ requestTimeoutMs: 100 });
    stub.inject('submit', { kind: 'delay', ms: 400 });
    stub.onSubmit = () => ({ status: 200, body: result(['X'], [['1']]) });
    await client.query('select 1');
    expect(stub.of('submit').map((s) => s.query.get('retry'))).toEqual([null, 'true']);
    stub.inject('submit', { kind: 'delay', ms: 400 }, { kind: 'delay', ms: 400 }, { kind: 'delay', ms: 400 });
    const e = await failure(client.query('select 1'));
    expect(e.message).toMatch(/no answer within 100 ms/);
    expect(e.retry).toBe('timed');
  });

  it('gives up after the retry budget with a timed destination error', async () => {
    stub.onSubmit = () => ({ status: 500, body: { code: '000603', message: 'internal error' } });
    const e = await failure(client.query('select 1'));
    expect(e).toBeInstanceOf(SnowflakeHttpError);
    expect(e.kind).toBe('destination');
    expect(e.retry).toBe('timed');
    expect(e.message).toContain('HTTP 500 000603: internal error');
    expect(stub.count('submit')).toBe(fastRetry.maxAttempts);
  });
});

describe('auth errors', () => {
  it('401: refreshes the token once, then fails for good with the server message (expected fingerprint) and no token', async () => {
    const message = `JWT token is invalid. Public key fingerprint mismatch: expected SHA256:ZXhwZWN0ZWQ= [0d1c0000-0000]`;
    stub.options.rejectAuth = { status: 401, body: { code: '390144', message } };
    const e = await failure(client.query('select 1'));
    expect(e.kind).toBe('auth');
    expect(e.retry).toBe('manual');
    expect(e.message).toContain('expected SHA256:ZXhwZWN0ZWQ=');
    expect(e.message).toContain('390144');
    expect(e.hint).toContain(auth.fingerprint);
    expect(stub.count('submit')).toBe(2);
    const tokens = stub.of('submit').map((r) => String(r.headers.authorization).slice('Bearer '.length));
    for (const t of tokens) expect(`${e.message} ${e.hint}`).not.toContain(t);
  });

  it('403: no retry at all', async () => {
    stub.options.rejectAuth = { status: 403, body: { code: '390101', message: 'forbidden' } };
    const e = await failure(client.query('select 1'));
    expect(e.kind).toBe('auth');
    expect(stub.count('submit')).toBe(1);
  });

  it('never opens the breaker, however often they repeat', async () => {
    const breaker = new SnowflakeBreaker({ consecutiveFailures: 2, halfOpenAfterMs: 60_000 });
    await client.close();
    client = newClient({ breaker });
    stub.options.rejectAuth = { status: 401, body: { code: '390144', message: 'JWT token is invalid.' } };
    for (let i = 0; i < 5; i++) expect((await failure(client.query('select 1'))).kind).toBe('auth');
    expect(breaker.state).toBe('closed');
    expect(stub.count('submit')).toBe(10);
  });
});

describe('circuit breaker', () => {
  it('opens after repeated failures, fails fast while open, half-opens after the delay and closes on success', async () => {
    const breaker = new SnowflakeBreaker({ consecutiveFailures: 3, halfOpenAfterMs: 300, metrics: new SnowflakeMetrics(registry) });
    const states: string[] = [];
    breaker.onStateChange((s) => states.push(s));
    await client.close();
    client = newClient({ breaker });
    stub.onSubmit = () => ({ status: 503, body: { code: 'ERR_GENERAL_EXCEPTION_RETRY_REQUEST' } });

    const first = await failure(client.query('select 1'));
    expect(first.retry).toBe('timed');
    expect(stub.count('submit')).toBe(3);
    expect(breaker.state).toBe('open');
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.breakerState)).toMatch(/floe_snowflake_breaker_state 2/);

    const fast = await failure(client.query('select 1'));
    expect(fast).toBeInstanceOf(BreakerOpenError);
    expect(fast.message).toMatch(/^Snowflake circuit breaker is open/);
    expect(fast.retry).toBe('timed');
    expect((fast as BreakerOpenError).retryAfterMs).toBeGreaterThan(0);
    expect(stub.count('submit')).toBe(3); // nothing was sent

    stub.onSubmit = () => ({ status: 200, body: result(['X'], [['ok']]) });
    await waitFor('the breaker to allow a probe', () => breaker.state === 'half-open', 5000);
    expect((await client.query('select 1')).rows).toEqual([['ok']]);
    expect(breaker.state).toBe('closed');
    expect(states).toEqual(['open', 'half-open', 'closed']);
    expect(await registry.getSingleMetricAsString(SNOWFLAKE_METRIC.breakerState)).toMatch(/floe_snowflake_breaker_state 0/);
  });

  it('reopens when the probe fails', async () => {
    const breaker = new SnowflakeBreaker({ consecutiveFailures: 2, halfOpenAfterMs: 200 });
    await client.close();
    client = newClient({ breaker, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2 } });
    stub.onSubmit = () => ({ status: 502, body: '' });
    await failure(client.query('select 1'));
    expect(breaker.state).toBe('open');
    await waitFor('the breaker to allow a probe', () => breaker.state === 'half-open', 5000);
    const probe = await failure(client.query('select 1'));
    expect(probe).toBeInstanceOf(BreakerOpenError); // the probe failed, the retry met an open breaker again
    expect(breaker.state).toBe('open');
  });
});

describe('error bodies', () => {
  it('reads every documented and observed shape', () => {
    expect(parseErrorBody('{"code":"STALE_CONTINUATION_TOKEN_SEQUENCER","message":"reopen"}')).toEqual({
      code: 'STALE_CONTINUATION_TOKEN_SEQUENCER',
      message: 'reopen',
    });
    expect(parseErrorBody('{"error_code":"ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED"}').code).toBe(
      'ERR_PIPE_DOES_NOT_EXIST_OR_NOT_AUTHORIZED',
    );
    expect(parseErrorBody('"ERR_GENERAL_EXCEPTION_RETRY_REQUEST"').code).toBe('ERR_GENERAL_EXCEPTION_RETRY_REQUEST');
    expect(parseErrorBody('{"error":"ERR_PIPE_KIND_NOT_SUPPORTED"}').code).toBe('ERR_PIPE_KIND_NOT_SUPPORTED');
    expect(parseErrorBody('ERR_GENERAL_EXCEPTION_RETRY_REQUEST').code).toBe('ERR_GENERAL_EXCEPTION_RETRY_REQUEST');
    expect(parseErrorBody('{"code":"000904","message":"m","sqlState":"42000","result_handler":"x"}')).toEqual({
      code: '000904',
      message: 'm',
      sqlState: '42000',
    });
    expect(parseErrorBody('<html>bad gateway</html>').message).toBe('<html>bad gateway</html>');
  });
});
