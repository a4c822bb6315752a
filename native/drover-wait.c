/*
 * drover-wait: runs a command as its child and reports exactly how it ended.
 *
 *   drover-wait PROG [ARG...]
 *   drover-wait --exec [--close-fd3] [--join FILE]... PROG [ARG...]
 *
 * Node (libuv) reaps children itself and drops both the core-dump flag and the rusage that
 * wait4(2) returns; this helper sits between the agent and the command to keep them. When
 * the command has ended it writes one line to fd 3 (the agent's control socket):
 *
 *   exit STATUS UTIME_US STIME_US MAXRSS_KB MINFLT MAJFLT NSWAP INBLOCK OUBLOCK NVCSW NIVCSW
 *
 * STATUS is the raw wait status (exit code, signal, core-dump flag); the usage is
 * RUSAGE_CHILDREN: the command plus every descendant that was waited for. Right after the
 * fork it writes `pid PID`, the command's own pid (this helper leads the process group, so
 * the agent shows and signals the command's pid, not its own).
 *
 * The usage is As a child
 * subreaper it also reaps orphaned descendants, so a double-forked worker that ended before
 * the command still counts, and once the command has ended it kills the orphans still alive
 * (daemons that left the process group with setsid() included) before it reports. It then exits the way the command did (by the same signal, but
 * without dumping core itself), so a caller that misses the line still sees the right status.
 *
 * It blocks every signal it can: signals sent to the process group are meant for the
 * command, which gets its own copy. Only SIGKILL ends it early (and then the line is lost).
 *
 * With --exec it does not wait: it writes its pid into each FILE (cgroup.procs files, so
 * the command is in its cgroups from its first instruction), then becomes the command. If
 * the exec fails it says `exec-failed ERRNO` on fd 3; with --close-fd3 a successful exec
 * closes fd 3. A FILE it cannot write is reported as `cgroup-failed FILE`. Joining a cgroup
 * takes privileges a --user child lacks: the agent runs this as root, then drops to the user
 * (setpriv) and, for a supervised run, a second drover-wait waits for the command.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sweep.h"

static long long usec(struct timeval tv) { return (long long)tv.tv_sec * 1000000 + tv.tv_usec; }

static int join(const char *file) {
  FILE *f = fopen(file, "w");
  int ok = f && fprintf(f, "%d\n", (int)getpid()) > 0;
  if (f && fclose(f) != 0) ok = 0;
  if (!ok) dprintf(3, "cgroup-failed %s\n", file);
  return ok;
}

static int exec_mode(int argc, char **argv) {
  int i = 0;
  int close_fd3 = 0;
  if (i < argc && strcmp(argv[i], "--close-fd3") == 0) {
    close_fd3 = 1;
    i++;
  }
  while (i + 1 < argc && strcmp(argv[i], "--join") == 0) {
    join(argv[i + 1]);
    i += 2;
  }
  if (i >= argc) {
    fprintf(stderr, "usage: drover-wait --exec [--close-fd3] [--join FILE]... PROG [ARG...]\n");
    return 2;
  }
  if (close_fd3) fcntl(3, F_SETFD, FD_CLOEXEC);
  execvp(argv[i], argv + i);
  int err = errno;
  dprintf(3, "exec-failed %d\n", err);
  fprintf(stderr, "drover-wait: cannot run %s: %s\n", argv[i], strerror(err));
  return 127;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--exec") == 0) return exec_mode(argc - 2, argv + 2);
  if (argc < 2) {
    fprintf(stderr, "usage: drover-wait PROG [ARG...]\n");
    return 2;
  }
  /* Reaping orphans lets their usage count; a kernel without it (< 3.4) just loses them. */
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
  /* An inherited SIG_IGN for SIGCHLD would make the kernel reap for us and wait4 fail. */
  signal(SIGCHLD, SIG_DFL);

  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);

  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "drover-wait: fork: %s\n", strerror(errno));
    return 127;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "drover-wait: cannot run %s: %s\n", argv[1], strerror(errno));
    _exit(127);
  }
  dprintf(3, "pid %d\n", (int)child);

  int status = 0;
  for (;;) {
    int st;
    pid_t w = waitpid(-1, &st, 0);
    if (w == child) {
      status = st;
      break;
    }
    if (w < 0 && errno != EINTR) {
      /* ECHILD cannot happen while the command lives; report what we have. */
      status = 127 << 8;
      break;
    }
  }
  /*
   * The run is over: whatever it left behind goes with it, as a group kill does for the group,
   * and every orphan is reaped so its usage is in RUSAGE_CHILDREN too. A run that left nothing
   * costs no pass over /proc: with a thousand runs stopping at once, a pass each (a stat read
   * of every process on the host) kept two cores busy for seconds.
   */
  sweep_children();

  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  getrusage(RUSAGE_CHILDREN, &ru);
  dprintf(3, "exit %d %lld %lld %ld %ld %ld %ld %ld %ld %ld %ld\n", status, usec(ru.ru_utime), usec(ru.ru_stime), ru.ru_maxrss,
          ru.ru_minflt, ru.ru_majflt, ru.ru_nswap, ru.ru_inblock, ru.ru_oublock, ru.ru_nvcsw, ru.ru_nivcsw);

  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    raise(sig);
    return 128 + sig;
  }
  return 127;
}
