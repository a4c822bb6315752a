// Per-run cgroups: the exact CPU time and memory peak of a whole process tree, orphans and
// double-forked daemons included, which neither wait4 nor /proc sampling can promise.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { signalProcess } from './proc.js';

export type CgroupVersion = 'v1' | 'v2';

/** Where one kind of figure comes from: a directory drover created under its own cgroup. */
interface Source {
  version: CgroupVersion;
  base: string;
}

/** What a run cgroup measured; a figure is absent when no usable controller gives it. */
export interface CgroupFigures {
  cpu?: { utime: number; stime: number; version: CgroupVersion };
  /** Bytes: the group's peak memory charge. */
  memory?: { peak: number; version: CgroupVersion };
}

export interface CgroupHost {
  /** /proc/self/cgroup and /proc/self/mountinfo; injectable for tests. */
  selfCgroup?: string;
  mountinfo?: string;
}

let serial = 0;
const BASE_NAME = /^drover-(\d+)-\d+$/;

/** Parses /proc/self/cgroup and mountinfo into the directories of this process's own cgroups. */
export function ownCgroupDirs(host: CgroupHost = {}): { v2: string | null; v1: Map<string, string> } {
  const selfCgroup = host.selfCgroup ?? readFileSync('/proc/self/cgroup', 'utf8');
  const mountinfo = host.mountinfo ?? readFileSync('/proc/self/mountinfo', 'utf8');
  const mounts: { root: string; point: string; type: string; opts: string[] }[] = [];
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const f = left.split(' ');
    const [type, , superOpts] = right.split(' ');
    if (type === 'cgroup' || type === 'cgroup2')
      mounts.push({ root: unescape(f[3]), point: unescape(f[4]), type, opts: (superOpts ?? '').split(',') });
  }
  const under = (m: { root: string; point: string }, path: string): string | null => {
    let dir: string | null = null;
    if (m.root === '/') dir = join(m.point, path);
    else if (path === m.root || path.startsWith(`${m.root}/`)) dir = join(m.point, path.slice(m.root.length));
    return dir && dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
  };
  let v2: string | null = null;
  const v1 = new Map<string, string>();
  for (const line of selfCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, id, controllers, path] = m;
    if (id === '0' && controllers === '') {
      const mount = mounts.find((x) => x.type === 'cgroup2');
      if (mount) v2 = under(mount, path);
      continue;
    }
    for (const c of controllers.split(',')) {
      const mount = mounts.find((x) => x.type === 'cgroup' && x.opts.includes(c));
      const dir = mount && under(mount, path);
      if (dir) v1.set(c, dir);
    }
  }
  return { v2, v1 };
}

// mountinfo escapes spaces and the like as \040.
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The cgroups drover may create for its runs, found once per agent. CPU comes from cgroup v2
 * `cpu.stat` (present in every v2 group) or v1 `cpuacct`; the memory peak from v2
 * `memory.peak` when the memory controller reaches our group, else v1 `memory`. Each source
 * is proved by moving a real process into a test group; whatever fails is simply not used.
 */
/**
 * Run cgroups made ahead, off the event loop. A cgroupfs mkdir takes the kernel's cgroup
 * mutex and costs ~1 ms here (many more when other cgroups are being made or removed): done
 * synchronously per start, it was the largest single cost of a crash loop on the event loop
 * (status p99). A handful made by the thread pool in advance cover a crash loop's steady pace;
 * a burst larger than the pool falls back to mkdirSync.
 */
const SPARES = 16;
const SPARES_IN_FLIGHT = 4;

export class Cgroups {
  private readonly leftovers: string[] = [];
  /** Ids whose directories exist and hold nothing yet. */
  private readonly spares: string[] = [];
  private making = 0;
  private closed = false;
  /** Set when an async mkdir failed: the pool stops, create() makes its own. */
  private sparesFailed = false;

  private constructor(
    readonly cpu: Source | null,
    readonly memory: Source | null,
    private readonly bases: string[],
  ) {}

