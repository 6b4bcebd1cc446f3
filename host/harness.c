/* harness.c: the C half of `chathost test`. The runner itself is Lua (host/lua/harness.lua);
 * this file gives it what Lua cannot do: run a test function as its own task with a
 * timeout that cancels it, and find (and close) the host resources it left behind. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

typedef struct isolated_run {
    struct app *app;
    task_t *runner;     /* the harness task waiting for the result */
    task_t *test;       /* NULL once ended */
    uv_timer_t *timer;
    int timed_out;
    int ok;
    int result_ref;     /* error message when !ok */
} isolated_run;

static void run_timer_closed(uv_handle_t *h) { free(h); }

static void run_finish(isolated_run *run) {
    lua_State *L = run->app->L;
    if (run->timer) {
        uv_close((uv_handle_t *)run->timer, run_timer_closed);
        run->timer = NULL;
    }
    task_t *r = run->runner; /* NULL when the runner was cancelled: nobody to tell */
    if (r) {
        lua_checkstack(r->co, 2);
        lua_pushboolean(r->co, run->ok);
        lua_rawgeti(L, LUA_REGISTRYINDEX, run->result_ref);
        lua_xmove(L, r->co, 1);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, run->result_ref);
    free(run);
    if (r) sched_resume(r, 2);
}

static int run_done(void *ud, task_t *t, int ok, int nres) {
    isolated_run *run = ud;
    lua_State *L = run->app->L;
    run->test = NULL;
    if (run->timed_out) return 1;
    run->ok = ok;
    if (ok) {
        lua_pushnil(L);
    } else {
        lua_pushvalue(t->co, -1);
        lua_xmove(t->co, L, 1);
    }
    run->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!run->runner || !run->runner->running) run_finish(run); /* running: l_run answers */
    return 1; /* the harness reports test errors itself */
}

static void run_timeout(uv_timer_t *timer) {
    isolated_run *run = timer->data;
    lua_State *L = run->app->L;
    run->timed_out = 1;
    run->ok = 0;
    lua_pushfstring(L, "timeout: the test did not finish within %d ms",
                    (int)uv_timer_get_repeat(timer));
    run->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (run->test) sched_cancel(run->test);
    run_finish(run);
}

static void run_cancel(void *op) {
    isolated_run *run = op;
    run->runner = NULL; /* the runner itself was cancelled: let the test finish alone */
}

/* run(fn, timeout_ms) -> ok, err: runs fn as its own task; a timeout cancels it. */
static int l_run(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_Integer timeout = luaL_checkinteger(L, 2);
    task_t *self = sched_need(L, "harness.run");
    isolated_run *run = xcalloc(1, sizeof *run);
    run->app = app;
    run->runner = self;
    run->result_ref = LUA_NOREF;
    lua_pushvalue(L, 1);
    run->test = sched_spawn(app, L, 0, "test", run_done, run);
    if (!run->test) { /* ended in its first slice */
        lua_pushboolean(L, run->ok);
        lua_rawgeti(L, LUA_REGISTRYINDEX, run->result_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, run->result_ref);
        free(run);
        return 2;
    }
    run->timer = xmalloc(sizeof *run->timer);
    uv_timer_init(app->loop, run->timer);
    run->timer->data = run;
    uv_timer_start(run->timer, run_timeout, (uint64_t)timeout, (uint64_t)timeout);
    sched_suspend(self, run_cancel, run);
    return lua_yield(L, 0);
}

/* mark() -> serial: everything tracked after this serial counts as a leftover. */
static int l_mark(lua_State *L) {
    lua_pushnumber(L, (lua_Number)app_from(L)->track_serial);
    return 1;
}

/* leftovers(mark, close) -> {kind = count, ...}: resources created after mark that are
 * still alive; closes them when close is true. */
static int l_leftovers(lua_State *L) {
    struct app *app = app_from(L);
    uint64_t mark = (uint64_t)luaL_checknumber(L, 1);
    int close = lua_toboolean(L, 2);
    lua_newtable(L);
    int found;
    do {
        found = 0;
        for (list_node *n = app->tracked_list.next; n != &app->tracked_list; n = n->next) {
            tracked *t = LIST_ENTRY(n, tracked, link);
            if (t->serial <= mark) continue;
            lua_getfield(L, -1, t->kind);
            lua_pushinteger(L, lua_tointeger(L, -1) + 1);
            lua_setfield(L, -3, t->kind);
            lua_pop(L, 1);
            if (close) {
                list_remove(&t->link); /* unlinked first: close may free t */
                t->close(t);
                found = 1;
                break;
            }
        }
    } while (found);
    return 1;
}

int harness_core_open(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"run", l_run}, {"mark", l_mark}, {"leftovers", l_leftovers}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}
