/* file.h: what other C modules use of host.file (file.c): an open file handed over by a
 * script, for the HTTP server to stream (http_server.c) with libuv's own uv_fs_read. */
#ifndef CHATHOST_FILE_H
#define CHATHOST_FILE_H

#include <lua.h>

typedef struct file_t file_t;

/* The open host.file handle at idx, held: its descriptor stays open (a close() by the
 * script waits) until file_finish. NULL when the value is not an open host.file handle. */
file_t *file_take(lua_State *L, int idx);
/* The descriptor of a held file. */
int file_fd(const file_t *f);
/* Its path, for messages. */
const char *file_path(const file_t *f);
/* Lets go of a file taken with file_take and closes it (off the loop): whoever took it
 * owned it from then on. The script's handle reads as closed. */
void file_finish(file_t *f);

#endif
