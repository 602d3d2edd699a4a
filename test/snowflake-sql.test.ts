/**
 * The SQL the Snowflake destination sends, statement by statement (golden tests), the identifier
 * rule, the casts per mapped type, the offset-token format, the NDJSON rows for the journal, and the
 * destination URL: every bad input gives one clear error that never contains a secret.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapColumnType } from '../src/schema/type-map.js';
import { snowflakeCast } from '../src/destination/snowflake/casts.js';
import {
  appendHistoryStatements,
  createJournal,
  createTarget,
  mergeStatements,
  moveSeedStatement,
  snowflakeName,
  tableNameFor,
  windowStatsStatements,
  type MergeSpec,
  type SfColumn,
} from '../src/destination/snowflake/sql.js';
import { parseSnowflakeUrl, parseDuration } from '../src/destination/snowflake/config.js';
import { positionToken } from '../src/destination/snowflake/snowflake-destination.js';
import { NdjsonEncoder } from '../src/destination/encoding/ndjson.js';
import { FloeError } from '../src/errors.js';
import type { TableSchema } from '../src/model.js';

/** Statements are compared with whitespace collapsed, so the expected text can be laid out to be read. */
const norm = (s: string): string => s.replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/ \)/g, ')').trim();
const type = (oid: number, mod = -1) => mapColumnType(oid, mod, () => undefined);
const col = (name: string, oid: number, isKey = false, mod = -1): SfColumn => {
  const t = type(oid, mod);
  return { name, type: t.snowflake, cast: (x) => snowflakeCast(t, x), isKey };
};
const COLUMNS = [col('ID', 23, true), col('NAME', 25), col('DOC', 3802)];
const SPEC: MergeSpec = {
  sourceTable: 'public.orders',
  journal: '"DB"."L"."PUBLIC_ORDERS"',
  target: '"DB"."S"."PUBLIC_ORDERS"',
  tables: '"DB"."L"."_FLOE_TABLES"',
  merges: '"DB"."L"."_FLOE_MERGES"',
  columns: COLUMNS,
  deleteMode: 'hard',
  fromSeq: 10n,
  toSeq: 20n,
  journalRows: 10,
  perColumn: false,
};
const NEWER = `(s."_FLOE_LSN" > t."_FLOE_LSN" OR (s."_FLOE_LSN" = t."_FLOE_LSN" AND s."_FLOE_ORDINAL" > t."_FLOE_ORDINAL"))`;
const BOOKKEEPING = [
  `UPDATE "DB"."L"."_FLOE_TABLES" SET "MERGED_SEQ" = 20, "UPDATED_AT" = SYSDATE() WHERE "SOURCE_TABLE" = 'public.orders'`,
  `INSERT INTO "DB"."L"."_FLOE_MERGES" ("SOURCE_TABLE", "MERGED_SEQ", "JOURNAL_ROWS", "MERGED_AT") VALUES ('public.orders', 20, 10, SYSDATE())`,
];

describe('Snowflake identifiers', () => {
  it('upper-cases lower-case PostgreSQL names, keeps others, keeps the source schema in table names', () => {
    expect(snowflakeName('order_id')).toBe('ORDER_ID');
    expect(snowflakeName('OrderId')).toBe('OrderId');
    expect(tableNameFor('public', 'orders')).toBe('PUBLIC_ORDERS');
    expect(tableNameFor('sales', 'Orders')).toBe('SALES_Orders');
  });
});

