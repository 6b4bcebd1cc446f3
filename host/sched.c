/* sched.c: tasks (coroutines from a pool of numbered slots) and host.spawn. The running
 * task is known by a pointer set around each resume. */
#include "sched.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "modules.h"

static char slots_key, trampoline_key;
static char done_mark; /* yielded first by the trampoline when the task's function returned */

/* Tasks run in reusable coroutines: the trampoline calls the task's function and tail-calls
 * park with its results; park yields them behind done_mark and, resumed with the next
 * function and arguments, tail-calls the trampoline. The tail calls drop each frame, so a
 * parked coroutine holds only its last results, not the function and arguments it ran
 * (a closed session or a big request would otherwise stay alive until the slot's next
 * use). Creating a coroutine (and collecting it) per request was a measurable cost. */
static const char TRAMPOLINE[] =
    "local MARK, yield = ...\n"
    "local trampoline\n"
    "local function park(...) return trampoline(yield(MARK, ...)) end\n"
    "trampoline = function(fn, ...) return park(fn(...)) end\n"
    "return trampoline\n";

/* Coroutines live in numbered slots: slots_table[slot] anchors each one for the
 * collector, C keeps the pointers, and the slots whose coroutine is parked in the
 * trampoline form a free stack. Taking and giving back a coroutine is then plain C. Tasks
 * beyond SLOTS_MAX at once get a coroutine of their own, anchored by a registry ref. */
#define SLOTS_MAX 4096
/* Finished task structs are kept for the next tasks (no allocation per request). */
#define SPARE_TASKS 1024

/* The scheduler's state, one per app (app->sched). */
struct sched {
    lua_State *slot_co[SLOTS_MAX + 1];
    int free_slots[SLOTS_MAX];
    int nfree, nslots;
    task_t *spare_tasks[SPARE_TASKS];
    int nspare;
    /* The task whose coroutine runs now (Lua runs one coroutine at a time; a task resumed
     * from inside another restores the outer one when it yields). */
    task_t *running;
};

