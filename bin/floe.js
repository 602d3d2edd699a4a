#!/usr/bin/env node
// floe ships as TypeScript; tsx compiles it on load (esbuild, cached), so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
