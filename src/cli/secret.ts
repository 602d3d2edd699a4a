import { Command } from 'commander';
import { FloeError } from '../errors.js';
import { checkDestination, checkName, checkSourceUrl, DESTINATION_SECRETS, secretBinding } from '../control/config.js';
import { encryptSecret, loadSecretKey } from '../control/secrets.js';
import { print } from './control-plane.js';

interface EncryptOptions {
  source?: string;
  destination?: string;
  secret?: string;
  url: string;
}

export function secretCommand(): Command {
  const cmd = new Command('secret').description('secret references for the control plane');
  cmd
    .command('encrypt')
    .description(
      'read a secret from stdin and print its enc:v2: form (AES-256-GCM under FLOE_SECRET_KEY), bound to the row, setting and host it is for',
    )
    .option('--source <name>', 'the secret is the password of this source')
    .option('--destination <name>', 'the secret is one of this destination (with --secret)')
    .option('--secret <name>', 'the destination secret it is: private_key or private_key_passphrase')
    .requiredOption('--url <url>', 'the URL of that source or destination, as it is (or will be) stored')
    .action(async (opts: EncryptOptions) => {
      const binding = bindingFor(opts);
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
          throw new FloeError('config', 'no secret on stdin', {
            hint: 'e.g. printf \'%s\' "$PASSWORD" | floe secret encrypt --source app --url postgres://floe@db/app',
          });
        print(encryptSecret(text, key, binding));
      } finally {
        key.fill(0);
      }
    });
  return cmd;
}

/** The binding of the row the secret is for; checked before stdin is read. */
function bindingFor(opts: EncryptOptions): string {
  if ((opts.source === undefined) === (opts.destination === undefined)) {
    throw new FloeError('config', 'say which row the secret is for: --source NAME or --destination NAME --secret NAME', {
      hint: 'an encrypted secret only decrypts for that row, setting and host',
    });
  }
  if (opts.source !== undefined) {
    checkName('source', opts.source);
    checkSourceUrl(opts.url);
    return secretBinding({ kind: 'source', name: opts.source, url: opts.url });
  }
  checkName('destination', opts.destination!);
  const type = checkDestination('snowflake', opts.url);
  if (!opts.secret || !DESTINATION_SECRETS[type].includes(opts.secret)) {
    throw new FloeError('config', '--destination needs --secret with the name of the secret', {
      hint: `secrets it takes: ${DESTINATION_SECRETS[type].join(', ')}`,
    });
  }
  return secretBinding({ kind: 'destination', name: opts.destination!, secret: opts.secret, url: opts.url });
}
