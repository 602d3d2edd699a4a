/**
 * The `floe demo` sample database and its workload.
 *
 * Schema `shop`, published as `floe_demo`:
 *
 * - customers: bigserial key, text, varchar(120), an enum, numeric(12,2),
 *   timestamptz, text[] (elements with commas, quotes, backslashes, the text
 *   'NULL' and real NULLs), jsonb, boolean, date.
 * - orders: bigserial key, bigint, numeric without typmod (some wider than 38
 *   digits), uuid, interval, float8 (with the odd NaN/Infinity), bytea, inet,
 *   and a `note` that is sometimes TOAST-sized (random text, so it does not
 *   compress below the TOAST threshold); most order updates leave `note`
 *   alone, so the stream carries it as "unchanged TOAST", also when the
 *   update changes the primary key.
 * - events: no primary key, REPLICA IDENTITY FULL; mostly inserts (a few of
 *   them exact duplicates), some deletes of one row of a duplicate group, and
 *   a few updates.
 *
 * Everything is drawn from a seeded generator and the workload runs its
 * statements one at a time on one session, so the same seed and options give
 * the same statements and the same final database (`floe demo --once`).
 */
import type pg from 'pg';

export const DEMO_SCHEMA = 'shop';
export const DEMO_PUBLICATION = 'floe_demo';
export const DEMO_TABLES = ['customers', 'orders', 'events'] as const;

// ---- deterministic random numbers -------------------------------------------------------

/** sfc32, seeded through splitmix32: small, fast and good enough for test data. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t / 4294967296;
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
}

// ---- schema ------------------------------------------------------------------------------

export const SCHEMA_SQL = `
CREATE SCHEMA ${DEMO_SCHEMA};
CREATE TYPE ${DEMO_SCHEMA}.tier AS ENUM ('free', 'plus', 'pro', 'enterprise');
CREATE TABLE ${DEMO_SCHEMA}.customers (
  id bigserial PRIMARY KEY,
  name text NOT NULL,
  email varchar(120),
  tier ${DEMO_SCHEMA}.tier NOT NULL DEFAULT 'free',
  balance numeric(12,2) NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL,
  tags text[],
  profile jsonb,
  active boolean NOT NULL DEFAULT true,
  birthday date
);
CREATE TABLE ${DEMO_SCHEMA}.orders (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL,
  amount numeric NOT NULL,
  ref uuid NOT NULL,
  delivery_window interval,
  weight_kg float8,
  receipt bytea,
  client_ip inet,
  status text NOT NULL,
  placed_at timestamptz NOT NULL,
  note text
);
CREATE TABLE ${DEMO_SCHEMA}.events (
  event_no bigint NOT NULL,
  at timestamptz NOT NULL,
  kind text NOT NULL,
  customer_id bigint,
  payload jsonb
);
ALTER TABLE ${DEMO_SCHEMA}.events REPLICA IDENTITY FULL;
CREATE INDEX ON ${DEMO_SCHEMA}.events (event_no);
CREATE PUBLICATION ${DEMO_PUBLICATION} FOR TABLE ${DEMO_SCHEMA}.customers, ${DEMO_SCHEMA}.orders, ${DEMO_SCHEMA}.events;
`;

export async function createDemoSchema(client: pg.Client): Promise<void> {
  await client.query(SCHEMA_SQL);
}

// ---- value generators --------------------------------------------------------------------

const FIRST = ['Ada', 'Zoë', 'José', 'Łukasz', 'Aiko', 'Chidi', 'Mårten', 'Siobhán', 'Nguyễn', '美咲', 'Omar', 'Grace', 'Ravi', 'Inès'];
const LAST = ["O'Brien", 'Müller', 'García', 'Kowalski', 'Tanaka', 'Okafor', 'Björk', 'Lefèvre', 'Smith', '山田', 'Haddad', 'Hopper'];
const TIERS = ['free', 'plus', 'pro', 'enterprise'] as const;
const TAGS = ['vip', 'newsletter', 'needs, comma', 'has "quotes"', 'back\\slash', 'NULL', '{braces}', '  spaced  ', 'ünïcödé', 'b2b'];
const STATUSES = ['placed', 'paid', 'packed', 'shipped', 'delivered', 'returned', 'cancelled'];
const EVENT_KINDS = ['page_view', 'search', 'add_to_cart', 'checkout', 'login', 'logout', 'review'];
const LOCALES = ['en-GB', 'de-DE', 'fr-FR', 'ja-JP', 'pt-BR', 'pl-PL'];
const WORDS = [
  'fragile',
  'gift wrap',
  'leave at door',
  'call first',
  'ring twice',
  'it\'s "urgent"',
  'tab\there',
  'new\nline',
  'back\\slash',
];
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** 2020-01-01T00:00:00Z in microseconds. */
const EPOCH_2020_US = 1_577_836_800_000_000;
const FIVE_YEARS_US = 5 * 365 * 86_400 * 1_000_000;

