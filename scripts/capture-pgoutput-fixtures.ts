/**
 * Captures raw replication CopyData payloads (pgoutput protocol v1) from real
 * PostgreSQL servers into test/fixtures/pgoutput/pg<major>.json, for the
 * decoder's unit tests (test/pgoutput.test.ts).
 *
 *   npx tsx scripts/capture-pgoutput-fixtures.ts [major ...]   (default: 15 18)
 *
 * For each major: start a throwaway cluster, create the tables, write the
 * change sequence described in DESCRIPTION, then START_REPLICATION on a
 * pgoutput slot and record every CopyData payload ('w' XLogData and 'k'
 * keepalive) until the final `floe-end` message, then a standby status update
 * asking for a reply and the keepalive that answers it. The tests depend on
 * this exact sequence: change both together.
 */
import pg from 'pg';
import * as copyStreams from 'pg-copy-streams';
import type { Duplex } from 'node:stream';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startCluster, type RunningCluster } from '../src/postgres/local-cluster.js';
import { decodeReplicationFrame, encodeStandbyStatus } from '../src/postgres/replication-protocol.js';
import { decodePgOutput } from '../src/postgres/pgoutput.js';

const SLOT = 'floe_fixtures';
const PUBLICATION = 'floe_pub';
const OUT_DIR = fileURLToPath(new URL('../test/fixtures/pgoutput/', import.meta.url));

const DESCRIPTION = [
  'CopyData payloads of START_REPLICATION ... LOGICAL (proto_version 1, messages true, text mode), TimeZone=UTC.',
  "Keepalive ('k') frames may appear anywhere; the XLogData ('w') sequence is, one transaction per line:",
  '1. types_t: insert id 1 with many types, insert id 2 with all NULLs (one transaction)',
  "2. pk_t: insert (1,'one',NULL),(2,'two','n2')",
  '3. pk_t: rolled-back insert of id 99 (must not appear)',
  "4. pk_t: update id 1 name='uno' (REPLICA IDENTITY DEFAULT, key unchanged: no old tuple)",
  "5. pk_t: update id 2 -> 10 (old key tuple 'K')",
  "6. pk_t: delete id 10 (old key tuple 'K')",
  "7. full_t (REPLICA IDENTITY FULL, no PK): insert (1,'x',1.5),(2,NULL,2)",
  "8. full_t: update a=1 b='y' (old tuple 'O')",
  "9. full_t: delete a=2 (old tuple 'O')",
  "10. idx_t (REPLICA IDENTITY USING INDEX on code): insert (1,'c1',1); update v=2; update code='c2' ('K') (one transaction)",
  "11. toast_t: update small=2 leaving the ~22 kB EXTERNAL text 'big' unchanged ('u'); the row was inserted before the slot existed",
  "12. enum_t: insert (1,'happy','{sad,ok}') -> Type messages for mood and _mood",
  "13. transactional pg_logical_emit_message(true, 'floe', 'hi')",
  "14. non-transactional pg_logical_emit_message(false, 'floe', 'hi-nt') (no Begin/Commit)",
  "15. non-transactional pg_logical_emit_message(false, 'floe-bin', '\\x00ff'::bytea)",
  '16. TRUNCATE trunc_a, trunc_b',
  '17. TRUNCATE trunc_a RESTART IDENTITY CASCADE (trunc_b references trunc_a)',
  "18. origin_t: insert (1,'from origin') under replication origin floe_origin with origin LSN 0/ABCDEF and origin timestamp 2024-01-01 00:00:00+00",
  "19. final marker: non-transactional pg_logical_emit_message(false, 'floe-end', 'end')",
  "Then the client sends a standby status update ('r', reply requested) and the server's keepalive answer is the last frame.",
];

