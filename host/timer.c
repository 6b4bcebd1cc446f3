/* timer.c: host.timer.sleep / every and host.now. A sleep is a one-shot uv_timer owned by
 * the waiting task; an `every` timer is a host resource that outlives script reloads and
 * spawns one task per tick (skipping a tick while the previous one still runs). */
#include <lauxlib.h>
#include <stdlib.h>
#include <sys/time.h>

#include "alloc.h"
#include "hostobj.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

typedef struct sleep_op {
    uv_timer_t timer;
    task_t *task;
} sleep_op;

static void sleep_closed(uv_handle_t *h) { free(h->data); }

static void sleep_fired(uv_timer_t *timer) {
    sleep_op *op = timer->data;
    task_t *t = op->task;
    uv_close((uv_handle_t *)&op->timer, sleep_closed);
    lua_pushboolean(t->co, 1);
    sched_resume(t, 1);
}

static void sleep_cancel(void *p) {
    sleep_op *op = p;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, sleep_closed);
}

static int l_sleep(lua_State *L) {
    struct app *app = app_from(L);
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms <= 1e15, 1, "must be 0..1e15 ms");
    task_t *t = sched_need(L, "host.timer.sleep");
    sleep_op *op = xmalloc(sizeof *op);
    op->task = t;
    uv_timer_init(app->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, sleep_fired, (uint64_t)ms, 0);
    sched_suspend(t, sleep_cancel, op);
    return lua_yield(L, 0);
}

/* ---- every --------------------------------------------------------------------------- */

#define EVERY_MT "chathost.timer"

typedef struct every_timer {
    hostobj obj;        /* users: the Lua handle, the uv timer, a running tick */
    struct app *app;
    uv_timer_t timer;
    int fn_ref;
    int busy;           /* the previous tick's task still runs */
    unsigned long skipped;
} every_timer;

static int every_tick_done(void *ud, task_t *t, int ok, int nres) {
    every_timer *et = ud;
    et->busy = 0;
    hostobj_release(&et->obj);
    return 0;
}

static void every_fired(uv_timer_t *timer) {
    every_timer *et = timer->data;
    if (et->busy) {
        if (et->skipped++ % 100 == 0)
            log_warn("timer tick skipped: the previous tick is still running (%lu skipped)",
                     et->skipped);
        return;
    }
    lua_State *L = et->app->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, et->fn_ref);
    et->busy = 1;
    hostobj_hold(&et->obj);
    sched_spawn(et->app, L, 0, "timer", every_tick_done, et);
}

static void every_closed(uv_handle_t *h) {
    every_timer *et = h->data;
    hostobj_release(&et->obj);
}

static void every_free(hostobj *o) { free(HOSTOBJ_OF(o, every_timer, obj)); }

/* A tick that runs finishes; no other starts. */
static void every_stop(hostobj *o) {
    every_timer *et = HOSTOBJ_OF(o, every_timer, obj);
    luaL_unref(et->app->L, LUA_REGISTRYINDEX, et->fn_ref);
    uv_timer_stop(&et->timer);
    uv_close((uv_handle_t *)&et->timer, every_closed);
}

static int l_every(lua_State *L) {
    struct app *app = app_from(L);
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 1 && ms <= 1e15, 1, "must be 1..1e15 ms");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    every_timer *et = xcalloc(1, sizeof *et);
    et->app = app;
    lua_pushvalue(L, 2);
    et->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_init(app->loop, &et->timer);
    et->timer.data = et;
    uv_timer_start(&et->timer, every_fired, (uint64_t)ms, (uint64_t)ms);
    /* Dropping the Lua object does not stop the timer: it runs until stop() or shutdown. */
    hostobj_init(app, &et->obj, "timer", every_stop, every_free);
    hostobj_hold(&et->obj); /* the uv timer, until every_closed */
    hostobj_push(L, &et->obj, EVERY_MT);
    return 1;
}

static int l_now(lua_State *L) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec * 1000.0 + (lua_Number)(tv.tv_usec / 1000));
    return 1;
}

static int l_monotonic(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
    return 1;
}

int timer_open(lua_State *L) {
    /* app upvalue on top of the stack; leaves the host.timer table */
    static const luaL_Reg methods[] = {{"stop", hostobj_l_close}, {NULL, NULL}};
    hostobj_class(L, EVERY_MT, methods, NULL);
    static const luaL_Reg fns[] = {
        {"sleep", l_sleep}, {"every", l_every}, {"now", l_now}, {"monotonic", l_monotonic},
        {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
