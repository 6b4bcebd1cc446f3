/* peer_count.c: a chained hash table from address string to open connections (see
 * peer_count.h). Entries exist only while their count is above zero, so its size follows
 * the connections the server holds, which max_connections already bounds. */
#include "peer_count.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define PEER_BUCKETS 1024

typedef struct peer_entry {
    struct peer_entry *next;
    int count;
    char ip[64];
} peer_entry;

struct peer_count {
    peer_entry *buckets[PEER_BUCKETS];
};

static peer_entry **bucket_of(peer_count *t, const char *ip) {
    unsigned h = 2166136261u;
    for (const char *p = ip; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return &t->buckets[h % PEER_BUCKETS];
}

peer_count *peer_count_new(void) { return xcalloc(1, sizeof(peer_count)); }

int peer_count_add(peer_count *t, const char *ip) {
    peer_entry **b = bucket_of(t, ip);
    for (peer_entry *e = *b; e; e = e->next)
        if (strcmp(e->ip, ip) == 0) return ++e->count;
    peer_entry *e = xcalloc(1, sizeof *e);
    snprintf(e->ip, sizeof e->ip, "%s", ip);
    e->count = 1;
    e->next = *b;
    *b = e;
    return 1;
}

void peer_count_del(peer_count *t, const char *ip) {
    for (peer_entry **p = bucket_of(t, ip); *p; p = &(*p)->next) {
        peer_entry *e = *p;
        if (strcmp(e->ip, ip) != 0) continue;
        if (--e->count <= 0) {
            *p = e->next;
            free(e);
        }
        return;
    }
}

void peer_count_free(peer_count *t) {
    if (!t) return;
    for (int i = 0; i < PEER_BUCKETS; i++) {
        peer_entry *e = t->buckets[i];
        while (e) {
            peer_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t);
}
