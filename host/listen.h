/* listen.h: sockets for the servers, and descriptor hygiene. */
#ifndef CHATHOST_LISTEN_H
#define CHATHOST_LISTEN_H

#include <uv.h>

/* Binds "ip:port" (IPv4, or [IPv6]:port; port 0 = any) with SO_REUSEADDR, and SO_REUSEPORT
 * when reuseport is set. Returns the fd (the bound port in *port) or -errno. */
int listen_socket(const char *address, int reuseport, int *port);

/* Gives the bound socket fd to h (initialised by the caller) and starts listening; fd is
 * closed when the handle cannot take it. 0 or a libuv error (h must be closed then). */
int listen_start(uv_tcp_t *h, int fd, int backlog, uv_connection_cb cb);

/* The peer address of t as "ip" or "ip:port" into buf ("" when unknown). */
void tcp_peer_str(uv_tcp_t *t, char *buf, size_t size, int with_port);

/* Marks fd close-on-exec (sockets the client libraries open without it), so child
 * processes (host.proc) do not inherit them. 0 or -errno. */
int set_cloexec(int fd);
/* Marks every descriptor above 2 that this process inherited close-on-exec. */
void cloexec_inherited(void);

#endif
