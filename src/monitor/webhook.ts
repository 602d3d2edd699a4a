/**
 * Webhook delivery of alerts. `deliver` only enqueues: replication never waits for a webhook.
 *
 * Each URL has its own bounded queue and sender, so one endpoint that is down does not delay the
 * others. A delivery is tried up to `attempts` times with exponential backoff (with jitter) and a
 * timeout per attempt; then it is dropped with a log line. A full queue drops its oldest alert
 * (counted and logged): the newest state of a slot is the one worth telling.
 *
 * Signature (when a secret is set): `X-Floe-Timestamp: <unix seconds>` and
 * `X-Floe-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, computed per attempt,
 * so a receiver can reject stale or replayed requests by the timestamp.
 */
import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { FloeError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { FloeMetrics } from '../telemetry/metrics.js';
import type { Alert, AlertSink } from './alerts.js';

export type WebhookFormat = 'json' | 'slack';

export interface WebhookOptions {
  readonly urls: readonly string[];
  /** (Default: json, `FLOE_ALERT_WEBHOOK_FORMAT`) */
  readonly format?: WebhookFormat;
  /** HMAC-SHA256 key; no signature headers without it. (`FLOE_ALERT_WEBHOOK_SECRET`) */
  readonly secret?: string;
  /** Tries per alert and URL. (Default: 5) */
  readonly attempts?: number;
  /** First retry delay; doubles per attempt up to `maxBackoffMs`. (Default: 1000 ms) */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Per-attempt timeout. (Default: 10000 ms) */
  readonly timeoutMs?: number;
  /** Alerts waiting per URL; the oldest is dropped beyond it. (Default: 100) */
  readonly maxQueue?: number;
  readonly log: Logger;
  readonly metrics?: FloeMetrics;
}

export const SIGNATURE_HEADER = 'x-floe-signature';
export const TIMESTAMP_HEADER = 'x-floe-timestamp';

/** The signature header value for a body sent at `timestamp` (unix seconds). */
export function signPayload(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** Webhook options from `FLOE_ALERT_WEBHOOK_URL` (comma-separated), `_FORMAT` and `_SECRET`; undefined when no URL is set. */
export function webhookOptionsFromEnv(env: NodeJS.ProcessEnv, rest: Pick<WebhookOptions, 'log' | 'metrics'>): WebhookOptions | undefined {
  const urls = (env.FLOE_ALERT_WEBHOOK_URL ?? '')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) return undefined;
  urls.forEach(checkWebhookUrl);
  const format = (env.FLOE_ALERT_WEBHOOK_FORMAT ?? 'json').trim();
  if (format !== 'json' && format !== 'slack') {
    throw new FloeError('config', `FLOE_ALERT_WEBHOOK_FORMAT must be json or slack, got "${format}"`);
  }
  const secret = env.FLOE_ALERT_WEBHOOK_SECRET || undefined;
  return { urls, format, secret, ...rest };
}

/**
 * A webhook URL must be http(s) and carry no `user:password@`: fetch refuses credentials in a URL, so every
 * alert would be dropped. The URL itself is never echoed (it may hold a token).
 */
function checkWebhookUrl(url: string, index: number): void {
  const which = `FLOE_ALERT_WEBHOOK_URL (entry ${index + 1})`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FloeError('config', `${which} is not a valid URL`, { hint: 'use https://host/path' });
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new FloeError('config', `${which} must be an http or https URL, not ${u.protocol}`, { hint: 'use https://host/path' });
  }
  if (u.username || u.password) {
    throw new FloeError('config', `${which} carries user:password@, which HTTP clients refuse to send: every alert would be dropped`, {
      hint: 'put the token in the path or query as the receiver expects, and sign alerts with FLOE_ALERT_WEBHOOK_SECRET',
    });
  }
}

/** The Slack-compatible body: `text` for notifications plus blocks for the message itself. */
export function slackPayload(alert: Alert): object {
  const icon = alert.type === 'resolved' ? ':white_check_mark:' : alert.severity === 'critical' ? ':red_circle:' : ':warning:';
  const f = alert.figures;
  const fmt = (v: number | null, unit: string) => (v === null ? 'n/a' : `${v} ${unit}`);
  const eta = (s: number | null) => (s === null ? 'not growing' : `${Math.round(s / 60)} min`);
  const title = `${alert.type === 'resolved' ? `resolved: ${alert.resolves}` : alert.type}${alert.repeat ? ' (repeat)' : ''}`;
  return {
    text: `${icon} floe ${title}: ${alert.message}`,
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: `floe ${title}`.slice(0, 150) } },
      { type: 'section', text: { type: 'mrkdwn', text: `${icon} ${alert.message}\n_${alert.hint}_` } },
      {
        type: 'section',
        fields: [
          { type: 'mrkdwn', text: `*Source*\n${alert.source.name} (${alert.source.id})` },
          { type: 'mrkdwn', text: `*Slot*\n${slotLine(alert)}` },
          alert.slot === null
            ? { type: 'mrkdwn', text: `*pg_wal*\n${fmt(f.wal_dir_mb, 'MB')}` }
            : { type: 'mrkdwn', text: `*Retained WAL*\n${fmt(f.retained_wal_mb, 'MB')}` },
          {
            type: 'mrkdwn',
            text: `*WAL status*\n${f.wal_status ?? 'n/a'}${f.active === null ? '' : f.active ? ' (active)' : ' (inactive)'}`,
          },
          { type: 'mrkdwn', text: `*Thresholds*\nwarning ${alert.thresholds.warning_mb} MB, danger ${alert.thresholds.danger_mb} MB` },
          { type: 'mrkdwn', text: `*Until danger*\n${eta(alert.forecast.seconds_until_danger)}` },
        ],
      },
      { type: 'context', elements: [{ type: 'mrkdwn', text: `since ${alert.since} · at ${alert.timestamp}` }] },
    ],
  };
}

