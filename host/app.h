/* app.h: the process context. One per process: the libuv loop, the Lua state, the role,
 * and the lazily created clients (Redis pool, MySQL pool, ...). Lua-facing functions get it
 * as their first upvalue (app_from(L)); C code passes it explicitly. */
#ifndef CHATHOST_APP_H
#define CHATHOST_APP_H

#include <limits.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"

struct redis_pool;
struct db_pool;
struct crypto_pool;
struct reloader;
struct grpc_bridge;
struct sched;
struct chat_server;
struct mail_pool;
struct http_client;
struct files;

/* A host resource that a test could leave behind: a coroutine, a repeating timer, a socket,
 * a child process. The harness compares what is alive before and after each test. */
typedef struct tracked {
    list_node link;
    uint64_t serial;
    const char *kind;
    void (*close)(struct tracked *self); /* releases the resource; may free self */
} tracked;

struct app {
    uv_loop_t *loop;
    lua_State *L;
    const char *role; /* "gate", "chat", ..., "test", "migrate" */
    const char *name; /* instance name: --name, or the role */
    char root[PATH_MAX];        /* directory holding the config file: scripts/, sql/ live here */
    char config_path[PATH_MAX];
    int config_ref;   /* registry ref of the validated config table */
    int draining;     /* host.on_stop hooks run (bounded by shutdown.grace_ms) */
    int stopping;     /* set once the final shutdown has begun: no new work is started */
    int stop_hooks_ref;
    int stop_pending;
    uv_timer_t stop_timer;
    int exit_code;

    list_node tracked_list;
    uint64_t track_serial;
    int tasks_alive;
    uint64_t tasks_started;

    struct sched *sched;        /* the tasks' coroutine slots and running task (sched.c) */
    struct redis_pool *redis;
    struct db_pool *db;         /* the default MySQL pool, built on first use */
    list_node db_pools;         /* every MySQL pool alive (db.c) */
    struct crypto_pool *crypto;
    struct grpc_bridge *grpc;
    struct chat_server *chat;   /* the chat server host.sessions speaks of (chat_server.c) */
    struct mail_pool *mail;     /* host.mail's, made on first use (mail.c) */
    struct files *files;        /* host.file's open-file count, made on first use (file.c) */
    struct http_client *http_client; /* host.http.request's, made on first use (http_client.c) */
    list_node reloaders;        /* every host.scripts loader (scripts.c) */
    unsigned reload_epoch;      /* grows at every generation any loader swaps in: C caches
                                   what it read from a handler table until it changes */
    uv_signal_t sig_int, sig_term, sig_hup;
};

/* The app is the first upvalue of every host C function. */
#define app_from(L) ((struct app *)lua_touserdata((L), lua_upvalueindex(1)))

/* Adds t to the app's tracked resources (track.c): kind names it in the harness's report
 * of leftovers, close releases it at shutdown. track_del takes it out. Neither fails. */
void track_add(struct app *app, tracked *t, const char *kind, void (*close)(tracked *));
void track_del(tracked *t);

/* Config lookups by dotted path ("redis.pool_size") in the validated config table. The
 * config module has filled every default, so a missing value means a programming error:
 * these return def then. */
long long cfg_int(struct app *app, const char *path, long long def);
/* Returns a copy the caller frees, or NULL when absent and def is NULL. */
char *cfg_str(struct app *app, const char *path, const char *def);
/* The strings of the list at path joined with commas (a copy the caller frees), or NULL
 * when it is absent or empty. */
char *cfg_list(struct app *app, const char *path);

/* Registers the host's Lua modules (require "host") and embedded chathost.* modules. */
int vm_open(struct app *app);
void vm_close(struct app *app);
/* Loads and runs an embedded module "chathost.x", leaving its return value on the stack.
 * Returns 0, or -1 with an error message on the stack. */
int vm_require_embedded(lua_State *L, const char *name);
/* Pushes the value of tostring(v) for the value at idx (never fails). */
const char *vm_tostring(lua_State *L, int idx, size_t *len);

/* Registers the metatable `name` of a host object: __gc (when gc is given) and the
 * methods, closures over the value on top of the stack (the app). Without index, __index
 * is the methods table; with it, __index is that function (for fields such as port) and
 * the methods sit in the metatable's "methods" field, where vm_method finds them. */
void vm_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction index,
              lua_CFunction gc);
/* For __index functions: pushes the method named by argument 2 (or nil); returns 1. */
int vm_method(lua_State *L);
/* The integer field k of the options table at idx (absolute), def when absent or when idx
 * is not a table; raises when the field is not an integer. */
lua_Integer vm_opt_int(lua_State *L, int idx, const char *k, lua_Integer def);
/* The option value on top of the stack as an integer in min..max; otherwise raises an
 * argument error on arg: "<name> must be an integer in min..max". */
long long vm_check_int_option(lua_State *L, int arg, const char *name, long long min,
                              long long max);

/* Starts the shutdown of every host client; the loop then ends once handles close. */
void app_stop(struct app *app, int exit_code);

#endif
