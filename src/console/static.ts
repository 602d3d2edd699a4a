/**
 * Serves the built console (dist/web, made by `npm run build:web`) from memory: a handful of small files
 * read once at start. Without a build, `/` answers with a page saying how to make one. Everything is
 * local: the Content-Security-Policy allows this origin only, so no CDN script could run even if one
 * were referenced.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

export const DEFAULT_WEB_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../dist/web');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

const CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const MISSING = `<!doctype html><meta charset="utf-8"><title>floe console</title>
<p>The floe console has not been built. In floe's directory run <code>npm run build:web</code> (npm ci runs it too),
then reload. The API is available meanwhile under <a href="/api/v1/openapi.json">/api/v1</a>.</p>`;

function readTree(root: string): Map<string, { body: Buffer; type: string }> {
  const files = new Map<string, { body: Buffer; type: string }>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else
        files.set(`/${relative(root, path).split('\\').join('/')}`, {
          body: readFileSync(path),
          type: TYPES[extname(path)] ?? 'application/octet-stream',
        });
    }
  };
  walk(root);
  return files;
}

export function serveConsoleFiles(app: FastifyInstance, webRoot = DEFAULT_WEB_ROOT): void {
  const files = existsSync(join(webRoot, 'index.html')) ? readTree(webRoot) : new Map<string, { body: Buffer; type: string }>();
  const index = files.get('/index.html');
  const page = (reply: import('fastify').FastifyReply) => {
    reply.header('content-security-policy', CSP).header('x-frame-options', 'DENY');
    if (!index) return reply.code(503).type('text/html; charset=utf-8').send(MISSING);
    return reply.type(index.type).send(index.body);
  };
  app.get('/', async (_req, reply) => page(reply));
  // Client-side routes (#/pipelines/x) never reach the server; /assets/* are the built files.
  app.get('/assets/*', async (req, reply) => {
    const file = files.get(req.url.split('?')[0]!);
    if (!file) return reply.code(404).type('text/plain').send('not found');
    reply.header('content-security-policy', CSP);
    return reply.type(file.type).send(file.body);
  });
}
