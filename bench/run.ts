// `npm run bench`: drover against its targets (and PM2 / supervisord with --peers).
// Every figure is measured here and now; see BENCHMARKS.md for the method.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchApp } from './lib/apps.js';
import { onCleanup, runCleanup } from './lib/cleanup.js';
import type { BenchContext } from './lib/context.js';
import { closeConnections } from './lib/http.js';
import { describeMachine, gitDescribe, loadAverage } from './lib/machine.js';
import { meetsTarget, type Row } from './lib/row.js';
import { formatTable } from './lib/table.js';
import { pm2Fleet } from './peers/pm2.js';
import { supervisordFleet } from './peers/supervisord.js';
import { fleetScenario } from './scenarios/fleet.js';
import { droverDirectFleet } from './scenarios/fleet-drover.js';
import { linesScenario } from './scenarios/lines.js';
import { pollScenario } from './scenarios/poll.js';
import { releaseScenario } from './scenarios/release.js';
import { restartScenario } from './scenarios/restart.js';
import { floorScenario } from './scenarios/floor.js';
import { scalingScenario } from './scenarios/scaling.js';
import { stalledScenario } from './scenarios/stalled.js';
import { statusScenario } from './scenarios/status.js';

const root = join(import.meta.dirname, '..', '..');

const scenarios: Record<string, (ctx: BenchContext) => Promise<Row[]>> = {
  fleet: (ctx) => fleetScenario(ctx, [droverDirectFleet(ctx), ...(ctx.peers ? [supervisordFleet(ctx), pm2Fleet(ctx)] : [])]),
  lines: linesScenario,
  stalled: stalledScenario,
  restart: restartScenario,
  status: statusScenario,
  release: releaseScenario,
  poll: pollScenario,
  scaling: scalingScenario,
  floor: floorScenario,
};

const usage = `Usage: npm run bench -- [options]

  --peers                     also measure PM2 (npm-installed into a temp dir) and supervisord (if installed)
  --runs N                    runs per scenario; each figure is their median (default 3)
  --only LIST                 only these scenarios, comma-separated: ${Object.keys(scenarios).join(', ')}
  --agent-setting NAME=VALUE  pass --NAME VALUE to every agent (repeatable), e.g. cgroups=false
  --long-idle                 after the fleet's idle window, watch drover's RSS 90 s longer (first run)`;

/** A bad command line: one line on stderr, exit 2. */
class UsageError extends Error {}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        peers: { type: 'boolean', default: false },
        runs: { type: 'string', default: '3' },
        only: { type: 'string' },
        'long-idle': { type: 'boolean', default: false },
        'agent-setting': { type: 'string', multiple: true, default: [] },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`--runs must be a positive integer, got ${values.runs}`);
  const only = values.only ? values.only.split(',') : Object.keys(scenarios);
  const unknown = only.filter((s) => !scenarios[s]);
  if (unknown.length) throw new UsageError(`unknown scenario ${unknown.join(', ')}; known: ${Object.keys(scenarios).join(', ')}`);

  const agentSettings: Record<string, string> = {};
  for (const kv of values['agent-setting']!) {
    const m = /^([a-z][a-z0-9-]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--agent-setting must be NAME=VALUE (a drover serve flag without --), got ${kv}`);
    agentSettings[m[1]] = m[2];
  }
  const workDir = mkdtempSync(join(tmpdir(), 'drover-bench-'));
  onCleanup(() => rmSync(workDir, { recursive: true, force: true }));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const ctx: BenchContext = {
    workDir,
    app: await writeBenchApp(workDir),
    runs,
    peers: values.peers!,
    longIdle: values['long-idle']!,
    agentSettings,
    log,
  };
  const machine = describeMachine();
  const started = new Date();
  const loadBefore = loadAverage();
  log(`drover bench: ${machine.cpus} x ${machine.cpu}, ${machine.memory_gib} GiB, ${machine.node}, load ${loadBefore.join(' ')}`);

  const rows: Row[] = [];
  const failures: Record<string, string> = {};
  try {
    for (const name of only) {
      log(`\n== ${name}`);
      const t0 = performance.now();
      try {
        rows.push(...(await scenarios[name](ctx)));
      } catch (err) {
        // One broken scenario must not cost the figures of the others: report it, go on, exit 1.
        failures[name] = (err as Error).message;
        log(`  FAILED: ${(err as Error).stack ?? err}`);
      }
      log(`   (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
  } finally {
    closeConnections();
    runCleanup();
  }

  const table = formatTable(rows);
  const failed = Object.entries(failures).map(([name, message]) => `FAILED ${name}: ${message.split('\n')[0]}`);
  process.stdout.write(`\n${table}\n${failed.length ? `\n${failed.join('\n')}\n` : ''}`);
  const results = {
    date: started.toISOString(),
    duration_s: Math.round((Date.now() - started.getTime()) / 100) / 10,
    commit: gitDescribe(root),
    machine,
    load_average: { before: loadBefore, after: loadAverage() },
    runs,
    peers: ctx.peers,
    agent_settings: agentSettings,
    rows: rows.map((r) => ({ ...r, met: meetsTarget(r) })),
    failures,
  };
  writeFileSync(join(root, 'bench', 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwrote bench/results.json (${results.duration_s} s)`);
  return failed.length ? 1 : 0;
}

// Ctrl-C: stop the agents and peers this bench started before going.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    runCleanup();
    process.exit(130);
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    runCleanup();
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n${usage}\n`);
      process.exit(2);
    }
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
