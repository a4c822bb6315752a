import { version } from './version.js';
import { buildInfo } from '../release/build-info.js';
import { stopSharedSpawnHelper } from '../os/spawn-helper.js';

const usage = `Usage: drover <command> [options]

Agent:
  serve                 run the agent (see drover serve --help)
  demo                  run the agent with the example app deployed (what npm start runs)
  worker --server URL   pull jobs from a Pleiades server and run them (see drover worker --help)

Client (talks to DROVER_URL, default http://127.0.0.1:8080, with DROVER_TOKEN if set):
  ps                    list processes: state, pid, restarts, uptime, CPU, memory
  deploy DIR|URL        pack and upload a directory (or give a URL) and run it as an app
  apply FILE.yaml       converge the agent to a manifest of apps (--dry-run for the plan)
  status SLUG           one process in detail
  logs [APP|SLUG]       output of every process, an app or one (-f to follow, -n N)
  attach SLUG           stream its live output
  rm SLUG...            delete processes (or --app NAME)
  stop|start|restart SLUG, signal SLUG SIG
                        control a process, where the agent offers it

Local:
  start [DIR] [TYPE...] run a Procfile app in the foreground, like foreman

Options:
  --version    print the version and exit
  --help       print this help and exit (drover <command> --help for a command)

Exit codes: 0 ok, 1 failed, 2 bad usage, 3 agent unreachable, 4 credentials refused,
5 the agent does not offer that, 6 no such process.`;

// Each verb is loaded on demand: the agent's dependencies (h3, listhen, xstate) would slow
// every client command's start-up.
const verbs: Record<string, (argv: string[]) => Promise<number>> = {
  serve: async (a) => (await import('./serve.js')).serve(a),
  demo: async (a) => (await import('./demo.js')).demo(a),
  worker: async (a) => (await import('./worker.js')).worker(a),
  ps: async (a) => (await import('./ps.js')).ps(a),
  deploy: async (a) => (await import('./deploy.js')).deploy(a),
  apply: async (a) => (await import('./apply.js')).apply(a),
  status: async (a) => (await import('./status.js')).status(a),
  logs: async (a) => (await import('./logs.js')).logs(a),
  attach: async (a) => (await import('./attach.js')).attach(a),
  rm: async (a) => (await import('./rm.js')).rm(a),
  stop: async (a) => (await import('./control.js')).control('stop', a),
  restart: async (a) => (await import('./control.js')).control('restart', a),
  signal: async (a) => (await import('./control.js')).control('signal', a),
  start: async (a) => (await import('./start.js')).start(a),
};

/** Entry point of the `drover` command; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write(`drover ${version()} (commit ${buildInfo().commit})\n`);
    return 0;
  }
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${usage}\n`);
    return cmd === undefined ? 2 : 0;
  }
  // `drover ps | head` closes the pipe early: that is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const verb = Object.hasOwn(verbs, cmd) ? verbs[cmd] : undefined;
  if (!verb) {
    process.stderr.write(`drover: unknown command "${cmd}" (see drover --help)\n`);
    return 2;
  }
  try {
    return await verb(rest);
  } catch (err) {
    // Expected failures carry their exit code; anything else is still one line, never a stack trace.
    const e = err as Error & { exitCode?: number };
    process.stderr.write(`drover: ${String(e?.message ?? err).split('\n')[0]}\n`);
    return typeof e?.exitCode === 'number' ? e.exitCode : 1;
  } finally {
    // The process is about to exit: its spawn helper (if any) goes first, with whatever it still holds.
    await stopSharedSpawnHelper();
  }
}