function timestampText(micros: number): string {
  const ms = Math.floor(micros / 1000);
  const iso = new Date(ms).toISOString(); // 2021-03-04T05:06:07.123Z
  const frac = String(micros % 1_000_000).padStart(6, '0');
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${frac}+00`;
}

function uuid(rng: Rng): string {
  const h = rng.bytes(16);
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Random alphanumeric text: pglz and lz4 find no repeats, so the value stays TOAST-sized. */
function randomText(rng: Rng, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += ALNUM[Math.floor(rng.next() * ALNUM.length)];
  return s;
}

function amount(rng: Rng): string {
  if (rng.chance(0.02)) return `${rng.int(1, 9)}${randomDigits(rng, 25)}.${randomDigits(rng, 18)}`; // wider than DECIMAL(38)
  const scale = rng.int(0, 4);
  const cents = rng.int(0, 99_999_999);
  const n = (cents / 100).toFixed(2);
  return scale <= 2 ? n : n + randomDigits(rng, scale - 2);
}

function randomDigits(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String(rng.int(0, 9));
  return s;
}

function interval(rng: Rng): string | null {
  switch (rng.int(0, 5)) {
    case 0:
      return null;
    case 1:
      return `${rng.int(1, 14)} days`;
    case 2:
      return `${rng.int(0, 23)}:${String(rng.int(0, 59)).padStart(2, '0')}:00`;
    case 3:
      return `${rng.int(1, 3)} mons ${rng.int(0, 27)} days`;
    case 4:
      return `${rng.int(1, 6)} days ${rng.int(0, 23)}:${String(rng.int(0, 59)).padStart(2, '0')}:${String(rng.int(0, 59)).padStart(2, '0')}.${rng.int(0, 999_999)}`;
    default:
      return `-${rng.int(1, 90)} minutes`;
  }
}

function weight(rng: Rng): number | string | null {
  const r = rng.next();
  if (r < 0.03) return null;
  if (r < 0.04) return rng.pick(['NaN', 'Infinity', '-Infinity', '-0']);
  return rng.next() * 100 * rng.next();
}

function tags(rng: Rng): (string | null)[] | null {
  if (rng.chance(0.1)) return null;
  const n = rng.int(0, 4);
  const out: (string | null)[] = [];
  for (let i = 0; i < n; i++) out.push(rng.chance(0.05) ? null : rng.pick(TAGS));
  return out;
}

function profile(rng: Rng): string | null {
  if (rng.chance(0.1)) return null;
  return JSON.stringify({
    locale: rng.pick(LOCALES),
    newsletter: rng.chance(0.5),
    score: Math.round(rng.next() * 1e6) / 1e3,
    prefs: { theme: rng.pick(['dark', 'light']), currency: rng.pick(['EUR', 'USD', 'JPY']), limit: BIG_NUMBER },
    history: Array.from({ length: rng.int(0, 3) }, () => ({
      at: timestampText(EPOCH_2020_US + rng.int(0, FIVE_YEARS_US)),
      what: rng.pick(EVENT_KINDS),
    })),
    note: rng.chance(0.2) ? rng.pick(WORDS) : null,
  }).replace(JSON.stringify(BIG_NUMBER), `${rng.int(1, 9)}${randomDigits(rng, 22)}.${randomDigits(rng, 4)}`); // beyond a double
}

const BIG_NUMBER = '<big>';

function note(rng: Rng, toastable: boolean): string | null {
  if (toastable) return randomText(rng, rng.int(9_000, 24_000));
  if (rng.chance(0.3)) return null;
  return `${rng.pick(WORDS)} #${rng.int(1, 9999)}`;
}

function ip(rng: Rng): string | null {
  if (rng.chance(0.1)) return null;
  if (rng.chance(0.2)) return `2001:db8::${rng.int(1, 0xffff).toString(16)}`;
  return `${rng.int(1, 223)}.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`;
}

