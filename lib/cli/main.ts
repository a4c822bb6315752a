import { version } from './version.js';

const usage = `Usage: drover <command> [options]

Commands:
  serve        run the agent (see drover serve --help)

Options:
  --version    print the version and exit
  --help       print this help and exit`;

/** Entry point of the `drover` command; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write(`drover ${version()}\n`);
    return 0;
  }
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${usage}\n`);
    return cmd === undefined ? 2 : 0;
  }
  try {
    switch (cmd) {
      case 'serve':
        // Loaded on demand: the agent's dependencies would slow every other verb's start-up.
        return await (await import('./serve.js')).serve(rest);
      default:
        process.stderr.write(`drover: unknown command "${cmd}" (see drover --help)\n`);
        return 2;
    }
  } catch (err) {
    process.stderr.write(`drover: ${(err as Error).message ?? err}\n`);
    return 1;
  }
}
