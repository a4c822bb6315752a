/*
 * drover-notify: sends each line read from stdin as one datagram to $NOTIFY_SOCKET (systemd's
 * sd_notify protocol: "READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=..."), until stdin ends.
 *
 * Node has no Unix datagram sockets, and drover takes no native add-on; this helper is spawned
 * once and lives as long as the agent, so its messages come from one process of the service's
 * cgroup (the unit needs NotifyAccess=all) and never from one that has already exited (a
 * systemd-notify per message can be gone before systemd reads who sent it).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path || (path[0] != '/' && path[0] != '@')) {
        fprintf(stderr, "drover-notify: NOTIFY_SOCKET is not an absolute path or an abstract socket\n");
        return 2;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path) {
        fprintf(stderr, "drover-notify: NOTIFY_SOCKET is too long\n");
        return 2;
    }
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("drover-notify: socket");
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = '\0';
        if (n == 0) continue;
        /* One message per line; its fields' newlines come as "\n" and backslashes as "\\". */
        size_t w = 0;
        for (ssize_t r = 0; r < n; r++) {
            if (line[r] == '\\' && r + 1 < n && (line[r + 1] == 'n' || line[r + 1] == '\\')) {
                line[w++] = line[r + 1] == 'n' ? '\n' : '\\';
                r++;
            } else {
                line[w++] = line[r];
            }
        }
        while (sendto(fd, line, w, MSG_NOSIGNAL, (struct sockaddr *)&addr, addrlen) < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "drover-notify: cannot send to %s: %s\n", path, strerror(errno));
            break;
        }
    }
    free(line);
    close(fd);
    return 0;
}