const customerValues = (rng: Rng): unknown[] => {
  const first = rng.pick(FIRST);
  const last = rng.pick(LAST);
  const birthday = rng.chance(0.2)
    ? null
    : `${rng.int(1940, 2006)}-${String(rng.int(1, 12)).padStart(2, '0')}-${String(rng.int(1, 28)).padStart(2, '0')}`;
  return [
    `${first} ${last}`,
    rng.chance(0.1) ? null : `${first.toLowerCase()}.${rng.int(1, 99999)}@example.com`,
    rng.pick(TIERS),
    (rng.int(-50_000, 5_000_000) / 100).toFixed(2),
    timestampText(EPOCH_2020_US + rng.int(0, FIVE_YEARS_US)),
    tags(rng),
    profile(rng),
    rng.chance(0.9),
    birthday,
  ];
};
const CUSTOMER_COLUMNS = ['name', 'email', 'tier', 'balance', 'created_at', 'tags', 'profile', 'active', 'birthday'];

const orderValues = (rng: Rng, customerId: number, toastShare: number): unknown[] => [
  customerId,
  amount(rng),
  uuid(rng),
  interval(rng),
  weight(rng),
  rng.chance(0.15) ? null : rng.bytes(rng.int(0, 48)),
  ip(rng),
  rng.pick(STATUSES),
  timestampText(EPOCH_2020_US + rng.int(0, FIVE_YEARS_US)),
  note(rng, rng.chance(toastShare)),
];
const ORDER_COLUMNS = [
  'customer_id',
  'amount',
  'ref',
  'delivery_window',
  'weight_kg',
  'receipt',
  'client_ip',
  'status',
  'placed_at',
  'note',
];

const eventValues = (rng: Rng, eventNo: number, customerId: number | null): unknown[] => [
  eventNo,
  timestampText(EPOCH_2020_US + rng.int(0, FIVE_YEARS_US)),
  rng.pick(EVENT_KINDS),
  customerId,
  rng.chance(0.2) ? null : JSON.stringify({ path: `/p/${rng.int(1, 500)}`, ms: rng.int(1, 3000), ok: rng.chance(0.95) }),
];
const EVENT_COLUMNS = ['event_no', 'at', 'kind', 'customer_id', 'payload'];

// ---- the workload ------------------------------------------------------------------------

export interface WorkloadOptions {
  readonly seed: number;
  /** Row changes per transaction. */
  readonly rowsPerTxn: number;
  /** Share of new orders (and note rewrites) whose note is TOAST-sized. (Default: 0.1) */
  readonly toastShare?: number;
}

export interface WorkloadStats {
  transactions: number;
  inserts: number;
  updates: number;
  deletes: number;
}

/** Live keys, kept in the order the workload created them, so picks are deterministic. */
class KeySet {
  readonly #items: number[] = [];
  readonly #index = new Map<number, number>();

  get size(): number {
    return this.#items.length;
  }

  add(k: number): void {
    if (this.#index.has(k)) return;
    this.#index.set(k, this.#items.length);
    this.#items.push(k);
  }

  remove(k: number): void {
    const i = this.#index.get(k);
    if (i === undefined) return;
    const last = this.#items.pop()!;
    this.#index.delete(k);
    if (last !== k) {
      this.#items[i] = last;
      this.#index.set(last, i);
    }
  }

  pick(rng: Rng): number | undefined {
    return this.#items.length === 0 ? undefined : rng.pick(this.#items);
  }
}

type Op =
  | 'insertCustomer'
  | 'updateCustomer'
  | 'deleteCustomer'
  | 'insertOrder'
  | 'updateOrderStatus'
  | 'rewriteOrderNote'
  | 'deleteOrder'
  | 'rekeyOrder'
  | 'insertEvent'
  | 'updateEvent'
  | 'deleteEvent';

const MIX: readonly (readonly [Op, number])[] = [
  ['insertCustomer', 8],
  ['updateCustomer', 12],
  ['deleteCustomer', 2],
  ['insertOrder', 20],
  ['updateOrderStatus', 14],
  ['rewriteOrderNote', 3],
  ['deleteOrder', 4],
  ['rekeyOrder', 2],
  ['insertEvent', 28],
  ['updateEvent', 2],
  ['deleteEvent', 5],
];
const MIX_TOTAL = MIX.reduce((n, [, w]) => n + w, 0);

const S = DEMO_SCHEMA;

/**
 * Seeds the tables and then runs transactions of `rowsPerTxn` row changes
 * each. Not safe for concurrent use: one session, one statement at a time.
 */
export class Workload {
  readonly #client: pg.Client;
  readonly #rng: Rng;
  readonly #rowsPerTxn: number;
  readonly #toastShare: number;
  readonly #customers = new KeySet();
  readonly #orders = new KeySet();
  /** event_no -> how many rows carry it (duplicates are exact copies). */
  readonly #events = new Map<number, number>();
  readonly #eventNos = new KeySet();
  #nextEventNo = 1;
  readonly stats: WorkloadStats = { transactions: 0, inserts: 0, updates: 0, deletes: 0 };