  /** Null when no cgroup can be created and joined here (no permission, no cgroupfs). */
  static detect(host: CgroupHost = {}): Cgroups | null {
    let own;
    try {
      own = ownCgroupDirs(host);
    } catch {
      return null;
    }
    const name = `drover-${process.pid}-${serial++}`;
    const bases: string[] = [];
    const makeBase = (parent: string): string | null => {
      const base = join(parent, name);
      if (/\s/.test(base)) return null; // the wrapper passes paths through word splitting
      try {
        sweep(parent);
        mkdirSync(base);
        bases.push(base);
        return base;
      } catch {
        return null;
      }
    };

    let cpu: Source | null = null;
    let memory: Source | null = null;
    const v2 = own.v2 && makeBase(own.v2);
    if (v2) {
      // Lend the memory controller to our runs when it reaches our base; never touch the
      // agent's own group (enabling controllers there would break "no internal processes").
      if (existsSync(join(v2, 'memory.peak'))) tryWrite(join(v2, 'cgroup.subtree_control'), '+memory');
      const probe = probeRun(v2, ['cpu.stat']);
      if (probe) {
        if (/^user_usec /m.test(probe.read('cpu.stat'))) cpu = { version: 'v2', base: v2 };
        if (probe.has('memory.peak')) memory = { version: 'v2', base: v2 };
        probe.remove();
      }
    }
    if (!cpu) {
      const dir = own.v1.get('cpuacct');
      const base = dir && makeBase(dir);
      const probe = base && probeRun(base, ['cpuacct.usage', 'cpuacct.stat']);
      if (base && probe) {
        cpu = { version: 'v1', base };
        probe.remove();
      }
    }
    if (!memory) {
      const dir = own.v1.get('memory');
      const base = dir && makeBase(dir);
      const probe = base && probeRun(base, ['memory.max_usage_in_bytes']);
      if (base && probe) {
        memory = { version: 'v1', base };
        probe.remove();
      }
    }
    const used = new Set([cpu?.base, memory?.base]);
    for (const b of bases) if (!used.has(b)) tryRmdir(b);
    if (!cpu && !memory) return null;
    return new Cgroups(
      cpu,
      memory,
      bases.filter((b) => used.has(b)),
    );
  }

  /**
   * CPU used so far by every run cgroup together (the base's own counter: microseconds in v2,
   * nanoseconds in v1), or null if it cannot be read. Only compared with itself: it moves
   * whenever any run's process ran.
   */
  cpuUsage(): number | null {
    if (!this.cpu) return null;
    try {
      if (this.cpu.version === 'v2') {
        const m = /^usage_usec (\d+)$/m.exec(readFileSync(join(this.cpu.base, 'cpu.stat'), 'utf8'));
        return m ? Number(m[1]) : null;
      }
      const n = Number(readFileSync(join(this.cpu.base, 'cpuacct.usage'), 'utf8'));
      return Number.isFinite(n) ? n : null;
    } catch {
      return null;
    }
  }

  /** e.g. "cpu from cgroup v2, memory from cgroup v1". */
  describe(): string {
    const one = (what: string, s: Source | null) => (s ? `${what} from cgroup ${s.version} (${s.base})` : `${what} not from cgroups`);
    return `${one('cpu', this.cpu)}, ${one('memory', this.memory)}`;
  }

  /** The directories of run `id`, one per hierarchy in use. */
  private dirsOf(id: string): string[] {
    // Bases are absolute and normalized: plain concatenation (path.join normalizes character by character on every start).
    const cpu = this.cpu && `${this.cpu.base}/${id}`;
    const memory = this.memory && `${this.memory.base}/${id}`;
    return cpu && memory && cpu !== memory ? [cpu, memory] : cpu ? [cpu] : memory ? [memory] : [];
  }

