/**
 * CopyOut (src/postgres/copy-out.ts) against a real server: the bytes equal what pg-copy-streams gives for
 * the same COPY (rows small and larger than a socket chunk, notices in between), an error mid-copy reaches
 * the stream, the connection is usable afterwards, and a slow consumer holds the socket back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { CopyOut } from '../src/postgres/copy-out.js';
import { createTestDatabase, testClusters, type TestDatabase } from './harness/database.js';

async function bytes(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

describe.each(testClusters())('CopyOut on PostgreSQL $major', (cluster) => {
  let db: TestDatabase;
  let client: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase(cluster, 'copyout');
    await db.sql(`CREATE TABLE t (id int, v text)`);
    // Rows from empty to 200 kB, so messages straddle socket chunks every way; escapes and multi-byte text.
    await db.sql(
      `INSERT INTO t SELECT g, CASE WHEN g % 97 = 0 THEN repeat('é\\t"x', g * 100) WHEN g % 13 = 0 THEN NULL ELSE 'row ' || g END FROM generate_series(1, 3000) g`,
    );
    await db.sql(
      `CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF i % 500 = 0 THEN RAISE NOTICE 'at %', i; END IF; RETURN i; END $$`,
    );
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
  });

  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it('gives the bytes pg-copy-streams gives, with notices in between', async () => {
    for (const sql of [`COPY (SELECT noisy(id), v FROM t ORDER BY id) TO STDOUT`, `COPY (SELECT * FROM t WHERE false) TO STDOUT`]) {
      const want = await bytes(client.query(copyTo(sql)));
      const stream = client.query(new CopyOut(sql));
      const got = await bytes(stream);
      // Buffer.equals: a deep equality of 30 MB takes gigabytes.
      expect(got.length).toBe(want.length);
      expect(got.equals(want)).toBe(true);
      expect(stream.rowCount).toBe(sql.includes('false') ? 0 : 3000);
    }
    // The connection is back in pg's hands.
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('ends the stream with the server error of a failing COPY, then the connection works', async () => {
    const stream = client.query(new CopyOut(`COPY (SELECT 1 / (id - 2500) FROM t ORDER BY id) TO STDOUT`));
    await expect(bytes(stream)).rejects.toThrow(/division by zero/);
    const early = client.query(new CopyOut(`COPY (SELECT * FROM missing_table) TO STDOUT`));
    await expect(bytes(early)).rejects.toThrow(/missing_table/);
    expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('stops reading the socket while its consumer is slow, and loses nothing', async () => {
    const sql = `COPY (SELECT id, v FROM t ORDER BY id) TO STDOUT`;
    const want = await bytes(client.query(copyTo(sql)));
    const stream = client.query(new CopyOut(sql));
    const chunks: Buffer[] = [];
    let most = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(Buffer.from(chunk));
      // read() hands over everything buffered: a chunk is as large as what queued while we slept.
      most = Math.max(most, chunk.length);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(Buffer.concat(chunks).equals(want)).toBe(true);
    // Without backpressure most of the table (over 30 MB) would queue in the stream.
    expect(most).toBeLessThan(1024 * 1024);
  });
});
