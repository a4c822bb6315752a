// Hands an unpacked release to the user its build and processes run as (--user).
import { lchown, readdir } from 'node:fs/promises';
import path from 'node:path';

/**
 * lchown every entry under `dir`, and `dir` itself, to uid:gid without following symlinks.
 * Post-order: a directory changes hands only after everything below it has, so the new owner
 * can never swap a directory for a symlink while the walk is still inside it.
 */
export async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(p, uid, gid);
    else await lchown(p, uid, gid);
  }
  await lchown(dir, uid, gid);
}
