/* alloc.h: the host's one allocation policy (Redis zmalloc, hiredis alloc.h): every heap
 * block comes from these, and running out of memory aborts with a line naming the size.
 * No caller could go on without the bytes, and an unchecked NULL would crash later, far
 * from the cause. Blocks are ordinary malloc blocks: free() releases them. */
#ifndef CHATHOST_ALLOC_H
#define CHATHOST_ALLOC_H

#include <stddef.h>

/* malloc(size); aborts instead of returning NULL (size 0 gives a freeable block). */
void *xmalloc(size_t size);
/* calloc(n, size): zeroed; aborts on out of memory or when n * size overflows. */
void *xcalloc(size_t n, size_t size);
/* realloc(p, size); aborts instead of returning NULL, p untouched then (the process ends). */
void *xrealloc(void *p, size_t size);
/* strdup(s); aborts on out of memory. */
char *xstrdup(const char *s);
/* strndup(s, n): at most n bytes of s, NUL-terminated; aborts on out of memory. */
char *xstrndup(const char *s, size_t n);

#endif