  /**
   * A fresh cgroup (one directory per hierarchy) for one run; null if it cannot be made now.
   * `lazy`: the directories may be left for the process that joins them to make (the spawn
   * helper does, before it writes the pid), so no mkdir runs here when no spare is left.
   */
  create(opts: { lazy?: boolean } = {}): RunCgroup | null {
    if (this.leftovers.length) this.retryLeftovers();
    let id = this.spares.shift();
    if (id === undefined && opts.lazy) id = `run-${serial++}`;
    else if (id === undefined) {
      id = `run-${serial++}`;
      const dirs: string[] = [];
      try {
        for (const d of this.dirsOf(id)) {
          mkdirSync(d);
          dirs.push(d);
        }
      } catch {
        for (const d of dirs) tryRmdir(d);
        return null;
      }
    }
    // Spares serve starts that need the directories now; lazy ones (the spawn helper) never do,
    // and spare mkdirs would only compete with them for the cgroup mutex and the thread pool.
    if (!opts.lazy) this.refill();
    const dirs = this.dirsOf(id);
    return new RunCgroup(
      this.cpu && { version: this.cpu.version, dir: `${this.cpu.base}/${id}` },
      this.memory && { version: this.memory.version, dir: `${this.memory.base}/${id}` },
      dirs,
      (d) => this.leftovers.push(d),
    );
  }

  /** Makes spare run groups on the thread pool, up to SPARES. */
  private refill(): void {
    while (!this.closed && !this.sparesFailed && this.making < SPARES_IN_FLIGHT && this.spares.length + this.making < SPARES) {
      this.making++;
      const id = `run-${serial++}`;
      const dirs = this.dirsOf(id);
      void (async () => {
        const made: string[] = [];
        try {
          for (const d of dirs) {
            await mkdir(d);
            made.push(d);
          }
        } catch {
          this.sparesFailed = true;
          for (const d of made) await rmdir(d).catch(() => {});
          return;
        } finally {
          this.making--;
        }
        if (this.closed) {
          // close() ran meanwhile and may have found our directory in its way.
          for (const d of [...made, ...this.bases]) await rmdir(d).catch(() => {});
        } else {
          this.spares.push(id);
          this.refill();
        }
      })();
    }
  }

  /** Removes what drover created; groups still holding processes are emptied first. */
  close(): void {
    this.closed = true;
    this.spares.length = 0;
    this.retryLeftovers();
    for (const b of this.bases) {
      for (const run of listDirs(b)) removeGroup(join(b, run));
      tryRmdir(b);
    }
  }

  private retryLeftovers(): void {
    const left = this.leftovers.splice(0);
    for (const d of left) if (!removeGroup(d)) this.leftovers.push(d);
  }
}

/** The cgroup of one run: the wrapper writes its pid into `procsFiles`, then the figures are read at exit. */
export class RunCgroup {
  readonly procsFiles: string[];

  constructor(
    private readonly cpu: { version: CgroupVersion; dir: string } | null,
    private readonly memory: { version: CgroupVersion; dir: string } | null,
    private readonly dirs: string[],
    private readonly leftover: (dir: string) => void,
  ) {
    this.procsFiles = dirs.map((d) => join(d, 'cgroup.procs'));
  }

  /** Moves a running process in (for commands not started through the wrapper). */
  adopt(pid: number): boolean {
    try {
      for (const f of this.procsFiles) writeFileSync(f, String(pid));
      return true;
    } catch {
      return false;
    }
  }

  /** Whether a hard memory limit can be set on this run (a memory controller reaches it). */
  get canLimitMemory(): boolean {
    return this.memory !== null;
  }

  /**
   * A hard limit on the memory charged to the whole tree: v2 `memory.max`, v1
   * `memory.limit_in_bytes`. Past it the kernel reclaims, then OOM-kills inside the group. Set
   * before the wrapper joins, so nothing of the run ever runs unlimited.
   */
  limitMemory(bytes: number): boolean {
    if (!this.memory) return false;
    const file = this.memory.version === 'v2' ? 'memory.max' : 'memory.limit_in_bytes';
    try {
      writeFileSync(join(this.memory.dir, file), String(bytes));
      if (this.memory.version === 'v2') tryWrite(join(this.memory.dir, 'memory.swap.max'), '0');
      else tryWrite(join(this.memory.dir, 'memory.memsw.limit_in_bytes'), String(bytes));
      return true;
    } catch {
      return false;
    }
  }

  /** How many processes of the run the kernel OOM-killed (v2 memory.events, v1 memory.oom_control); null if unknown. */
  oomKills(): number | null {
    if (!this.memory) return null;
    try {
      const file = this.memory.version === 'v2' ? 'memory.events' : 'memory.oom_control';
      const k = keyed(readFileSync(join(this.memory.dir, file), 'utf8'));
      if (k.oom_kill !== undefined) return k.oom_kill;
      // Older v1 kernels have no oom_kill count: hitting the limit at all is the best sign.
      const fail = Number(readFileSync(join(this.memory.dir, 'memory.failcnt'), 'utf8'));
      return fail > 0 ? null : 0;
    } catch {
      return null;
    }
  }

