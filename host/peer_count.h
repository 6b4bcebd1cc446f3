/* peer_count.h: open connections per client address, for the servers' per-address caps
 * (one client must not hold every slot of a server). Keys are address strings as
 * tcp_peer_str writes them (canonical, no port). */
#ifndef CHATHOST_PEER_COUNT_H
#define CHATHOST_PEER_COUNT_H

typedef struct peer_count peer_count;

/* A new, empty table. Out of memory aborts. */
peer_count *peer_count_new(void);
/* Counts one more connection from ip; returns the count including it. */
int peer_count_add(peer_count *t, const char *ip);
/* Counts one connection from ip less (one that peer_count_add counted); at zero the
 * address is forgotten, so the table holds only addresses with open connections. */
void peer_count_del(peer_count *t, const char *ip);
/* Frees the table (NULL is fine). */
void peer_count_free(peer_count *t);

#endif
