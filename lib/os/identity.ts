// The user children and build steps run as (`--user NAME` when the agent runs as root).
// Node's spawn() can set uid and gid but clears supplementary groups, so the switch is done
// by util-linux's setpriv, which execs the command: the pid, process group and fds stay ours.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export interface RunAs {
  name: string;
  uid: number;
  gid: number;
  /** Supplementary groups, as `id -G` lists them. */
  groups: number[];
  home: string;
  setpriv: string;
}

export class IdentityError extends Error {}

/** Looks NAME up through NSS (getent), so LDAP and friends work as they do for login. */
export function resolveUser(name: string): RunAs {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(name)) throw new IdentityError(`--user ${JSON.stringify(name)} is not a valid user name`);
  const pw = run('getent', ['passwd', name]);
  if (pw === null) throw new IdentityError(`--user ${name}: no such user`);
  const fields = pw.split('\n')[0].split(':');
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (fields.length < 7 || !Number.isInteger(uid) || !Number.isInteger(gid))
    throw new IdentityError(`--user ${name}: unreadable passwd entry`);
  const ids = run('id', ['-G', '--', fields[0]]);
  const groups = (ids ?? String(gid)).trim().split(/\s+/).map(Number).filter(Number.isInteger);
  const setpriv = findExecutable('setpriv');
  if (!setpriv) throw new IdentityError('--user needs setpriv (util-linux) on the PATH');
  return { name: fields[0], uid, gid, groups, home: fields[5] || '/', setpriv };
}

/** The command line that runs `file args` as `runAs` (unchanged when there is none). */
export function asUser(runAs: RunAs | undefined, file: string, args: string[]): [string, string[]] {
  if (!runAs) return [file, args];
  const groups = runAs.groups.length > 0 ? [`--groups=${runAs.groups.join(',')}`] : ['--clear-groups'];
  return [runAs.setpriv, [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, ...groups, '--', file, ...args]];
}

/** What login would set: programs find their config and caches under the user's home, not root's. */
export function userEnv(runAs: RunAs): Record<string, string> {
  return { HOME: runAs.home, USER: runAs.name, LOGNAME: runAs.name };
}

/** True if `runAs` can reach (search) `dir`, every parent included. */
export function canReach(runAs: RunAs, dir: string): boolean {
  const [file, args] = asUser(runAs, '/bin/sh', ['-c', 'cd -- "$1"', 'probe', dir]);
  return spawnSync(file, args, { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

function run(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? r.stdout : null;
}

function findExecutable(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/bin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return path.join(dir, name);
    } catch {
      // not here
    }
  }
  return null;
}