static void registry_set(lua_State *L, void *key) { /* registry[key] = value on top */
    lua_pushlightuserdata(L, key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

static void registry_get(lua_State *L, void *key) {
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

void sched_init(struct app *app) {
    lua_State *L = app->L;
    app->sched = xcalloc(1, sizeof *app->sched);
    lua_newtable(L);
    registry_set(L, &slots_key);
    luaL_loadbuffer(L, TRAMPOLINE, sizeof TRAMPOLINE - 1, "=trampoline");
    lua_pushlightuserdata(L, &done_mark);
    lua_getglobal(L, "coroutine");
    lua_getfield(L, -1, "yield");
    lua_remove(L, -2);
    lua_call(L, 2, 1);
    registry_set(L, &trampoline_key);
}

void sched_free(struct app *app) {
    if (!app->sched) return;
    while (app->sched->nspare > 0) free(app->sched->spare_tasks[--app->sched->nspare]);
    free(app->sched);
    app->sched = NULL;
}

/* Pushes a new coroutine holding the trampoline onto L and returns it. */
static lua_State *coroutine_new(lua_State *L) {
    lua_State *co = lua_newthread(L);
    registry_get(L, &trampoline_key);
    lua_xmove(L, co, 1);
    return co;
}

/* Puts a fresh coroutine in slot (anchored there) and returns it. */
static lua_State *slot_fill(struct sched *s, lua_State *L, int slot) {
    registry_get(L, &slots_key);
    lua_State *co = coroutine_new(L);
    lua_rawseti(L, -2, slot);
    lua_pop(L, 1);
    s->slot_co[slot] = co;
    return co;
}

/* A coroutine ready to run fn, ...: resuming it with them runs fn. Sets t->slot, or
 * t->co_ref for a coroutine outside the slots. */
static lua_State *coroutine_take(lua_State *L, task_t *t) {
    struct sched *s = t->app->sched;
    if (s->nfree > 0) {
        t->slot = s->free_slots[--s->nfree];
        return s->slot_co[t->slot];
    }
    if (s->nslots < SLOTS_MAX) {
        t->slot = ++s->nslots;
        return slot_fill(s, L, t->slot);
    }
    lua_State *co = coroutine_new(L);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return co;
}

/* Gives t's coroutine back: a parked one to the free slots; a dead or abandoned one is
 * replaced in its slot (the old one goes to the collector). */
static void coroutine_give(lua_State *L, task_t *t) {
    struct sched *s = t->app->sched;
    if (!t->slot) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        return;
    }
    if (t->reusable)
        lua_settop(t->co, 0);
    else
        slot_fill(s, L, t->slot);
    s->free_slots[s->nfree++] = t->slot;
}

task_t *sched_current(struct app *app, lua_State *L) {
    task_t *running = app->sched->running;
    return running && running->co == L ? running : NULL;
}

task_t *sched_need(lua_State *L, const char *fname) {
    struct app *app = app_from(L);
    if (!app) luaL_error(L, "%s: a host function without the app upvalue", fname);
    task_t *t = sched_current(app, L);
    if (!t)
        luaL_error(L, "%s must be called from a host coroutine (a handler, a timer or host.spawn)",
                   fname);
    return t;
}

/* Drops the anchor of t's coroutine; a coroutine whose function returned is pooled, any
 * other (failed, cancelled mid-call) is left to the collector. */
static void task_release(task_t *t) {
    lua_State *L = t->app->L;
    lua_checkstack(L, 3);
    coroutine_give(L, t);
    track_del(&t->track);
    t->app->tasks_alive--;
    struct sched *s = t->app->sched;
    if (s->nspare < SPARE_TASKS)
        s->spare_tasks[s->nspare++] = t;
    else
        free(t);
}

/* Replaces the error value on top of co with "message + traceback of co". */
static void task_traceback(task_t *t) {
    lua_State *co = t->co;
    size_t len;
    const char *msg = vm_tostring(co, -1, &len);
    luaL_traceback(co, co, msg, 0);
    lua_remove(co, -2); /* the tostring copy */
    lua_remove(co, -2); /* the original error value */
}

/* Runs the done callback and releases t. While the callback runs (it may resume other
 * tasks), t is no longer tracked and cannot be cancelled. */
static void task_finish(task_t *t, int ok, int nres) {
    int handled = 0;
    char label[160]; /* the done callback may change what t->label points at (a route) */
    track_del(&t->track);
    t->running = 1;
    if (!ok) {
        task_traceback(t);
        snprintf(label, sizeof label, "%s", t->label);
    }
    if (t->done) handled = t->done(t->done_ud, t, ok, nres);
    if (!ok && !handled) {
        size_t len;
        const char *msg = lua_tolstring(t->co, -1, &len);
        log_msg(LOG_ERROR, "error in %s: %.*s", label, (int)len, msg);
    }
    task_release(t);
}

/* Resumes t's coroutine with nargs values and handles what it does next. Returns t if it
 * is still alive (waiting), NULL if it ended. */
static task_t *task_run(task_t *t, int nargs) {
    struct sched *s = t->app->sched;
    task_t *outer = s->running;
    t->running = 1;
    s->running = t;
    int status = lua_resume(t->co, nargs);
    s->running = outer;
    t->running = 0;
    if (status == LUA_YIELD && t->suspended) return t;
    if (status == LUA_YIELD && lua_gettop(t->co) >= 1 &&
        lua_touserdata(t->co, 1) == &done_mark) { /* the function returned */
        t->reusable = 1;
        task_finish(t, 1, lua_gettop(t->co) - 1);
        return NULL;
    }
    if (status == LUA_YIELD) {
        lua_settop(t->co, 0);
        lua_pushstring(t->co, "coroutine.yield() called outside host I/O in a host coroutine "
                              "(use host.timer.sleep or a coroutine of your own)");
        task_finish(t, 0, 0);
        return NULL;
    }
    if (status == 0) {
        task_finish(t, 1, lua_gettop(t->co));
        return NULL;
    }
    task_finish(t, 0, 0);
    return NULL;
}

static void task_track_close(tracked *tr) {
    sched_cancel(LIST_ENTRY(tr, task_t, track));
}

task_t *sched_spawn(struct app *app, lua_State *L, int nargs, const char *label,
                    task_done_fn done, void *ud) {
    struct sched *s = app->sched;
    task_t *t = s->nspare > 0 ? s->spare_tasks[--s->nspare] : xmalloc(sizeof *t);
    memset(t, 0, sizeof *t);
    t->app = app;
    lua_State *co = coroutine_take(L, t);
    lua_xmove(L, co, nargs + 1); /* the function and its arguments */
    t->co = co;
    t->id = ++app->tasks_started;
    t->done = done;
    t->done_ud = ud;
    t->label = label ? label : "task";
    app->tasks_alive++;
    track_add(app, &t->track, "coroutine", task_track_close);
    return task_run(t, nargs + 1);
}

void sched_suspend(task_t *t, task_cancel_fn cancel, void *op) {
    t->suspended = 1;
    t->cancel = cancel;
    t->cancel_op = op;
}

static void wait_timer_closed(uv_handle_t *h) { free(h); }

static void wait_timer_stop(task_t *t) {
    if (!t->wait_timer) return;
    uv_close((uv_handle_t *)t->wait_timer, wait_timer_closed);
    t->wait_timer = NULL;
}

static void wait_timer_fired(uv_timer_t *timer) {
    task_t *t = timer->data;
    if (t->cancel) t->cancel(t->cancel_op);
    sched_resume_error(t, "timeout");
}

void sched_suspend_timeout(task_t *t, task_cancel_fn cancel, void *op, long long timeout_ms) {
    sched_suspend(t, cancel, op);
    if (timeout_ms < 0) return;
    t->wait_timer = xmalloc(sizeof *t->wait_timer);
    uv_timer_init(t->app->loop, t->wait_timer);
    t->wait_timer->data = t;
    uv_timer_start(t->wait_timer, wait_timer_fired, (uint64_t)timeout_ms, 0);
}

void sched_resume(task_t *t, int nargs) {
    if (!t->suspended || t->running) {
        log_error("internal: resume of a task that is not waiting (%s)", t->label);
        lua_pop(t->co, nargs);
        return;
    }
    wait_timer_stop(t);
    t->suspended = 0;
    t->cancel = NULL;
    t->cancel_op = NULL;
    task_run(t, nargs);
}

void sched_resume_error(task_t *t, const char *err) {
    lua_checkstack(t->co, 2);
    lua_pushnil(t->co);
    lua_pushstring(t->co, err);
    sched_resume(t, 2);
}

void sched_cancel(task_t *t) {
    if (t->running) return;
    wait_timer_stop(t);
    if (t->suspended && t->cancel) t->cancel(t->cancel_op);
    t->suspended = 0;
    t->cancel = NULL;
    if (t->done) {
        lua_checkstack(t->co, 1);
        lua_pushliteral(t->co, "cancelled");
        t->done(t->done_ud, t, 0, 0);
    }
    task_release(t);
}

/* ---- host.spawn ---------------------------------------------------------------------- */

#define SPAWN_MT "chathost.spawn"

typedef struct spawn_handle {
    task_t *task;      /* NULL once ended */
    int self_ref;      /* anchors the handle while the task runs */
    int result_ref;    /* table {ok, ...} once ended */
    task_t *waiter;
} spawn_handle;

int sched_pack(lua_State *L, int n) {
    lua_createtable(L, n, 1);
    lua_insert(L, -n - 1);
    for (int i = n; i >= 1; i--) lua_rawseti(L, -i - 1, i);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n"); /* not lua_objlen when unpacking: values may be nil */
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

int sched_push_packed(lua_State *L, int ref, lua_State *co) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int tbl = lua_gettop(L);
    lua_getfield(L, tbl, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_checkstack(co, n + 1);
    lua_checkstack(L, n + 1);
    for (int i = 1; i <= n; i++) lua_rawgeti(L, tbl, i);
    lua_remove(L, tbl);
    if (L != co) lua_xmove(L, co, n);
    return n;
}

/* Stores the task's results as true, ... or false, err for wait(). */
static int spawn_done(void *ud, task_t *t, int ok, int nres) {
    spawn_handle *h = ud;
    lua_State *L = t->app->L, *co = t->co;
    int n = ok ? nres : 1;
    lua_checkstack(L, n + 2);
    lua_pushboolean(L, ok);
    for (int i = 0; i < n; i++) { /* copies: the error stays on co for the log */
        lua_pushvalue(co, -n + i);
        lua_xmove(co, L, 1);
    }
    h->result_ref = sched_pack(L, n + 1);
    h->task = NULL;
    int had_waiter = h->waiter != NULL;
    if (h->waiter) {
        task_t *w = h->waiter;
        h->waiter = NULL;
        sched_resume(w, sched_push_packed(L, h->result_ref, w->co));
    }
    luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
    h->self_ref = LUA_NOREF;
    return had_waiter; /* a waiter receives the error; otherwise it is logged */
}

static int l_spawn(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    spawn_handle *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    h->result_ref = LUA_NOREF;
    luaL_getmetatable(L, SPAWN_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_insert(L, 1); /* handle below the function and its arguments */
    h->task = (task_t *)1; /* marks "running" during the first slice */
    task_t *t = sched_spawn(app, L, nargs, "spawn", spawn_done, h);
    if (h->task) h->task = t;
    lua_settop(L, 1);
    return 1;
}

static void spawn_wait_cancel(void *op) { ((spawn_handle *)op)->waiter = NULL; }

static int l_spawn_wait(lua_State *L) {
    spawn_handle *h = luaL_checkudata(L, 1, SPAWN_MT);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    if (!h->task) return sched_push_packed(L, h->result_ref, L);
    task_t *t = sched_need(L, "handle:wait");
    if (h->waiter) return luaL_error(L, "handle:wait: another coroutine is already waiting");
    if (h->task == t) return luaL_error(L, "handle:wait: a coroutine cannot wait for itself");
    h->waiter = t;
    sched_suspend_timeout(t, spawn_wait_cancel, h, timeout);
    return lua_yield(L, 0);
}

static int l_spawn_done(lua_State *L) {
    spawn_handle *h = luaL_checkudata(L, 1, SPAWN_MT);
    lua_pushboolean(L, h->task == NULL);
    return 1;
}

static int l_spawn_gc(lua_State *L) {
    spawn_handle *h = luaL_checkudata(L, 1, SPAWN_MT);
    if (h->result_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->result_ref);
    h->result_ref = LUA_NOREF;
    return 0;
}

int sched_open(lua_State *L) {
    /* expects the app upvalue on top; leaves host.spawn's function on the stack */
    static const luaL_Reg methods[] = {{"wait", l_spawn_wait}, {"done", l_spawn_done}, {NULL, NULL}};
    vm_class(L, SPAWN_MT, methods, NULL, l_spawn_gc);
    lua_pushcclosure(L, l_spawn, 1);
    return 1;
}
