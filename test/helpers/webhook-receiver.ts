import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedRequest {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly at: number;
}

export interface WebhookReceiver {
  readonly url: string;
  readonly requests: ReceivedRequest[];
  /** 'ok' answers 200; 'fail' answers 503; 'hang' never answers (until closed). */
  mode: 'ok' | 'fail' | 'hang';
  close(): Promise<void>;
}

/** A local HTTP endpoint that records every POST (a stand-in for Slack or any alert webhook). */
export async function startWebhookReceiver(mode: WebhookReceiver['mode'] = 'ok'): Promise<WebhookReceiver> {
  const requests: ReceivedRequest[] = [];
  const receiver = { mode } as { mode: WebhookReceiver['mode'] };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ headers: req.headers, body, at: Date.now() });
      if (receiver.mode === 'hang') return;
      res.writeHead(receiver.mode === 'ok' ? 200 : 503).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
