import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaults } from '../../lib/agent/config.js';
import { liveGroupMembers } from '../../lib/os/proc.js';
import { startAgent, StartError } from '../../lib/http/server.js';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, attach, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

const isRoot = process.getuid?.() === 0;
const id = (flag: string) => spawnSync('id', [flag, 'nobody'], { encoding: 'utf8' }).stdout.trim();

/** The Uid/Gid/Groups lines of /proc/PID/status: real, effective, saved and filesystem ids. */
function ids(pid: number) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) =>
    status
      .match(new RegExp(`^${name}:\\s*(.*)$`, 'm'))![1]
      .trim()
      .split(/\s+/)
      .filter(Boolean);
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups') };
}

t.test('--user runs children and build steps as that user', { skip: isRoot ? false : 'needs root' }, async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-user-')); // mode 0700: nobody cannot get in
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const config = { ...defaults, host: '127.0.0.1', port: 0, stateDir, stopGraceMs: 3000, user: 'nobody' };

  const refused = await startAgent(config, () => {}).then(
    () => null,
    (e: Error) => e,
  );
  t.type(refused, StartError);
  t.match(refused!.message, /^--user nobody cannot reach .*\/releases: every directory above it needs search \(x\) permission/);
  const unknown = await startAgent({ ...config, user: 'no-such-user-here' }, () => {}).then(
    () => null,
    (e: Error) => e,
  );
  t.type(unknown, StartError);
  t.equal(unknown!.message, '--user no-such-user-here: no such user');
  const malformed = await startAgent({ ...config, user: '-rf' }, () => {}).then(
    () => null,
    (e: Error) => e,
  );
  t.match(malformed!.message, /is not a valid user name/);

  chmodSync(stateDir, 0o711); // search, not read: enough to reach the release directories
  const logs: string[] = [];
  const agent = await startAgent(config, (l) => logs.push(l));
  t.teardown(() => agent.close());
  t.notOk(
    logs.some((l) => /running as root without --user/.test(l)),
    'no root warning with --user',
  );

  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const app = writeApp(join(dir, 'app'), {
    // The build writes into the app directory: it must own it.
    'bin/build': '#!/bin/sh\nset -e\nid -u > built-by\necho "build uid $(id -u)"\n',
    Procfile:
      'web: echo "home=$HOME user=$USER logname=$LOGNAME"; touch "$STATE_DIR/pwned" 2>/dev/null && echo WROTE || echo DENIED; exec sleep 600\n',
  });
  const url = archives.serve('app.tgz', await pack(app, join(dir, 'app.tgz')));
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'u',
    node: 'web.0',
    process_type: 'web',
    source_url: url,
    env: { STATE_DIR: stateDir },
  });
  t.equal(created.status, 201);
  const stream = await attach(created.json.attach);
  const doc = await waitForState(created.json.status, 'running');

  const uid = id('-u');
  const gid = id('-g');
  t.equal(uid, '65534');
  t.same(ids(doc.pid).uid, [uid, uid, uid, uid], 'real, effective, saved and fs uid');
  t.same(ids(doc.pid).gid, [gid, gid, gid, gid]);
  t.same(ids(doc.pid).groups, id('-G').split(' '), "the user's groups, none of root's");
  await waitFor(() => stream.lines.includes('DENIED'), 'the child tried to write to the state directory');
  const home = spawnSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).stdout.split(':')[5];
  t.ok(stream.lines.includes(`home=${home} user=nobody logname=nobody`), "HOME, USER and LOGNAME are the user's");

  const releases = join(stateDir, 'releases');
  const release = join(
    releases,
    readdirSync(releases).find((n) => !n.endsWith('.json'))!,
  );
  t.equal(readFileSync(join(release, 'built-by'), 'utf8').trim(), uid, 'the build step ran as the user');
  t.equal(statSync(release).uid, 65534, 'the release belongs to the user');
  t.equal(statSync(join(release, 'Procfile')).uid, 65534);
  t.equal(statSync(releases).uid, 0, 'the directories above it do not');

  const deleted = await api('POST', created.json.delete, {});
  t.equal(deleted.status, 200);
  t.same(liveGroupMembers(doc.pgid), [], 'the whole group is gone');
});
