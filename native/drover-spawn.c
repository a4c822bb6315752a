/*
 * drover-spawn: the resident spawn helper. The agent starts it once and asks it, over fd 3
 * (a Unix stream socket only the agent holds the other end of), to start children:
 *
 *   drover-spawn STREAM_SOCKET
 *
 * Requests: a 4-byte little-endian length, then NUL-terminated fields:
 *
 *   spawn ID CWD UID GID GROUPS RLIMITS CGROUPS ARGC ARGV... ENVC ENV...
 *
 * UID/GID empty: unchanged; GROUPS: comma-separated gids, "-" to clear, empty: unchanged;
 * RLIMITS: "RESOURCE:SOFT:HARD" (numbers, "inf" for no limit) separated by commas; CGROUPS:
 * cgroup.procs files separated by newlines, joined before the exec (their directories are
 * made first when they do not exist yet). argv[0] is looked up on
 * the child's own PATH.
 *
 * For each request it forks a keeper (a copy of this tiny image, no exec): the keeper is a
 * child subreaper, forks the command in its own process group and waits for it with wait4,
 * as native/drover-wait.c does, so the exit status keeps its core-dump flag and the usage
 * covers every descendant it reaped, double-forked daemons included; once the command has
 * ended it kills whatever the run left behind. Forking from this image instead of the agent's
 * makes a start cost the same whatever the agent's heap.
 *
 * The command's stdout and stderr are two connections to STREAM_SOCKET (a Unix socket the
 * agent listens on), each starting with the line "ID 1" or "ID 2": output goes straight from
 * the child to the agent, never through this process, and a reader that stops reading blocks
 * the writer. stdin is /dev/null. Replies on fd 3, one line each, written by the keepers:
 *
 *   pid ID PID                       the command's pid (and process group)
 *   cgroup-failed ID FILE            a cgroup it could not join
 *   failed ID ERRNO STAGE            it could not start (STAGE: fork, chdir, user, rlimit)
 *   exit ID STATUS UTIME_US STIME_US MAXRSS_KB
 *
 * An exec failure is an exit with status 127 and a line on the command's stderr, as a shell
 * reports it. The helper leaves with the agent: on EOF on fd 3, or SIGTERM (its parent-death
 * signal), it has every keeper kill its run's group and leftovers, then kills whatever else
 * it adopted (it is a subreaper too), and exits. A keeper whose helper is gone does the same.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sweep.h"

#define CONTROL 3
#define MAX_REQUEST (64 * 1024 * 1024)

static const char *stream_path;
static sigset_t all_signals;

/* One line to the agent in one write, so keepers writing at once never interleave. */
static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
  char buf[4200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n >= (int)sizeof buf) n = sizeof buf - 1;
  ssize_t off = 0;
  while (off < n) {
    ssize_t w = write(CONTROL, buf + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    off += w;
  }
}

static long long usec(struct timeval tv) { return (long long)tv.tv_sec * 1000000 + tv.tv_usec; }

struct request {
  char *id, *cwd, *uid, *gid, *groups, *rlimits, *cgroups;
  char **argv;
  char **envp;
};

/* Splits the payload into its fields; 0 if it is malformed. */
static int parse(char *p, size_t len, struct request *r) {
  char *end = p + len;
  char *fields[8];
  for (int i = 0; i < 8; i++) {
    char *z = memchr(p, '\0', end - p);
    if (!z) return 0;
    fields[i] = p;
    p = z + 1;
  }
  if (strcmp(fields[0], "spawn") != 0) return 0;
  r->id = fields[1];
  r->cwd = fields[2];
  r->uid = fields[3];
  r->gid = fields[4];
  r->groups = fields[5];
  r->rlimits = fields[6];
  r->cgroups = fields[7];
  for (int list = 0; list < 2; list++) {
    char *z = memchr(p, '\0', end - p);
    if (!z) return 0;
    long n = strtol(p, NULL, 10);
    p = z + 1;
    if (n < 0 || n > (long)len) return 0;
    char **v = calloc(n + 1, sizeof *v);
    if (!v) return 0;
    for (long i = 0; i < n; i++) {
      z = memchr(p, '\0', end - p);
      if (!z) return 0;
      v[i] = p;
      p = z + 1;
    }
    if (list == 0) {
      if (n == 0) return 0;
      r->argv = v;
    } else {
      r->envp = v;
    }
  }
  return 1;
}

/* One of the command's output streams: a connection to the agent, announced by "ID N". */
static void connect_stream(const char *id, int target) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, stream_path, sizeof addr.sun_path - 1);
  int ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && dprintf(fd, "%s %d\n", id, target) > 0;
  if (!ok) {
    /* The agent is gone or refused: the output has nowhere to go. */
    if (fd >= 0) close(fd);
    fd = open("/dev/null", O_WRONLY);
  }
  if (fd >= 0 && fd != target) {
    dup2(fd, target);
    close(fd);
  }
}