const SETUP = `
SET TimeZone = 'UTC';
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types_t (
  id int PRIMARY KEY, c_bool bool, c_int2 int2, c_int8 int8, c_numeric numeric(12,3), c_float4 float4, c_float8 float8,
  c_text text, c_varchar varchar(20), c_char char(5), c_bytea bytea, c_date date, c_time time, c_timestamp timestamp(3),
  c_timestamptz timestamptz, c_interval interval, c_uuid uuid, c_json json, c_jsonb jsonb, c_int_arr int[], c_text_arr text[],
  c_inet inet
);
CREATE TABLE pk_t (id int PRIMARY KEY, name text, note text);
CREATE TABLE full_t (a int, b text, c numeric);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE idx_t (id int PRIMARY KEY, code text NOT NULL, v int);
CREATE UNIQUE INDEX idx_t_code ON idx_t (code);
ALTER TABLE idx_t REPLICA IDENTITY USING INDEX idx_t_code;
CREATE TABLE toast_t (id int PRIMARY KEY, big text, small int);
ALTER TABLE toast_t ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO toast_t VALUES (1, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 700)), 1);
CREATE TABLE enum_t (id int PRIMARY KEY, m mood, ms mood[]);
CREATE TABLE trunc_a (id serial PRIMARY KEY);
CREATE TABLE trunc_b (id serial PRIMARY KEY, a_id int REFERENCES trunc_a (id));
INSERT INTO trunc_a DEFAULT VALUES;
INSERT INTO trunc_b (a_id) VALUES (1);
CREATE TABLE origin_t (id int PRIMARY KEY, v text);
CREATE PUBLICATION ${PUBLICATION} FOR ALL TABLES;
SELECT pg_replication_origin_create('floe_origin');
`;

/** One entry per transaction (or non-transactional statement), in DESCRIPTION order. */
const CHANGES: string[] = [
  `BEGIN;
   INSERT INTO types_t VALUES (1, true, -32768, 9223372036854775807, 12345.678, 1.5, 3.141592653589793,
     E'h\u00e9llo "w\u00f6rld"\\n\u{1F418}\\ttab', 'varchar', 'ab', '\\x00ff10'::bytea, '2024-02-29', '13:45:56.789',
     '2024-02-29 13:45:56.789', '2024-02-29 13:45:56.789+02', '1 year 2 mons 3 days 04:05:06.5',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}', '{1,NULL,3}',
     ARRAY['x y', 'q"uote', NULL], '192.168.0.1/24');
   INSERT INTO types_t (id) VALUES (2);
   COMMIT;`,
  `INSERT INTO pk_t VALUES (1, 'one', NULL), (2, 'two', 'n2');`,
  `BEGIN; INSERT INTO pk_t VALUES (99, 'gone', 'gone'); ROLLBACK;`,
  `UPDATE pk_t SET name = 'uno' WHERE id = 1;`,
  `UPDATE pk_t SET id = 10 WHERE id = 2;`,
  `DELETE FROM pk_t WHERE id = 10;`,
  `INSERT INTO full_t VALUES (1, 'x', 1.5), (2, NULL, 2);`,
  `UPDATE full_t SET b = 'y' WHERE a = 1;`,
  `DELETE FROM full_t WHERE a = 2;`,
  `BEGIN;
   INSERT INTO idx_t VALUES (1, 'c1', 1);
   UPDATE idx_t SET v = 2 WHERE id = 1;
   UPDATE idx_t SET code = 'c2' WHERE id = 1;
   COMMIT;`,
  `UPDATE toast_t SET small = 2 WHERE id = 1;`,
  `INSERT INTO enum_t VALUES (1, 'happy', '{sad,ok}');`,
  `SELECT pg_logical_emit_message(true, 'floe', 'hi');`,
  `SELECT pg_logical_emit_message(false, 'floe', 'hi-nt');`,
  `SELECT pg_logical_emit_message(false, 'floe-bin', '\\x00ff'::bytea);`,
  `TRUNCATE trunc_a, trunc_b;`,
  `TRUNCATE trunc_a RESTART IDENTITY CASCADE;`,
  `SELECT pg_replication_origin_session_setup('floe_origin');
   BEGIN;
   SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-01 00:00:00+00');
   INSERT INTO origin_t VALUES (1, 'from origin');
   COMMIT;
   SELECT pg_replication_origin_session_reset();`,
  `SELECT pg_logical_emit_message(false, 'floe-end', 'end');`,
];

