/* listen.c: a bound listening-ready socket for the HTTP and chat servers (libuv 1.44
 * cannot set SO_REUSEPORT itself, so the socket is made here and given to uv_tcp_open). */
#include "listen.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* Binds host:port (IPv4, or [IPv6]:port); SO_REUSEPORT when asked (several gate
 * processes on one port). Returns the fd or -errno. */
int listen_socket(const char *address, int reuseport, int *port) {
    char host[64];
    const char *colon = strrchr(address, ':');
    if (!colon || (size_t)(colon - address) >= sizeof host) return -EINVAL;
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || p > 65535) return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len;
    int family;
    if (host[0] == '[') {
        host[strlen(host) - 1] = '\0';
        if (uv_ip6_addr(host + 1, (int)p, (struct sockaddr_in6 *)&ss) != 0) return -EINVAL;
        family = AF_INET6, len = sizeof(struct sockaddr_in6);
    } else {
        if (uv_ip4_addr(host, (int)p, (struct sockaddr_in *)&ss) != 0) return -EINVAL;
        family = AF_INET, len = sizeof(struct sockaddr_in);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

int listen_start(uv_tcp_t *h, int fd, int backlog, uv_connection_cb cb) {
    int rc = uv_tcp_open(h, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return uv_listen((uv_stream_t *)h, backlog, cb);
}

void tcp_peer_str(uv_tcp_t *t, char *buf, size_t size, int with_port) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    buf[0] = '\0';
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) != 0) return;
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    if (with_port)
        snprintf(buf, size, "%s:%d", ip, port);
    else
        snprintf(buf, size, "%s", ip);
}

int set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -errno;
    return fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0 ? -errno : 0;
}

void cloexec_inherited(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self) set_cloexec(fd);
    }
    closedir(d);
}