static int set_rlimits(char *spec) {
  for (char *item = strtok(spec, ","); item; item = strtok(NULL, ",")) {
    char soft[32], hard[32];
    int res;
    if (sscanf(item, "%d:%31[^:]:%31s", &res, soft, hard) != 3) return -1;
    struct rlimit rl;
    rl.rlim_cur = strcmp(soft, "inf") == 0 ? RLIM_INFINITY : strtoull(soft, NULL, 10);
    rl.rlim_max = strcmp(hard, "inf") == 0 ? RLIM_INFINITY : strtoull(hard, NULL, 10);
    if (setrlimit(res, &rl) != 0) return -1;
  }
  return 0;
}

/* In the command, before its exec. A failure is reported on `err` (errno, stage) and ends it. */
static void become_command(struct request *r, int err, sigset_t *old) {
  const char *stage = "user";
  int e = 0;
  setpgid(0, 0);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  sigprocmask(SIG_SETMASK, old, NULL);
  int null = open("/dev/null", O_RDONLY);
  if (null >= 0 && null != 0) {
    dup2(null, 0);
    close(null);
  }
  connect_stream(r->id, 1);
  connect_stream(r->id, 2);
  /* Joined as the agent's user (a --user child may not), before anything of the command runs. */
  if (*r->cgroups) {
    for (char *f = strtok(r->cgroups, "\n"); f; f = strtok(NULL, "\n")) {
      /* The agent may leave making the group to us (off its event loop): FILE's directory. */
      char *slash = strrchr(f, '/');
      if (slash && slash != f) {
        *slash = '\0';
        if (mkdir(f, 0755) != 0 && errno != EEXIST) {
          /* reported by the open below failing */
        }
        *slash = '/';
      }
      int fd = open(f, O_WRONLY | O_CLOEXEC);
      int ok = fd >= 0 && dprintf(fd, "%d\n", (int)getpid()) > 0;
      if (fd >= 0 && close(fd) != 0) ok = 0;
      if (!ok) reply("cgroup-failed %s %s\n", r->id, f);
    }
  }
  if (*r->rlimits && set_rlimits(r->rlimits) != 0) {
    e = errno ? errno : EINVAL;
    stage = "rlimit";
    goto fail;
  }
  if (*r->groups) {
    gid_t list[256];
    int n = 0;
    if (strcmp(r->groups, "-") != 0)
      for (char *g = strtok(r->groups, ","); g && n < 256; g = strtok(NULL, ",")) list[n++] = (gid_t)strtoul(g, NULL, 10);
    if (setgroups(n, list) != 0) goto fail_errno;
  }
  if (*r->gid && setgid((gid_t)strtoul(r->gid, NULL, 10)) != 0) goto fail_errno;
  if (*r->uid && setuid((uid_t)strtoul(r->uid, NULL, 10)) != 0) goto fail_errno;
  stage = "chdir";
  if (chdir(r->cwd) != 0) goto fail_errno;
  close(CONTROL);
  execvpe(r->argv[0], r->argv, r->envp);
  e = errno;
  /* As a shell says it: the run exits 127 with the reason on its stderr. */
  dprintf(2, "drover: cannot run %s: %s\n", r->argv[0], strerror(e));
  _exit(127);
fail_errno:
  e = errno;
fail: {
  char msg[64];
  int n = snprintf(msg, sizeof msg, "%d %s", e, stage);
  if (write(err, msg, n) < 0) {
  }
  _exit(127);
}
}