/** The slot and whose it is, or what a source-wide alert is about. */
function slotLine(alert: Alert): string {
  const i = alert.slot_info;
  if (alert.slot === null || !i)
    return alert.type.startsWith('archive') || alert.resolves?.startsWith('archive') ? 'archiver' : 'pg_wal directory';
  return `${alert.slot} (${i.floe ? "floe's" : "not floe's"}, ${i.type}${i.owner ? `, ${i.owner}` : ''})`;
}

/** The URL without credentials or query, for log lines (webhook URLs often embed tokens in the path). */
function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '<invalid URL>';
  }
}

export class WebhookNotifier implements AlertSink {
  readonly #channels: Channel[];
  readonly #shutdown = new AbortController();

  constructor(options: WebhookOptions) {
    for (const url of options.urls) {
      if (!/^https?:\/\//i.test(url)) {
        throw new FloeError('config', `alert webhook URL ${describeUrl(url)} must start with http:// or https://`);
      }
    }
    this.#channels = options.urls.map((url) => new Channel(url, options, this.#shutdown.signal));
  }

  deliver(alert: Alert): void {
    for (const c of this.#channels) c.enqueue(alert);
  }

  /** Alerts still waiting, over all URLs. */
  get pending(): number {
    return this.#channels.reduce((n, c) => n + c.pending, 0);
  }

  /** Lets queued alerts go out for up to `graceMs`, then abandons the rest. */
  async close(graceMs = 2000): Promise<void> {
    const idle = Promise.all(this.#channels.map((c) => c.idle()));
    await Promise.race([idle, sleep(graceMs, undefined, { ref: false })]);
    this.#shutdown.abort();
    await idle;
  }
}

class Channel {
  readonly #url: string;
  readonly #o: WebhookOptions;
  readonly #signal: AbortSignal;
  readonly #queue: Alert[] = [];
  #running: Promise<void> | undefined;

  constructor(url: string, options: WebhookOptions, signal: AbortSignal) {
    this.#url = url;
    this.#o = options;
    this.#signal = signal;
  }

  get pending(): number {
    return this.#queue.length + (this.#running ? 1 : 0);
  }

  enqueue(alert: Alert): void {
    if (this.#signal.aborted) return;
    const max = this.#o.maxQueue ?? 100;
    while (this.#queue.length >= max) {
      const dropped = this.#queue.shift()!;
      this.#o.metrics?.alertDelivery(dropped.type, 'dropped');
      this.#o.log.warn(
        { alert: dropped.type, slot: dropped.slot, sourceId: dropped.source.id, webhook: describeUrl(this.#url), queued: max },
        'alert webhook queue full: dropped the oldest alert',
      );
    }
    this.#queue.push(alert);
    this.#running ??= this.#drain().finally(() => (this.#running = undefined));
  }

  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #drain(): Promise<void> {
    for (let alert = this.#queue.shift(); alert; alert = this.#queue.shift()) {
      if (this.#signal.aborted) {
        this.#queue.length = 0;
        return;
      }
      await this.#send(alert);
    }
  }

  async #send(alert: Alert): Promise<void> {
    const { attempts = 5, backoffMs = 1000, maxBackoffMs = 30_000, timeoutMs = 10_000, log, metrics } = this.#o;
    const body = JSON.stringify(this.#o.format === 'slack' ? slackPayload(alert) : alert);
    let lastError = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const status = await this.#post(body, timeoutMs);
        if (status >= 200 && status < 300) {
          metrics?.alertDelivery(alert.type, 'sent');
          return;
        }
        lastError = `HTTP ${status}`;
        // A client error other than 408/429 will not change by retrying.
        if (status >= 400 && status < 500 && status !== 408 && status !== 429) break;
      } catch (err) {
        if (this.#signal.aborted) break;
        lastError = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (err as Error).message;
      }
      if (attempt < attempts) {
        metrics?.alertDelivery(alert.type, 'retried');
        const delay = Math.min(maxBackoffMs, backoffMs * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
        const aborted = await sleep(delay, false, { signal: this.#signal }).catch(() => true);
        if (aborted) break;
      }
    }
    metrics?.alertDelivery(alert.type, 'failed');
    log.warn(
      { alert: alert.type, slot: alert.slot, sourceId: alert.source.id, webhook: describeUrl(this.#url), err: lastError },
      'alert webhook delivery failed; alert dropped',
    );
  }

  async #post(body: string, timeoutMs: number): Promise<number> {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'floe-alerts' };
    if (this.#o.secret) {
      const timestamp = String(Math.floor(Date.now() / 1000));
      headers[TIMESTAMP_HEADER] = timestamp;
      headers[SIGNATURE_HEADER] = signPayload(this.#o.secret, timestamp, body);
    }
    const res = await fetch(this.#url, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), this.#signal]),
    });
    await res.body?.cancel().catch(() => undefined);
    return res.status;
  }
}
