/* app.h: the process context. One per process: the libuv loop, the Lua state, the role,
 * and the lazily created clients (Redis pool, MySQL pool, ...). Lua-facing functions get it
 * as their first upvalue (app_from(L)); C code passes it explicitly. */
#ifndef CHATHOST_APP_H
#define CHATHOST_APP_H

#include <limits.h>
#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"

struct redis_pool;
struct db_pool;
struct crypto_pool;
struct reloader;
struct grpc_bridge;

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

    struct redis_pool *redis;
    struct db_pool *db;         /* the default MySQL pool, built on first use */
    list_node db_pools;         /* every MySQL pool alive (db.c) */
    struct crypto_pool *crypto;
    struct grpc_bridge *grpc;
    uv_signal_t sig_int, sig_term, sig_hup;
};

/* The app is the first upvalue of every host C function. */
#define app_from(L) ((struct app *)lua_touserdata((L), lua_upvalueindex(1)))

void track_add(struct app *app, tracked *t, const char *kind, void (*close)(tracked *));
void track_del(tracked *t);

/* Config lookups by dotted path ("redis.pool_size") in the validated config table. The
 * config module has filled every default, so a missing value means a programming error:
 * these return def then. */
long long cfg_int(struct app *app, const char *path, long long def);
double cfg_num(struct app *app, const char *path, double def);
/* Returns a copy the caller frees, or NULL when absent and def is NULL. */
char *cfg_str(struct app *app, const char *path, const char *def);

/* Registers the host's Lua modules (require "host") and embedded chathost.* modules. */
int vm_open(struct app *app);
void vm_close(struct app *app);
/* Loads and runs an embedded module "chathost.x", leaving its return value on the stack.
 * Returns 0, or -1 with an error message on the stack. */
int vm_require_embedded(lua_State *L, const char *name);
/* Pushes the value of tostring(v) for the value at idx (never fails). */
const char *vm_tostring(lua_State *L, int idx, size_t *len);

/* Starts the shutdown of every host client; the loop then ends once handles close. */
void app_stop(struct app *app, int exit_code);

#endif
