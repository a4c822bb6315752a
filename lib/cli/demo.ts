import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { settingNames } from '../agent/config.js';
import { Client, DEFAULT_URL, oneLine } from './client.js';
import { deployApp } from './deploy.js';
import { colorsEnabled, painter } from './format.js';
import { launch, untilSignal } from './serve.js';

export const demoUsage = `Usage: drover demo [serve options]

What \`npm start\` runs: starts the agent (like drover serve, same options) and deploys the
example web app (examples/web) to it as app "demo", then prints what to try next.
Ctrl-C stops the agent and the app. Settings: ${settingNames.join(', ')}`;

/** examples/web, from lib/cli (sources under the test loader) or dist/lib/cli (compiled). */
function exampleDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const dir = path.resolve(here, up, 'examples', 'web');
    if (existsSync(path.join(dir, 'Procfile'))) return dir;
  }
  throw new Error('cannot find examples/web next to the drover sources');
}

async function answering(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      await (await fetch(url, { signal: AbortSignal.timeout(2000) })).arrayBuffer();
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return false;
}

export async function demo(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${demoUsage}\n`);
    return 0;
  }
  const started = await launch(argv, (message) =>
    /already in use/.test(message) ? ' (another agent running? or pick a port: npm start -- --port 9000)' : '',
  );
  if (typeof started === 'number') return started;
  const { agent, config } = started;
  const done = untilSignal(agent); // Ctrl-C works from here on, also during the deploy

  const out = process.stdout;
  const paint = painter(colorsEnabled(out));
  const example = exampleDir();
  // Shown relative when it is below the current directory (npm start runs in the checkout).
  const source = example.startsWith(`${process.cwd()}${path.sep}`) ? path.relative(process.cwd(), example) : example;
  out.write(`\nDeploying ${source} as app "demo"...\n`);
  try {
    const result = await deployApp(new Client(agent.url, config.token), {
      app: 'demo',
      source,
      scale: { web: 1 },
      env: { GREETING: 'hello from the drover demo' },
      wait: true,
      timeoutMs: 120_000,
      out,
    });
    const web = result.processes.find((p) => p.node === 'web.0');
    // `running` means started: give the app a moment to listen, so the printed URL works at once.
    if (web?.port) await answering(`http://127.0.0.1:${web.port}/`, 15_000);
    const bin = path.relative(process.cwd(), process.argv[1] ?? 'bin/drover.js') || 'bin/drover.js';
    const cli = `node ${bin.includes('/') ? bin : `./${bin}`}`;
    const tries: [string, string][] = [
      ...(web?.port ? [[`curl http://127.0.0.1:${web.port}/`, 'the app (listening on its PORT)'] as [string, string]] : []),
      [`${cli} ps`, 'every process: state, pid, restarts, uptime'],
      [`${cli} logs -f demo.web.0`, 'follow its output (curl the app to see a line)'],
      [`${cli} status demo.web.0`, 'one process in detail'],
      [`${cli} deploy examples/worker --app ticker`, 'deploy another app'],
      [`${cli} --help`, 'every command'],
    ];
    const width = Math.max(...tries.map(([c]) => c.length));
    const lines = [
      '',
      paint('bold', `drover is running at ${agent.url} with the example app deployed. Try, in another terminal:`),
      '',
      ...(agent.url !== DEFAULT_URL ? [`  export DROVER_URL=${agent.url}`] : []),
      ...tries.map(([c, what]) => `  ${c.padEnd(width)}   ${paint('dim', `# ${what}`)}`),
      '',
      'Ctrl-C here stops the agent and everything it runs.',
      '',
    ];
    out.write(lines.join('\n'));
    if (!result.ok) process.stderr.write('drover: the demo app did not start; the agent keeps running (see drover status demo.web.0)\n');
  } catch (err) {
    process.stderr.write(`drover: deploying the demo app failed: ${oneLine((err as Error).message)}; the agent keeps running\n`);
  }
  return done;
}