  constructor(client: pg.Client, options: WorkloadOptions) {
    this.#client = client;
    this.#rng = new Rng(options.seed);
    this.#rowsPerTxn = Math.max(1, Math.floor(options.rowsPerTxn));
    this.#toastShare = options.toastShare ?? 0.1;
  }

  /** Inserts `rows` rows into each table; returns the number of rows inserted. */
  async seed(rows: number, onProgress?: (rows: number) => void): Promise<number> {
    const rng = this.#rng;
    let done = 0;
    const batch = 500;
    for (let start = 0; start < rows; start += batch) {
      const n = Math.min(batch, rows - start);
      const ids = await this.#insertMany(
        'customers',
        CUSTOMER_COLUMNS,
        Array.from({ length: n }, () => customerValues(rng)),
      );
      for (const id of ids) this.#customers.add(id);
      done += n;
      onProgress?.(done);
    }
    for (let start = 0; start < rows; start += batch) {
      const n = Math.min(batch, rows - start);
      const values = Array.from({ length: n }, () => orderValues(rng, this.#customers.pick(rng) ?? 0, this.#toastShare));
      const ids = await this.#insertMany('orders', ORDER_COLUMNS, values);
      for (const id of ids) this.#orders.add(id);
      done += n;
      onProgress?.(done);
    }
    for (let start = 0; start < rows; start += batch) {
      const n = Math.min(batch, rows - start);
      const values = Array.from({ length: n }, () => eventValues(rng, this.#newEventNo(), this.#customers.pick(rng) ?? null));
      await this.#insertMany('events', EVENT_COLUMNS, values, false);
      done += n;
      onProgress?.(done);
    }
    return done;
  }

  /** Runs one transaction; returns the number of rows it changed. */
  async transaction(): Promise<number> {
    const c = this.#client;
    let rows = 0;
    await c.query('BEGIN');
    try {
      for (let i = 0; i < this.#rowsPerTxn; i++) rows += await this.#step();
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    this.stats.transactions++;
    return rows;
  }

  #pickOp(): Op {
    let r = this.#rng.next() * MIX_TOTAL;
    for (const [op, w] of MIX) {
      if (r < w) return op;
      r -= w;
    }
    return 'insertEvent';
  }

  async #step(): Promise<number> {
    const rng = this.#rng;
    const c = this.#client;
    const op = this.#pickOp();
    switch (op) {
      case 'insertCustomer': {
        const [id] = await this.#insertMany('customers', CUSTOMER_COLUMNS, [customerValues(rng)]);
        this.#customers.add(id!);
        this.stats.inserts++;
        return 1;
      }
      case 'updateCustomer': {
        const id = this.#customers.pick(rng);
        if (id === undefined) return this.#insertOnly();
        switch (rng.int(0, 4)) {
          case 0:
            await c.query(`UPDATE ${S}.customers SET balance = balance + $2 WHERE id = $1`, [
              id,
              (rng.int(-10_000, 10_000) / 100).toFixed(2),
            ]);
            break;
          case 1:
            await c.query(`UPDATE ${S}.customers SET tier = $2, active = NOT active WHERE id = $1`, [id, rng.pick(TIERS)]);
            break;
          case 2:
            await c.query(`UPDATE ${S}.customers SET tags = array_append(coalesce(tags, '{}'), $2) WHERE id = $1`, [id, rng.pick(TAGS)]);
            break;
          case 3:
            await c.query(
              `UPDATE ${S}.customers SET profile = jsonb_set(coalesce(profile, '{}'), '{score}', to_jsonb($2::float8)) WHERE id = $1`,
              [id, Math.round(rng.next() * 1e6) / 1e3],
            );
            break;
          default:
            await c.query(`UPDATE ${S}.customers SET email = $2, birthday = NULL WHERE id = $1`, [
              id,
              `changed.${rng.int(1, 99999)}@example.org`,
            ]);
        }
        this.stats.updates++;
        return 1;
      }
      case 'deleteCustomer': {
        const id = this.#customers.pick(rng);
        if (id === undefined || this.#customers.size < 10) return this.#insertOnly();
        await c.query(`DELETE FROM ${S}.customers WHERE id = $1`, [id]);
        this.#customers.remove(id);
        this.stats.deletes++;
        return 1;
      }
      case 'insertOrder': {
        const values = orderValues(rng, this.#customers.pick(rng) ?? 0, this.#toastShare);
        const [id] = await this.#insertMany('orders', ORDER_COLUMNS, [values]);
        this.#orders.add(id!);
        this.stats.inserts++;
        return 1;
      }
      case 'updateOrderStatus': {
        // `note` is not touched: when it is TOAST-sized the stream sends it as unchanged.
        const id = this.#orders.pick(rng);
        if (id === undefined) return this.#insertOnly();
        await c.query(`UPDATE ${S}.orders SET status = $2, weight_kg = $3 WHERE id = $1`, [id, rng.pick(STATUSES), weight(rng)]);
        this.stats.updates++;
        return 1;
      }
      case 'rewriteOrderNote': {
        const id = this.#orders.pick(rng);
        if (id === undefined) return this.#insertOnly();
        await c.query(`UPDATE ${S}.orders SET note = $2 WHERE id = $1`, [id, note(rng, rng.chance(0.5))]);
        this.stats.updates++;
        return 1;
      }
      case 'deleteOrder': {
        const id = this.#orders.pick(rng);
        if (id === undefined || this.#orders.size < 10) return this.#insertOnly();
        await c.query(`DELETE FROM ${S}.orders WHERE id = $1`, [id]);
        this.#orders.remove(id);
        this.stats.deletes++;
        return 1;
      }
      case 'rekeyOrder': {
        // A primary-key change: the stream carries the old key, the destination a delete and an insert.
        // A TOAST-sized note comes as unchanged in the new image: the merge must take it from the old key.
        const id = this.#orders.pick(rng);
        if (id === undefined) return this.#insertOnly();
        const r = await c.query<{ id: string }>(`UPDATE ${S}.orders SET id = nextval('${S}.orders_id_seq') WHERE id = $1 RETURNING id`, [
          id,
        ]);
        this.#orders.remove(id);
        this.#orders.add(Number(r.rows[0]!.id));
        this.stats.updates++;
        return 1;
      }
      case 'insertEvent': {
        const values = eventValues(rng, this.#newEventNo(), this.#customers.pick(rng) ?? null);
        // Now and then an exact duplicate row: the keyless table is a multiset.
        const copies = rng.chance(0.05) ? 2 : 1;
        await this.#insertMany(
          'events',
          EVENT_COLUMNS,
          Array.from({ length: copies }, () => values),
          false,
        );
        if (copies === 2) this.#events.set(values[0] as number, 2);
        this.stats.inserts += copies;
        return copies;
      }
      case 'updateEvent': {
        // Only a row without duplicates, so which physical row changes does not matter.
        const no = this.#eventNos.pick(rng);
        if (no === undefined || this.#events.has(no)) return this.#insertOnly();
        await c.query(`UPDATE ${S}.events SET kind = $2, payload = NULL WHERE event_no = $1`, [no, rng.pick(EVENT_KINDS)]);
        this.stats.updates++;
        return 1;
      }
      case 'deleteEvent': {
        const no = this.#eventNos.pick(rng);
        if (no === undefined) return this.#insertOnly();
        // One row of the group: a keyless table is deleted by its whole old row (REPLICA IDENTITY FULL).
        await c.query(`DELETE FROM ${S}.events WHERE ctid = (SELECT ctid FROM ${S}.events WHERE event_no = $1 LIMIT 1)`, [no]);
        const left = (this.#events.get(no) ?? 1) - 1;
        if (left > 0) this.#events.set(no, left);
        else {
          this.#events.delete(no);
          this.#eventNos.remove(no);
        }
        this.stats.deletes++;
        return 1;
      }
    }
  }

  async #insertOnly(): Promise<number> {
    const [id] = await this.#insertMany('customers', CUSTOMER_COLUMNS, [customerValues(this.#rng)]);
    this.#customers.add(id!);
    this.stats.inserts++;
    return 1;
  }

  #newEventNo(): number {
    const no = this.#nextEventNo++;
    this.#eventNos.add(no);
    return no;
  }

  async #insertMany(table: string, columns: readonly string[], rows: readonly unknown[][], returning = true): Promise<number[]> {
    if (rows.length === 0) return [];
    const params: unknown[] = [];
    const tuples = rows.map((row) => {
      const refs = row.map((v) => {
        params.push(v);
        return `$${params.length}`;
      });
      return `(${refs.join(', ')})`;
    });
    const r = await this.#client.query<{ id: string }>(
      `INSERT INTO ${S}.${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}${returning ? ' RETURNING id' : ''}`,
      params,
    );
    return returning ? r.rows.map((x) => Number(x.id)) : [];
  }
}
