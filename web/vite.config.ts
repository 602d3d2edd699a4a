// The console's build: plain TypeScript and CSS bundled into dist/web, which floe serves itself (no CDN).
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: '/',
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    // Inlined assets would be data: URLs; the CSP allows them for images only, so keep files separate.
    assetsInlineLimit: 0,
    target: 'es2022',
  },
});