describe('Snowflake DDL', () => {
  it('creates the journal as text images plus position, op, commit time, unchanged list, seq and range', () => {
    expect(norm(createJournal(SPEC.journal, COLUMNS))).toBe(
      norm(`CREATE TABLE IF NOT EXISTS "DB"."L"."PUBLIC_ORDERS" (
        "ID" VARCHAR, "NAME" VARCHAR, "DOC" VARCHAR,
        "_FLOE_LSN" NUMBER(20,0), "_FLOE_ORDINAL" NUMBER(10,0), "_FLOE_OP" VARCHAR(1), "_FLOE_COMMIT_TIME" TIMESTAMP_TZ(6),
        "_FLOE_UNCHANGED" ARRAY, "_FLOE_SEQ" NUMBER(38,0), "_FLOE_RANGE" NUMBER(10,0))`),
    );
  });

  it('creates keyed targets typed by the type table, with the position guard and soft-delete columns', () => {
    expect(norm(createTarget(SPEC.target, COLUMNS, true))).toBe(
      norm(`CREATE TABLE IF NOT EXISTS "DB"."S"."PUBLIC_ORDERS" (
        "ID" NUMBER(10,0), "NAME" VARCHAR, "DOC" VARIANT,
        "_FLOE_KEY" VARCHAR, "_FLOE_LSN" NUMBER(20,0), "_FLOE_ORDINAL" NUMBER(10,0), "_FLOE_DELETED" BOOLEAN, "_FLOE_SYNCED_AT" TIMESTAMP_TZ(6))`),
    );
  });

  it('creates keyless targets as typed history', () => {
    expect(norm(createTarget(SPEC.target, COLUMNS, false))).toBe(
      norm(`CREATE TABLE IF NOT EXISTS "DB"."S"."PUBLIC_ORDERS" (
        "ID" NUMBER(10,0), "NAME" VARCHAR, "DOC" VARIANT,
        "_FLOE_OP" VARCHAR(1), "_FLOE_LSN" NUMBER(20,0), "_FLOE_ORDINAL" NUMBER(10,0), "_FLOE_COMMIT_TIME" TIMESTAMP_TZ(6), "_FLOE_SEQ" NUMBER(38,0))`),
    );
  });
});

