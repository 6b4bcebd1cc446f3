/* promise.c: host.promise(), a one-shot value coroutines can wait for. p:wait(timeout?)
 * suspends the calling task until p:resolve(...) (every waiter gets the values; later
 * waits return them at once) or the timeout (nil, "timeout"). Scripts build batching on it
 * (the chat role's group commit: many requests wait for one INSERT). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "modules.h"
#include "sched.h"

#define PROMISE_MT "chathost.promise"

typedef struct waiter {
    list_node link;
    task_t *task;
    struct promise *p;
} waiter;

typedef struct promise {
    int resolved;
    int values_ref;  /* {n=, ...} once resolved */
    int anchor_ref;  /* keeps the promise alive while tasks wait for it */
    list_node waiters;
    struct app *app;
} promise;

static void waiter_free(waiter *w) {
    promise *p = w->p;
    list_remove(&w->link);
    free(w);
    if (list_empty(&p->waiters) && p->anchor_ref != LUA_NOREF) {
        luaL_unref(p->app->L, LUA_REGISTRYINDEX, p->anchor_ref);
        p->anchor_ref = LUA_NOREF;
    }
}

static void waiter_cancel(void *op) { waiter_free(op); }

/* p:wait(timeout_ms?) -> the resolved values | nil, "timeout" */
static int l_wait(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    if (p->resolved) return sched_push_packed(L, p->values_ref, L);
    task_t *t = sched_need(L, "promise:wait");
    waiter *w = xcalloc(1, sizeof *w);
    w->task = t;
    w->p = p;
    list_push_back(&p->waiters, &w->link);
    if (p->anchor_ref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        p->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    sched_suspend_timeout(t, waiter_cancel, w, timeout);
    return lua_yield(L, 0);
}

/* p:resolve(...) -> true the first time, false when already resolved */
static int l_resolve(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    if (p->resolved) {
        lua_pushboolean(L, 0);
        return 1;
    }
    p->values_ref = sched_pack(L, lua_gettop(L) - 1);
    p->resolved = 1;
    /* wake every waiter; each resumes in turn (a resumed task may wait on others) */
    lua_State *main = p->app->L;
    while (!list_empty(&p->waiters)) {
        waiter *w = LIST_ENTRY(p->waiters.next, waiter, link);
        task_t *t = w->task;
        waiter_free(w);
        sched_resume(t, sched_push_packed(main, p->values_ref, t->co));
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_resolved(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    lua_pushboolean(L, p->resolved);
    return 1;
}

static int l_gc(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    if (p->resolved) luaL_unref(L, LUA_REGISTRYINDEX, p->values_ref);
    return 0;
}

static int l_new(lua_State *L) {
    promise *p = lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    p->app = app_from(L);
    p->anchor_ref = LUA_NOREF;
    list_init(&p->waiters);
    luaL_getmetatable(L, PROMISE_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* Leaves host.promise on the stack (the app on top when called). */
int promise_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"wait", l_wait}, {"resolve", l_resolve}, {"resolved", l_resolved}, {NULL, NULL}};
    vm_class(L, PROMISE_MT, methods, NULL, l_gc);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_new, 1);
    return 1;
}
