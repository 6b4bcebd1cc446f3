/* listen.h: sockets for the servers, and descriptor hygiene. */
#ifndef CHATHOST_LISTEN_H
#define CHATHOST_LISTEN_H

/* Binds "ip:port" (IPv4, or [IPv6]:port; port 0 = any) with SO_REUSEADDR, and SO_REUSEPORT
 * when reuseport is set. Returns the fd (the bound port in *port) or -errno. */
int listen_socket(const char *address, int reuseport, int *port);

/* Marks fd close-on-exec (sockets the client libraries open without it), so child
 * processes (host.proc) do not inherit them. 0 or -errno. */
int set_cloexec(int fd);
/* Marks every descriptor above 2 that this process inherited close-on-exec. */
void cloexec_inherited(void);

#endif
