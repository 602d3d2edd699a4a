import { applyHeapGrowth } from './heap-growth.js';
import { buildProgram, failure } from './program.js';

try {
  applyHeapGrowth();
  await buildProgram().parseAsync(process.argv);
  // A command may set a non-zero exit code without failing (floe doctor with error findings).
  process.exit(process.exitCode ?? 0);
} catch (err) {
  const { code, line } = failure(err);
  if (line) process.stderr.write(line);
  process.exit(code);
}
