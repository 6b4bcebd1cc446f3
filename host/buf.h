/* buf.h: the host's growable byte buffer (buf_t: result sets, send queues, metrics text)
 * and the growth rule every byte buffer follows, buf_t or not (responses, frames, RESP
 * commands, JSON, process output, input buffers). */
#ifndef CHATHOST_BUF_H
#define CHATHOST_BUF_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* Returns data with room for need bytes: the same pointer when *cap already suffices, else
 * reallocated to a power-of-two multiple of 256 (*cap updated). Out of memory aborts: no
 * caller could go on without the bytes. */
static inline void *buf_grow(void *data, size_t *cap, size_t need) {
    if (need <= *cap) return data;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *p = xrealloc(data, c);
    *cap = c;
    return p;
}

/* A growable byte buffer; {0} is an empty one. */
typedef struct buf_t {
    char *data;
    size_t len, cap;
} buf_t;

/* Appends n bytes of p to b (growing it; out of memory aborts). */
static inline void buf_append(buf_t *b, const void *p, size_t n) {
    b->data = buf_grow(b->data, &b->cap, b->len + n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Frees b's bytes and leaves it empty. */
static inline void buf_free(buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#endif
