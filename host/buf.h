/* buf.h: the growth rule of every byte buffer in the host (responses, frames, result sets,
 * RESP commands, JSON, process output). Each keeps its own data/len/cap fields. */
#ifndef CHATHOST_BUF_H
#define CHATHOST_BUF_H

#include <stddef.h>

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

#endif
