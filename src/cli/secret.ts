import { Command } from 'commander';
import { FloeError } from '../errors.js';
import { encryptSecret, loadSecretKey } from '../control/secrets.js';
import { print } from './control-plane.js';

export function secretCommand(): Command {
  const cmd = new Command('secret').description('secret references for the control plane');
  cmd
    .command('encrypt')
    .description('read a secret from stdin and print its enc:v1: form (AES-256-GCM under FLOE_SECRET_KEY)')
    .action(async () => {
      const key = loadSecretKey();
      try {
        if (process.stdin.isTTY) process.stderr.write('type the secret, then Enter and Ctrl-D\n');
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        const input = Buffer.concat(chunks);
        // One trailing newline is the terminal's or echo's, not part of the secret.
        const text = input.toString('utf8').replace(/\r?\n$/, '');
        input.fill(0);
        if (text === '')
          throw new FloeError('config', 'no secret on stdin', { hint: 'e.g. printf \'%s\' "$PASSWORD" | floe secret encrypt' });
        print(encryptSecret(text, key));
      } finally {
        key.fill(0);
      }
    });
  return cmd;
}