type CopyBoth = Duplex & pg.Submittable;
const both = (copyStreams as unknown as { both(text: string, options?: object): CopyBoth }).both;

async function captureFrames(cluster: RunningCluster): Promise<Buffer[]> {
  const client = new pg.Client({
    connectionString: cluster.url('postgres'),
    replication: 'database',
    options: '-c TimeZone=UTC -c DateStyle=ISO',
  } as pg.ClientConfig);
  await client.connect();
  const frames: Buffer[] = [];
  try {
    const stream = client.query(
      both(`START_REPLICATION SLOT ${SLOT} LOGICAL 0/0 (proto_version '1', publication_names '${PUBLICATION}', messages 'true')`, {
        alignOnCopyDataFrame: true,
        readableObjectMode: true,
      }),
    );
    await new Promise<void>((resolve, reject) => {
      let state: 'reading' | 'awaiting-keepalive' | 'closing' = 'reading';
      const timer = setTimeout(() => reject(new Error(`timed out in state ${state} after ${frames.length} frames`)), 30_000);
      const close = (): void => {
        if (state === 'closing') return;
        state = 'closing';
        clearTimeout(timer);
        stream.end(); // sends CopyDone; 'finish' follows the server's ReadyForQuery
      };
      stream.on('error', reject);
      stream.on('finish', () => resolve());
      stream.on('data', (chunk: Buffer) => {
        if (state === 'closing') return;
        frames.push(Buffer.from(chunk));
        const frame = decodeReplicationFrame(chunk);
        if (frame.tag === 'xlog') {
          const msg = decodePgOutput(frame.data);
          if (msg.tag === 'message' && msg.prefix === 'floe-end') {
            state = 'awaiting-keepalive';
            const now = BigInt(Date.now()) * 1000n;
            stream.write(encodeStandbyStatus(frame.walEnd, frame.walEnd, frame.walEnd, now, true));
          }
        } else if (state === 'awaiting-keepalive') {
          close();
        }
      });
    });
  } finally {
    await client.end();
  }
  return frames;
}

async function captureMajor(major: number): Promise<void> {
  const cluster = await startCluster({ major });
  try {
    const admin = new pg.Client({ connectionString: cluster.url('postgres') });
    await admin.connect();
    try {
      await admin.query(SETUP);
      await admin.query(`SELECT pg_create_logical_replication_slot('${SLOT}', 'pgoutput')`);
      for (const sql of CHANGES) await admin.query(sql);
      const version = (await admin.query<{ v: string }>(`SELECT version() AS v`)).rows[0]!.v;
      const frames = await captureFrames(cluster);
      await admin.query(`SELECT pg_drop_replication_slot('${SLOT}')`);
      mkdirSync(OUT_DIR, { recursive: true });
      const file = `${OUT_DIR}pg${major}.json`;
      const body = { description: DESCRIPTION, serverVersion: version, frames: frames.map((f) => ({ hex: f.toString('hex') })) };
      // One frame per line keeps the file reviewable.
      const json = JSON.stringify(body, null, 1).replace(/\{\n\s+("hex": "[0-9a-f]*")\n\s+\}/g, '{ $1 }');
      writeFileSync(file, json + '\n');
      const bytes = frames.reduce((n, f) => n + f.length, 0);
      console.log(`PostgreSQL ${major}: ${frames.length} frames, ${bytes} bytes -> ${file}`);
    } finally {
      await admin.end();
    }
  } finally {
    await cluster.stop();
  }
}

const majors = process.argv.length > 2 ? process.argv.slice(2).map(Number) : [15, 18];
for (const major of majors) await captureMajor(major);
