/* promise.c: host.promise(), a one-shot value coroutines can wait for. p:wait(timeout?)
 * suspends the calling task until p:resolve(...) (every waiter gets the values; later
 * waits return them at once) or the timeout (nil, "timeout"). Scripts build batching on it
 * (the chat role's group commit: many requests wait for one INSERT). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#define PROMISE_MT "chathost.promise"

typedef struct waiter {
    list_node link;
    task_t *task;
    uv_timer_t *timer;
    struct promise *p;
} waiter;

typedef struct promise {
    int resolved;
    int values_ref;  /* {n=, ...} once resolved */
    int anchor_ref;  /* keeps the promise alive while tasks wait for it */
    list_node waiters;
    struct app *app;
} promise;

static void timer_closed(uv_handle_t *h) { free(h); }

static void waiter_free(waiter *w) {
    promise *p = w->p;
    list_remove(&w->link);
    if (w->timer) uv_close((uv_handle_t *)w->timer, timer_closed);
    free(w);
    if (list_empty(&p->waiters) && p->anchor_ref != LUA_NOREF) {
        luaL_unref(p->app->L, LUA_REGISTRYINDEX, p->anchor_ref);
        p->anchor_ref = LUA_NOREF;
    }
}

static void waiter_cancel(void *op) { waiter_free(op); }

static void waiter_timeout(uv_timer_t *t) {
    waiter *w = t->data;
    task_t *task = w->task;
    waiter_free(w);
    sched_resume_error(task, "timeout");
}

/* Pushes the resolved values onto co; returns how many. */
static int push_values(lua_State *L, promise *p, lua_State *co) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->values_ref);
    lua_getfield(L, -1, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_checkstack(co, n + 1);
    lua_checkstack(L, n + 1);
    int tbl = lua_gettop(L);
    for (int i = 1; i <= n; i++) lua_rawgeti(L, tbl, i);
    lua_remove(L, tbl);
    if (L != co) lua_xmove(L, co, n);
    return n;
}

/* p:wait(timeout_ms?) -> the resolved values | nil, "timeout" */
static int l_wait(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    if (p->resolved) return push_values(L, p, L);
    task_t *t = sched_need(L, "promise:wait");
    waiter *w = calloc(1, sizeof *w);
    w->task = t;
    w->p = p;
    list_push_back(&p->waiters, &w->link);
    if (timeout >= 0) {
        w->timer = malloc(sizeof *w->timer);
        uv_timer_init(p->app->loop, w->timer);
        w->timer->data = w;
        uv_timer_start(w->timer, waiter_timeout, (uint64_t)timeout, 0);
    }
    if (p->anchor_ref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        p->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    sched_suspend(t, waiter_cancel, w);
    return lua_yield(L, 0);
}

/* p:resolve(...) -> true the first time, false when already resolved */
static int l_resolve(lua_State *L) {
    promise *p = luaL_checkudata(L, 1, PROMISE_MT);
    if (p->resolved) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int n = lua_gettop(L) - 1;
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, i + 1);
        lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    p->values_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->resolved = 1;
    /* wake every waiter; each resumes in turn (a resumed task may wait on others) */
    lua_State *main = p->app->L;
    while (!list_empty(&p->waiters)) {
        waiter *w = LIST_ENTRY(p->waiters.next, waiter, link);
        task_t *t = w->task;
        waiter_free(w);
        sched_resume(t, push_values(main, p, t->co));
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
    luaL_newmetatable(L, PROMISE_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_new, 1);
    return 1;
}
