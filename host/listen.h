/* listen.h: sockets for the servers. */
#ifndef CHATHOST_LISTEN_H
#define CHATHOST_LISTEN_H

/* Binds "ip:port" (IPv4, or [IPv6]:port; port 0 = any) with SO_REUSEADDR, and SO_REUSEPORT
 * when reuseport is set. Returns the fd (the bound port in *port) or -errno. */
int listen_socket(const char *address, int reuseport, int *port);

#endif