describe('Snowflake MERGE', () => {
  it('window statistics: rows, rows with unchanged values, deletes, and the latest truncate', () => {
    expect(windowStatsStatements(SPEC.journal, 10n, 20n).map(norm)).toEqual([
      norm(`SELECT COUNT(*), COUNT(j."_FLOE_UNCHANGED"), SUM(IFF(j."_FLOE_OP" = 'd', 1, 0)) FROM "DB"."L"."PUBLIC_ORDERS" j
            WHERE j."_FLOE_SEQ" > 10 AND j."_FLOE_SEQ" <= 20`),
      norm(`SELECT j."_FLOE_LSN", j."_FLOE_ORDINAL" FROM "DB"."L"."PUBLIC_ORDERS" j
            WHERE j."_FLOE_SEQ" > 10 AND j."_FLOE_SEQ" <= 20 AND j."_FLOE_OP" = 't'
            ORDER BY j."_FLOE_LSN" DESC, j."_FLOE_ORDINAL" DESC LIMIT 1`),
    ]);
  });

  it('fast path: each key takes its latest row of the seq window, only over an older target row; hard deletes', () => {
    expect(mergeStatements(SPEC).map(norm)).toEqual(
      [
        'BEGIN',
        `MERGE INTO "DB"."S"."PUBLIC_ORDERS" t USING (
           SELECT TRY_TO_NUMBER(w."ID", 10, 0) AS "ID", w."NAME" AS "NAME", TRY_PARSE_JSON(w."DOC", 'd') AS "DOC",
                  w."ID" AS "_FLOE_KEY", w."_FLOE_OP", w."_FLOE_LSN", w."_FLOE_ORDINAL"
           FROM (SELECT j.* FROM "DB"."L"."PUBLIC_ORDERS" j
                 WHERE j."_FLOE_SEQ" > 10 AND j."_FLOE_SEQ" <= 20
                 QUALIFY ROW_NUMBER() OVER (PARTITION BY j."ID" ORDER BY j."_FLOE_LSN" DESC, j."_FLOE_ORDINAL" DESC) = 1) w
         ) s ON t."_FLOE_KEY" = s."_FLOE_KEY"
         WHEN MATCHED AND s."_FLOE_OP" = 'd' AND ${NEWER} THEN DELETE
         WHEN MATCHED AND s."_FLOE_OP" <> 'd' AND ${NEWER} THEN UPDATE SET
           "NAME" = s."NAME", "DOC" = s."DOC", "_FLOE_LSN" = s."_FLOE_LSN", "_FLOE_ORDINAL" = s."_FLOE_ORDINAL",
           "_FLOE_DELETED" = FALSE, "_FLOE_SYNCED_AT" = SYSDATE()
         WHEN NOT MATCHED AND s."_FLOE_OP" <> 'd' THEN
           INSERT ("ID", "NAME", "DOC", "_FLOE_KEY", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_DELETED", "_FLOE_SYNCED_AT")
           VALUES (s."ID", s."NAME", s."DOC", s."_FLOE_KEY", s."_FLOE_LSN", s."_FLOE_ORDINAL", FALSE, SYSDATE())`,
        ...BOOKKEEPING,
        'COMMIT',
      ].map(norm),
    );
  });

  it('per column (unchanged TOAST, soft deletes) with a truncate: latest known image per column, else the target value', () => {
    const known = (c: string) =>
      `j."_FLOE_OP" <> 'd' AND j."_FLOE_ALIVE" AND NOT ARRAY_CONTAINS('${c}'::VARIANT, COALESCE(j."_FLOE_UNCHANGED", ARRAY_CONSTRUCT()))`;
    const img = (c: string) =>
      `LAST_VALUE(IFF(${known(c)}, OBJECT_CONSTRUCT('v', j."${c}"), NULL))
       OVER (PARTITION BY j."ID" ORDER BY IFF(${known(c)}, 1, 0), j."_FLOE_LSN", j."_FLOE_ORDINAL"
             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "_FLOE_IMG_${c}"`;
    const set = (
      deleted: boolean,
    ) => `"NAME" = IFF(s."_FLOE_HAS_NAME", s."NAME", t."NAME"), "DOC" = IFF(s."_FLOE_HAS_DOC", s."DOC", t."DOC"),
           "_FLOE_LSN" = s."_FLOE_LSN", "_FLOE_ORDINAL" = s."_FLOE_ORDINAL", "_FLOE_DELETED" = ${deleted ? 'TRUE' : 'FALSE'}, "_FLOE_SYNCED_AT" = SYSDATE()`;
    const insert = (
      deleted: boolean,
    ) => `INSERT ("ID", "NAME", "DOC", "_FLOE_KEY", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_DELETED", "_FLOE_SYNCED_AT")
           VALUES (s."ID", s."NAME", s."DOC", s."_FLOE_KEY", s."_FLOE_LSN", s."_FLOE_ORDINAL", ${deleted ? 'TRUE' : 'FALSE'}, SYSDATE())`;
    // No delete between a row and its key's latest change, except that change itself.
    const order = `PARTITION BY j."ID" ORDER BY j."_FLOE_LSN", j."_FLOE_ORDINAL"`;
    const alive = `(SUM(IFF(j."_FLOE_OP" = 'd', 1, 0)) OVER (${order} ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)
      - IFF(j."_FLOE_OP" = 'd', 1, 0)
      = IFF(LAST_VALUE(j."_FLOE_OP") OVER (${order} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) = 'd', 1, 0))`;
    const older = (a: string) => `(${a}."_FLOE_LSN" < 100 OR (${a}."_FLOE_LSN" = 100 AND ${a}."_FLOE_ORDINAL" < 2))`;
    expect(mergeStatements({ ...SPEC, deleteMode: 'soft', perColumn: true, truncate: { lsn: 100n, ordinal: 2 } }).map(norm)).toEqual(
      [
        'BEGIN',
        `UPDATE "DB"."S"."PUBLIC_ORDERS" t SET "_FLOE_DELETED" = TRUE, "_FLOE_SYNCED_AT" = SYSDATE()
         WHERE ${older('t')} AND t."_FLOE_DELETED" = FALSE`,
        `MERGE INTO "DB"."S"."PUBLIC_ORDERS" t USING (
           SELECT TRY_TO_NUMBER(w."ID", 10, 0) AS "ID",
                  GET(w."_FLOE_IMG_NAME", 'v')::VARCHAR AS "NAME", w."_FLOE_IMG_NAME" IS NOT NULL AS "_FLOE_HAS_NAME",
                  TRY_PARSE_JSON(GET(w."_FLOE_IMG_DOC", 'v')::VARCHAR, 'd') AS "DOC", w."_FLOE_IMG_DOC" IS NOT NULL AS "_FLOE_HAS_DOC",
                  w."ID" AS "_FLOE_KEY", w."_FLOE_OP", w."_FLOE_LSN", w."_FLOE_ORDINAL"
           FROM (SELECT j."_FLOE_OP", j."_FLOE_LSN", j."_FLOE_ORDINAL", j."ID", ${img('NAME')}, ${img('DOC')}
                 FROM (SELECT j.*, ${alive} AS "_FLOE_ALIVE" FROM "DB"."L"."PUBLIC_ORDERS" j
                       WHERE j."_FLOE_SEQ" > 10 AND j."_FLOE_SEQ" <= 20 AND j."_FLOE_OP" <> 't' AND NOT ${older('j')}) j
                 QUALIFY ROW_NUMBER() OVER (PARTITION BY j."ID" ORDER BY j."_FLOE_LSN" DESC, j."_FLOE_ORDINAL" DESC) = 1) w
         ) s ON t."_FLOE_KEY" = s."_FLOE_KEY"
         WHEN MATCHED AND s."_FLOE_OP" = 'd' AND ${NEWER} THEN UPDATE SET ${set(true)}
         WHEN MATCHED AND s."_FLOE_OP" <> 'd' AND ${NEWER} THEN UPDATE SET ${set(false)}
         WHEN NOT MATCHED AND s."_FLOE_OP" <> 'd' THEN ${insert(false)}
         WHEN NOT MATCHED AND s."_FLOE_OP" = 'd' THEN ${insert(true)}`,
        ...BOOKKEEPING,
        'COMMIT',
      ].map(norm),
    );
  });

  it('hard delete of a truncated table deletes every older target row in the same transaction', () => {
    const statements = mergeStatements({ ...SPEC, truncate: { lsn: 7n, ordinal: 0 } });
    expect(norm(statements[1]!)).toBe(
      norm(`DELETE FROM "DB"."S"."PUBLIC_ORDERS" t WHERE (t."_FLOE_LSN" < 7 OR (t."_FLOE_LSN" = 7 AND t."_FLOE_ORDINAL" < 0))`),
    );
    expect(statements[0]).toBe('BEGIN');
    expect(statements.at(-1)).toBe('COMMIT');
  });

  it('keyless tables: the window is appended to the typed history in load order', () => {
    expect(appendHistoryStatements(SPEC).map(norm)).toEqual(
      [
        'BEGIN',
        `INSERT INTO "DB"."S"."PUBLIC_ORDERS" ("ID", "NAME", "DOC", "_FLOE_OP", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_COMMIT_TIME", "_FLOE_SEQ")
         SELECT TRY_TO_NUMBER(j."ID", 10, 0), j."NAME", TRY_PARSE_JSON(j."DOC", 'd'), j."_FLOE_OP", j."_FLOE_LSN", j."_FLOE_ORDINAL", j."_FLOE_COMMIT_TIME", j."_FLOE_SEQ"
         FROM "DB"."L"."PUBLIC_ORDERS" j WHERE j."_FLOE_SEQ" > 10 AND j."_FLOE_SEQ" <= 20 ORDER BY j."_FLOE_SEQ"`,
        ...BOOKKEEPING,
        'COMMIT',
      ].map(norm),
    );
  });

  it("key move: the new key gets the old key's target values of the columns its insert lacked, at the delete's position", () => {
    const seed = moveSeedStatement({
      target: SPEC.target,
      columns: COLUMNS,
      oldKey: ['1'],
      newKey: ['5'],
      unchanged: ['DOC'],
      position: { lsn: 20n, ordinal: 0 },
    });
    expect(norm(seed)).toBe(
      norm(`MERGE INTO "DB"."S"."PUBLIC_ORDERS" t USING (
          SELECT TRY_TO_NUMBER('5', 10, 0) AS "ID", '5' AS "_FLOE_KEY", o."DOC", 20 AS "_FLOE_LSN", 0 AS "_FLOE_ORDINAL"
          FROM "DB"."S"."PUBLIC_ORDERS" o WHERE o."_FLOE_KEY" = '1'
        ) s ON t."_FLOE_KEY" = s."_FLOE_KEY"
        WHEN MATCHED AND ${NEWER} THEN UPDATE SET "DOC" = s."DOC", "_FLOE_LSN" = s."_FLOE_LSN", "_FLOE_ORDINAL" = s."_FLOE_ORDINAL"
        WHEN NOT MATCHED THEN INSERT ("ID", "_FLOE_KEY", "DOC", "_FLOE_LSN", "_FLOE_ORDINAL", "_FLOE_DELETED")
          VALUES (s."ID", s."_FLOE_KEY", s."DOC", s."_FLOE_LSN", s."_FLOE_ORDINAL", FALSE)`),
    );
    // Seeds run inside the merge transaction, before the MERGE that deletes the old key.
    const statements = mergeStatements({ ...SPEC, perColumn: true, seeds: [seed] });
    expect(statements.slice(0, 2)).toEqual(['BEGIN', seed]);
    expect(statements[2]).toMatch(/^MERGE INTO/);
  });

  it('never uses RANK', () => {
    const all = [...mergeStatements(SPEC), ...mergeStatements({ ...SPEC, perColumn: true, deleteMode: 'soft' })].join('\n');
    expect(all).not.toMatch(/\bRANK\(/);
  });
});

describe('casts from journal text', () => {
  it('converts per mapped type, with explicit rules for NaN, infinity and 24:00', () => {
    const cast = (oid: number, mod = -1) => snowflakeCast(type(oid, mod), 'x');
    expect(cast(16)).toBe('x::BOOLEAN');
    expect(cast(20)).toBe('TRY_TO_NUMBER(x, 19, 0)');
    expect(cast(1700, ((10 << 16) | 2) + 4)).toBe('TRY_TO_NUMBER(x, 10, 2)');
    expect(cast(1700)).toBe('x'); // unconstrained numeric: exact text
    expect(cast(701)).toBe(`IFF(x = 'Infinity', 'inf', IFF(x = '-Infinity', '-inf', x))::FLOAT`);
    expect(cast(17)).toBe(`TO_BINARY(SUBSTR(x, 3), 'HEX')`);
    expect(cast(1082)).toBe(`IFF(x = 'infinity' OR x = '-infinity', NULL, TRY_TO_DATE(x))`);
    expect(cast(1083)).toBe(`IFF(x = '24:00:00', NULL, x::TIME(6))`);
    expect(cast(1184)).toBe(`IFF(x = 'infinity' OR x = '-infinity', NULL, TRY_TO_TIMESTAMP_TZ(x || ':00')::TIMESTAMP_TZ(6))`);
    expect(cast(1114)).toBe(`IFF(x = 'infinity' OR x = '-infinity', NULL, TRY_TO_TIMESTAMP_NTZ(x)::TIMESTAMP_NTZ(6))`);
    expect(cast(3802)).toBe("TRY_PARSE_JSON(x, 'd')");
    expect(cast(1007)).toBe('TRY_PARSE_JSON(x)::ARRAY');
    expect(cast(2950)).toBe('x');
  });
});

describe('offset tokens and journal rows', () => {
  it('offset tokens are fixed width, so string order is position order', () => {
    const a = positionToken({ lsn: 9n, ordinal: 10 });
    const b = positionToken({ lsn: 10n, ordinal: 0 });
    const c = positionToken({ lsn: 10n, ordinal: 2 });
    expect(a).toBe('00000000000000000009-0000000010');
    expect([c, b, a].sort()).toEqual([a, b, c]);
    expect(positionToken({ lsn: 2n ** 64n - 1n, ordinal: 2 ** 31 - 1 })).toHaveLength(31);
  });

  it('NDJSON rows carry Snowflake column names, upper-case metadata, seq and range', () => {
    const t = type(25);
    const table: TableSchema = {
      relationId: 1,
      schema: 'public',
      name: 'docs',
      replicaIdentity: 'd',
      hasKey: true,
      columns: [
        { name: 'id', typeOid: 23, typeMod: -1, type: type(23), isKey: true },
        { name: 'Body', typeOid: 25, typeMod: -1, type: t, isKey: false },
      ],
    };
    const enc = new NdjsonEncoder(64, { keyName: snowflakeName, upperCaseMeta: true });
    enc.writeRow(table, 'u', { lsn: 5n, ordinal: 1 }, 0n, ['1', undefined], { seq: 7n });
    enc.writeRow(table, 'r', { lsn: 5n, ordinal: -1 }, 0n, ['2', 'b'], { seq: 8n, range: 3 });
    const [u, r] = enc
      .view()
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(u).toEqual({
      ID: '1',
      Body: null,
      _FLOE_LSN: '5',
      _FLOE_ORDINAL: 1,
      _FLOE_OP: 'u',
      _FLOE_COMMIT_TIME: null,
      _FLOE_SEQ: '7',
      _FLOE_UNCHANGED: ['Body'],
    });
    expect(r).toEqual({
      ID: '2',
      Body: 'b',
      _FLOE_LSN: '5',
      _FLOE_ORDINAL: -1,
      _FLOE_OP: 'r',
      _FLOE_COMMIT_TIME: null,
      _FLOE_SEQ: '8',
      _FLOE_RANGE: 3,
      _FLOE_UNCHANGED: null,
    });
  });
});

describe('Snowflake destination URL', () => {
  let dir: string;
  let key: string;
  let encrypted: string;
  const PASSPHRASE = 'sEcret-pass-123';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'floe-sfurl-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    key = join(dir, 'rsa_key.p8');
    writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    encrypted = join(dir, 'rsa_key_enc.p8');
    writeFileSync(encrypted, privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: PASSPHRASE }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const url = (params: string) => `snowflake://floe_user@myorg-myaccount/analytics/public?${params}`;

  it('parses a full URL with defaults', () => {
    const c = parseSnowflakeUrl(url(`warehouse=load_wh&role=FLOE_ROLE&private_key_file=${key}`), {});
    expect(c).toMatchObject({
      account: 'MYORG-MYACCOUNT',
      user: 'FLOE_USER',
      database: 'ANALYTICS',
      schema: 'PUBLIC',
      landingSchema: 'PUBLIC_FLOE_LANDING',
      warehouse: 'LOAD_WH',
      role: 'FLOE_ROLE',
      mergeIntervalMs: 30_000,
      deleteMode: undefined,
      channelsPerTable: 2,
      accountUrl: 'https://myorg-myaccount.snowflakecomputing.com',
    });
    expect(c.privateKey.asymmetricKeyType).toBe('rsa');
  });

  it('takes every option; base_url overrides the account URL; the passphrase may come from the environment', () => {
    const c = parseSnowflakeUrl(
      url(
        `private_key_file=${encrypted}&landing_schema=raw&merge_interval=5m&merge_rows=1000&journal_retention=7d&delete_mode=soft&channels_per_table=4&base_url=http://127.0.0.1:8080/`,
      ),
      { FLOE_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE: PASSPHRASE },
    );
    expect(c).toMatchObject({
      landingSchema: 'RAW',
      mergeIntervalMs: 300_000,
      mergeRows: 1000,
      journalRetentionMs: 7 * 86_400_000,
      deleteMode: 'soft',
      channelsPerTable: 4,
      baseUrl: 'http://127.0.0.1:8080',
      accountUrl: 'http://127.0.0.1:8080',
    });
    expect(parseDuration('500ms')).toBe(500);
  });

  const bad: [string, () => string, RegExp][] = [
    ['no schema', () => `snowflake://u@acct/db?private_key_file=${key}`, /must name user, account, database and schema/],
    ['unknown parameter', () => url(`private_key_file=${key}&warehous=x`), /unknown Snowflake destination parameter "warehous"/],
    ['bad duration', () => url(`private_key_file=${key}&merge_interval=soon`), /merge_interval must be a duration/],
    ['bad delete mode', () => url(`private_key_file=${key}&delete_mode=maybe`), /delete_mode must be hard or soft/],
    ['too many channels', () => url(`private_key_file=${key}&channels_per_table=99`), /channels_per_table must be between 1 and 16/],
    ['bad base_url', () => url(`private_key_file=${key}&base_url=ftp://x`), /base_url must be http/],
    ['missing key file', () => url(`warehouse=w`), /private_key_file/],
    ['unreadable key file', () => url(`private_key_file=${join(dir, 'nope.p8')}`), /cannot read private_key_file .*ENOENT/],
    ['encrypted key without passphrase', () => url(`private_key_file=${encrypted}`), /encrypted and no passphrase/],
    ['wrong passphrase', () => url(`private_key_file=${encrypted}&private_key_passphrase=wrong-${PASSPHRASE}`), /could not be decrypted/],
    ['parameter twice', () => url(`private_key_file=${key}&role=a&role=b`), /"role" is given twice/],
  ];
  it.each(bad)('rejects %s with a config error that names the problem and no secret', (_name, make, message) => {
    let error: unknown;
    try {
      parseSnowflakeUrl(make(), {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(FloeError);
    const e = error as FloeError;
    expect(e.kind).toBe('config');
    expect(e.oneLine()).toMatch(message);
    expect(e.oneLine()).not.toContain(PASSPHRASE);
    expect(e.oneLine()).not.toContain('PRIVATE KEY');
  });
});
