/*
 * sweep.h: how drover's helpers (drover-wait, and drover-spawn's keepers) kill and reap
 * whatever a run left behind once its command has ended. They are child subreapers, so the
 * command's orphans (daemons that left the process group with setsid() included, which a
 * group kill misses) are their children; a pid that is our child cannot be reused until we
 * reap it, so a kill never hits a stranger.
 */
#ifndef DROVER_SWEEP_H
#define DROVER_SWEEP_H

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* SIGKILLs every live child of ours found by a pass over /proc: a stat read per process on the host; returns how many. */
static int kill_children_scan(void) {
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  pid_t self = getpid();
  int n = 0;
  struct dirent *d;
  while ((d = readdir(proc)) != NULL) {
    char *end;
    long pid = strtol(d->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = '\0';
    char *rp = strrchr(buf, ')');
    char state;
    long ppid;
    if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) continue;
    if (ppid == self && state != 'Z' && kill((pid_t)pid, SIGKILL) == 0) n++;
  }
  closedir(proc);
  return n;
}

/*
 * SIGKILLs our children as /proc/self/task/TID/children lists them (we are single-threaded):
 * one small read instead of a stat per process on the host. -1 when the kernel lacks it.
 */
static int kill_children_listed(void) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  int n = 0;
  long pid;
  while (fscanf(f, "%ld", &pid) == 1)
    if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0) n++;
  fclose(f);
  return n;
}

/*
 * Kills and reaps every child until none is left (bounded, as a process may outrun it).
 * waitpid tells for free whether any child is left at all (ECHILD), so a run that left
 * nothing behind costs no pass over /proc; the children file is racy (documented so), so
 * when it shows none while some live, a full pass decides.
 */
static void sweep_children(void) {
  for (int round = 0; round < 1000; round++) {
    pid_t w;
    while ((w = waitpid(-1, NULL, WNOHANG)) > 0) {
    }
    if (w < 0) return; /* ECHILD: nothing left */
    int killed = kill_children_listed();
    if (killed <= 0) killed = kill_children_scan();
    if (killed == 0) {
      /* Live children we cannot see yet (just adopted): give them a moment. */
      struct timespec ts = {0, 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    for (int i = 0; i < killed && waitpid(-1, NULL, 0) > 0; i++) {
    }
  }
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

#endif