  /** The run's CPU time and memory peak so far; once every member ended, its totals. */
  read(): CgroupFigures {
    const out: CgroupFigures = {};
    try {
      if (this.cpu?.version === 'v2') {
        const stat = keyed(readFileSync(join(this.cpu.dir, 'cpu.stat'), 'utf8'));
        out.cpu = { utime: (stat.user_usec ?? 0) / 1e6, stime: (stat.system_usec ?? 0) / 1e6, version: 'v2' };
      } else if (this.cpu) {
        // cpuacct.usage is exact (ns); its user/system split is in ticks, which a short run may
        // not reach: split the exact total in the ticks' proportion, all user when there are none.
        const total = Number(readFileSync(join(this.cpu.dir, 'cpuacct.usage'), 'utf8')) / 1e9;
        const ticks = keyed(readFileSync(join(this.cpu.dir, 'cpuacct.stat'), 'utf8'));
        const u = ticks.user ?? 0;
        const s = ticks.system ?? 0;
        const userShare = u + s === 0 ? 1 : u / (u + s);
        out.cpu = { utime: total * userShare, stime: total * (1 - userShare), version: 'v1' };
      }
    } catch {
      // a figure we cannot read is left out, never guessed
    }
    try {
      if (this.memory) {
        const file = this.memory.version === 'v2' ? 'memory.peak' : 'memory.max_usage_in_bytes';
        out.memory = { peak: Number(readFileSync(join(this.memory.dir, file), 'utf8')), version: this.memory.version };
      }
    } catch {
      // as above
    }
    return out;
  }

  /**
   * Removes the directories, on the thread pool: a run's group is empty by the time it ends,
   * so the rmdir normally just works. One that is still busy has whatever is left inside
   * killed, and is retried later (at the latest when drover closes its cgroups).
   */
  remove(): void {
    for (const d of this.dirs)
      rmdir(d).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT' && !removeGroup(d)) this.leftover(d);
      });
  }
}

function keyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.split(' ');
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}

/** Creates a test group, moves a real shell into it, and checks the files we will read. */
function probeRun(base: string, files: string[]): { read(f: string): string; has(f: string): boolean; remove(): void } | null {
  const dir = join(base, `probe-${serial++}`);
  try {
    mkdirSync(dir);
  } catch {
    return null;
  }
  const r = spawnSync('/bin/sh', ['-c', 'echo $$ > "$1"', 'drover', join(dir, 'cgroup.procs')], { stdio: 'ignore', timeout: 10_000 });
  const ok = r.status === 0 && files.every((f) => existsSync(join(dir, f)));
  const handle = {
    read: (f: string) => readFileSync(join(dir, f), 'utf8'),
    has: (f: string) => existsSync(join(dir, f)),
    remove: () => void removeGroup(dir),
  };
  if (!ok) {
    handle.remove();
    return null;
  }
  return handle;
}

/** SIGKILLs every process left in a group, then removes it; false if it is still busy. */
function removeGroup(dir: string): boolean {
  for (let i = 0; i < 3; i++) {
    if (tryRmdir(dir) || !existsSync(dir)) return true;
    let pids: number[] = [];
    try {
      pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return !existsSync(dir);
    }
    for (const pid of pids) signalProcess(pid, 'SIGKILL');
  }
  return tryRmdir(dir);
}

/** Removes groups left by agents that died without cleaning up (their pid is gone). */
function sweep(parent: string): void {
  for (const name of listDirs(parent)) {
    const m = BASE_NAME.exec(name);
    if (!m || isAlive(Number(m[1]))) continue;
    const base = join(parent, name);
    for (const run of listDirs(base)) removeGroup(join(base, run));
    tryRmdir(base);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function listDirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

function tryWrite(file: string, text: string): boolean {
  try {
    writeFileSync(file, text);
    return true;
  } catch {
    return false;
  }
}
