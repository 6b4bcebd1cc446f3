/* alloc.c: checked allocation (alloc.h). The only file in host/ that calls malloc, calloc,
 * realloc and strdup directly. */
#include "alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One line on stderr (the log may itself need memory), then abort for a core dump. */
static void oom(size_t size) {
    fprintf(stderr, "chathost: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p) oom(size);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) oom(SIZE_MAX); /* the product would wrap */
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t size) {
    void *q = realloc(p, size ? size : 1);
    if (!q) oom(size);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