/* Field 22 of /proc/PID/stat (clock ticks after boot), or 0 if it cannot be read. */
static unsigned long long start_time(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
  if (!p) return 0;
  /* After ") ": state is field 3; the start time is field 22, 19 spaces further on. */
  for (int field = 2; field < 22 && p; field++) p = strchr(p + 1, ' ');
  return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* The keeper of one run: starts the command, waits for it and its leftovers, reports. */
static void keeper(struct request *r, int sfd) {
  if (sfd >= 0) close(sfd);
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
  /* If the helper is killed outright, the run goes with it instead of living on unsupervised. */
  (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
  char name[16];
  snprintf(name, sizeof name, "drover-run %s", r->id);
  (void)prctl(PR_SET_NAME, name);
  sigset_t old = all_signals;
  sigemptyset(&old);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    reply("failed %s %d fork\n", r->id, errno);
    _exit(0);
  }
  pid_t child = fork();
  if (child < 0) {
    reply("failed %s %d fork\n", r->id, errno);
    _exit(0);
  }
  if (child == 0) {
    close(pipefd[0]);
    become_command(r, pipefd[1], &old);
  }
  close(pipefd[1]);
  setpgid(child, child); /* as the child does: whichever runs first, the group exists at once */
  char msg[64];
  ssize_t n;
  do n = read(pipefd[0], msg, sizeof msg - 1);
  while (n < 0 && errno == EINTR);
  close(pipefd[0]);
  if (n > 0) {
    msg[n] = '\0';
    waitpid(child, NULL, 0);
    reply("failed %s %s\n", r->id, msg);
    _exit(0);
  }
  /* After the exec (the pipe closed on it), as spawn() returns: a pid that never ran is never shown.
   * With it: this keeper's pid (the agent's /proc passes skip it) and the child's start time
   * (which tells it apart from a later process with its pid; read here, off the agent's loop). */
  reply("pid %s %d %d %llu\n", r->id, (int)child, (int)getpid(), start_time(child));

  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGCHLD);
  sigaddset(&wanted, SIGTERM);
  int status = 0;
  int done = 0;
  while (!done) {
    siginfo_t si;
    int sig = sigwaitinfo(&wanted, &si);
    if (sig == SIGTERM) {
      /* The helper is going (or gone): so does the run, daemons included. */
      kill(-child, SIGKILL);
      sweep_children();
      _exit(0);
    }
    for (;;) {
      int st;
      pid_t w = waitpid(-1, &st, WNOHANG);
      if (w <= 0) {
        if (w < 0 && errno == ECHILD && !done) {
          /* Cannot happen while the command lives; report what we have. */
          status = 127 << 8;
          done = 1;
        }
        break;
      }
      if (w == child) {
        status = st;
        done = 1;
      }
    }
  }
  /* Whatever the run left goes with it, as a group kill does for the group. */
  kill(-child, SIGKILL);
  sweep_children();
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  getrusage(RUSAGE_CHILDREN, &ru);
  reply("exit %s %d %lld %lld %ld\n", r->id, status, usec(ru.ru_utime), usec(ru.ru_stime), ru.ru_maxrss);
  _exit(0);
}

static void handle(char *payload, size_t len, int sfd) {
  struct request r;
  memset(&r, 0, sizeof r);
  if (!parse(payload, len, &r)) {
    fprintf(stderr, "drover-spawn: malformed request\n");
    free(r.argv);
    free(r.envp);
    return;
  }
  pid_t k = fork();
  if (k == 0) keeper(&r, sfd);
  if (k < 0) reply("failed %s %d fork\n", r.id, errno);
  free(r.argv);
  free(r.envp);
}

/* The agent is gone: every run goes, then whatever we adopted. */
static void shutdown_all(void) {
  kill(0, SIGTERM); /* our group: the keepers (each kills its run), and us, blocked */
  struct timespec ts = {0, 20 * 1000 * 1000};
  for (int i = 0; i < 100; i++) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD) break;
    nanosleep(&ts, NULL);
  }
  sweep_children();
  /* The socket and its private directory: nothing of ours is left in /tmp. */
  unlink(stream_path);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", stream_path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    rmdir(dir);
  }
  exit(0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: drover-spawn STREAM_SOCKET (requests on fd 3)\n");
    return 2;
  }
  stream_path = argv[1];
  pid_t parent = getppid();
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
  (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
  /* A group of our own, so shutdown_all reaches the keepers and nothing of the agent's. */
  setpgid(0, 0);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  sigfillset(&all_signals);
  sigprocmask(SIG_BLOCK, &all_signals, NULL);
  if (getppid() != parent) shutdown_all();
  fcntl(CONTROL, F_SETFD, FD_CLOEXEC);

  sigset_t mine;
  sigemptyset(&mine);
  sigaddset(&mine, SIGCHLD);
  sigaddset(&mine, SIGTERM);
  sigaddset(&mine, SIGINT);
  sigaddset(&mine, SIGHUP);
  int sfd = signalfd(-1, &mine, SFD_CLOEXEC | SFD_NONBLOCK);

  size_t cap = 64 * 1024, have = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd fds[2] = {{CONTROL, POLLIN, 0}, {sfd, POLLIN, 0}};
    if (poll(fds, sfd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      shutdown_all();
    }
    if (sfd >= 0 && (fds[1].revents & POLLIN)) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        /* SIGTERM: the agent's death signal, or a shutdown asked for; SIGINT and SIGHUP are ignored. */
        if (si.ssi_signo == SIGTERM) shutdown_all();
      }
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (cap - have < 4096) {
        if (cap >= MAX_REQUEST + 8) shutdown_all();
        cap *= 2;
        buf = realloc(buf, cap);
        if (!buf) shutdown_all();
      }
      ssize_t n = read(CONTROL, buf + have, cap - have);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) shutdown_all();
      have += n;
      for (;;) {
        if (have < 4) break;
        uint32_t len = (uint8_t)buf[0] | (uint8_t)buf[1] << 8 | (uint8_t)buf[2] << 16 | (uint32_t)(uint8_t)buf[3] << 24;
        if (len > MAX_REQUEST) shutdown_all();
        if (have < 4 + (size_t)len) {
          if (cap < 4 + (size_t)len + 4096) {
            while (cap < 4 + (size_t)len + 4096) cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) shutdown_all();
          }
          break;
        }
        handle(buf + 4, len, sfd);
        memmove(buf, buf + 4 + len, have - 4 - len);
        have -= 4 + len;
      }
    }
  }
}
