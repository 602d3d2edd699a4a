import { spawn } from 'node:child_process';

/** Runs `node bin/floe.js ...args` and collects its output. */
export function runFloe(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/floe.js', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`floe ${args.join(' ')} did not exit: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface FloeProcess {
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** What the process wrote to stderr so far (its JSON log lines). */
  stderr(): string;
  kill(signal: NodeJS.Signals): void;
}

/** Starts `floe ...args` in the background. */
export function startFloe(args: string[], env: Record<string, string> = {}): FloeProcess {
  const child = spawn(process.execPath, ['bin/floe.js', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
  return { exited, stderr: () => stderr, kill: (signal) => child.kill(signal) };
}
