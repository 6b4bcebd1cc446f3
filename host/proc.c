/* proc.c: host.proc, child processes on the loop (uv_spawn): tests start real servers and
 * role processes with it, send them signals, and read what they printed. Captured output
 * is bounded; a process a test forgets is killed by the harness (it is tracked). */
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

#define PROC_MT "chathost.process"
#define DEFAULT_MAX_OUTPUT (1 << 20)

extern char **environ;

typedef struct outbuf {
    buf_t bytes;
    size_t max, dropped;
} outbuf;

typedef struct proc_ud proc_ud;

typedef struct proc {
    tracked track;
    struct app *app;
    uv_process_t process;
    uv_pipe_t pipes[2];     /* stdout, stderr when captured */
    int pipe_open[2];
    outbuf out[2];
    int open_handles;       /* handles not yet closed: freed at 0 once the ud is gone */
    int exited;
    int64_t exit_status;
    int term_signal;
    task_t *waiter;
    proc_ud *ud;
} proc;

struct proc_ud {
    proc *p;
};

static void proc_maybe_free(proc *p) {
    if (p->open_handles > 0 || p->ud) return;
    buf_free(&p->out[0].bytes);
    buf_free(&p->out[1].bytes);
    free(p);
}

static void proc_handle_closed(uv_handle_t *h) {
    proc *p = h->data;
    p->open_handles--;
    proc_maybe_free(p);
}

static int proc_done(proc *p) { return p->exited && !p->pipe_open[0] && !p->pipe_open[1]; }

static void proc_wake(proc *p) {
    if (!p->waiter || !proc_done(p)) return;
    task_t *w = p->waiter;
    p->waiter = NULL;
    lua_pushinteger(w->co, (lua_Integer)p->exit_status);
    lua_pushinteger(w->co, p->term_signal);
    sched_resume(w, 2);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig) {
    proc *p = h->data;
    p->exited = 1;
    p->exit_status = status;
    p->term_signal = sig;
    track_del(&p->track);
    uv_close((uv_handle_t *)h, proc_handle_closed);
    proc_wake(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    static char scratch[65536];
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void outbuf_add(outbuf *b, const char *data, size_t n) {
    size_t room = b->max > b->bytes.len ? b->max - b->bytes.len : 0;
    size_t take = n < room ? n : room;
    b->dropped += n - take;
    if (take) buf_append(&b->bytes, data, take);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    proc *p = s->data;
    int i = (uv_pipe_t *)s == &p->pipes[0] ? 0 : 1;
    if (n > 0) outbuf_add(&p->out[i], buf->base, (size_t)n);
    if (n < 0) {
        p->pipe_open[i] = 0;
        uv_close((uv_handle_t *)s, proc_handle_closed);
        proc_wake(p);
    }
}

/* ---- spawning ------------------------------------------------------------------------ */

/* Whether the Lua array at idx holds only strings (numbers count: they convert). */
static int is_string_array(lua_State *L, int idx) {
    int n = (int)lua_objlen(L, idx);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int t = lua_type(L, -1);
        lua_pop(L, 1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER) return 0;
    }
    return 1;
}

/* A NULL-terminated copy of the pointers of the Lua array at idx, which is_string_array
 * has accepted. Raises nothing: callers allocate it once every check is done. */
static char **string_array(lua_State *L, int idx) {
    int n = (int)lua_objlen(L, idx);
    char **v = xcalloc((size_t)n + 1, sizeof *v);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        v[i - 1] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays alive in the table */
    }
    return v;
}

/* The parent's environment with opts.env (name -> value; false removes a variable) on top. The
 * strings live on the Lua stack in a table at the returned index until the spawn. Raises
 * only before it allocates (opts.env not a table). */
static char **build_env(lua_State *L, int opts) {
    lua_getfield(L, opts, "env");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    luaL_checktype(L, -1, LUA_TTABLE);
    int envt = lua_gettop(L);
    lua_newtable(L); /* keeps the formatted strings alive */
    int keep = lua_gettop(L), n = 0;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_rawget(L, envt);
        int overridden = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (overridden) continue;
        lua_pushstring(L, *e);
        lua_rawseti(L, keep, ++n);
    }
    lua_pushnil(L);
    while (lua_next(L, envt)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_toboolean(L, -1)) {
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            lua_rawseti(L, keep, ++n);
        }
        lua_pop(L, 1);
    }
    char **env = string_array(L, keep);
    return env;
}

static int stdio_mode(lua_State *L, int opts, const char *field) {
    lua_getfield(L, opts, field);
    const char *m = luaL_optstring(L, -1, "inherit");
    lua_pop(L, 1);
    if (strcmp(m, "inherit") == 0) return 0;
    if (strcmp(m, "capture") == 0) return 1;
    if (strcmp(m, "null") == 0) return 2;
    return luaL_error(L, "host.proc: opts.%s must be inherit, capture or null", field);
}

static void proc_track_close(tracked *t) {
    proc *p = LIST_ENTRY(t, proc, track);
    uv_process_kill(&p->process, SIGKILL);
}

/* spawn(argv, opts?) -> process | nil, err */
static int l_spawn(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_argcheck(L, lua_objlen(L, 1) > 0 && is_string_array(L, 1), 1,
                  "expected a non-empty array of strings");
    int modes[2] = {stdio_mode(L, 2, "stdout"), stdio_mode(L, 2, "stderr")};
    lua_getfield(L, 2, "max_output");
    size_t max_output = (size_t)luaL_optinteger(L, -1, DEFAULT_MAX_OUTPUT);
    lua_getfield(L, 2, "cwd");
    const char *cwd = luaL_optstring(L, -1, NULL);
    char **env = build_env(L, 2); /* check, then allocate (liolib's order): nothing raises after */
    char **argv = string_array(L, 1);

    proc *p = xcalloc(1, sizeof *p);
    p->app = app;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    for (int i = 0; i < 2; i++) {
        p->out[i].max = max_output;
        if (modes[i] == 1) {
            uv_pipe_init(app->loop, &p->pipes[i], 0);
            p->pipes[i].data = p;
            p->open_handles++;
            p->pipe_open[i] = 1;
            stdio[i + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
            stdio[i + 1].data.stream = (uv_stream_t *)&p->pipes[i];
        } else if (modes[i] == 0) {
            stdio[i + 1].flags = UV_INHERIT_FD;
            stdio[i + 1].data.fd = i + 1;
        } else {
            stdio[i + 1].flags = UV_IGNORE;
        }
    }
    uv_process_options_t o = {0};
    o.exit_cb = on_exit_cb;
    o.file = argv[0];
    o.args = argv;
    o.env = env;
    o.cwd = cwd;
    o.stdio_count = 3;
    o.stdio = stdio;
    p->process.data = p;
    int rc = uv_spawn(app->loop, &p->process, &o);
    free(argv);
    free(env);
    p->open_handles++; /* the process handle: closed after exit, or now on failure */
    if (rc != 0) {
        uv_close((uv_handle_t *)&p->process, proc_handle_closed);
        for (int i = 0; i < 2; i++)
            if (p->pipe_open[i]) {
                p->pipe_open[i] = 0;
                uv_close((uv_handle_t *)&p->pipes[i], proc_handle_closed);
            }
        lua_rawgeti(L, 1, 1);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot start %s: %s", lua_tostring(L, -2), uv_strerror(rc));
        return 2;
    }
    for (int i = 0; i < 2; i++)
        if (p->pipe_open[i]) uv_read_start((uv_stream_t *)&p->pipes[i], on_alloc, on_read);
    track_add(app, &p->track, "process", proc_track_close);
    proc_ud *u = lua_newuserdata(L, sizeof *u);
    u->p = p;
    p->ud = u;
    luaL_getmetatable(L, PROC_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- methods ------------------------------------------------------------------------- */

static proc *check_proc(lua_State *L) {
    proc_ud *u = luaL_checkudata(L, 1, PROC_MT);
    return u->p;
}

static void wait_cancel(void *op) { ((proc *)op)->waiter = NULL; }

/* p:wait(timeout_ms?) -> exit_status, term_signal | nil, "timeout" */
static int l_wait(lua_State *L) {
    proc *p = check_proc(L);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    if (proc_done(p)) {
        lua_pushinteger(L, (lua_Integer)p->exit_status);
        lua_pushinteger(L, p->term_signal);
        return 2;
    }
    task_t *t = sched_need(L, "process:wait");
    if (p->waiter) return luaL_error(L, "process:wait: another coroutine is already waiting");
    p->waiter = t;
    sched_suspend_timeout(t, wait_cancel, p, timeout);
    return lua_yield(L, 0);
}

static const char *const signal_names[] = {"TERM", "KILL", "INT", "HUP", "STOP", "CONT",
                                           "QUIT", "USR1", "USR2", NULL};
static const int signal_numbers[] = {SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGSTOP, SIGCONT,
                                     SIGQUIT, SIGUSR1, SIGUSR2};

static int check_signal(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TNUMBER) return (int)lua_tointeger(L, idx);
    return signal_numbers[luaL_checkoption(L, idx, "TERM", signal_names)];
}

/* p:kill(sig?) -> true | nil, err (sig: "TERM" (default), "KILL", "STOP", ... or a number) */
static int l_kill(lua_State *L) {
    proc *p = check_proc(L);
    int sig = check_signal(L, 2);
    if (p->exited) {
        lua_pushnil(L);
        lua_pushliteral(L, "process has exited");
        return 2;
    }
    int rc = uv_process_kill(&p->process, sig);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* p:output() -> stdout, stderr captured so far (each at most opts.max_output bytes) */
static int l_output(lua_State *L) {
    proc *p = check_proc(L);
    lua_pushlstring(L, p->out[0].bytes.data ? p->out[0].bytes.data : "", p->out[0].bytes.len);
    lua_pushlstring(L, p->out[1].bytes.data ? p->out[1].bytes.data : "", p->out[1].bytes.len);
    return 2;
}

static int l_index(lua_State *L) {
    proc *p = check_proc(L);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "pid") == 0) {
        lua_pushinteger(L, p->process.pid);
        return 1;
    }
    if (strcmp(k, "exited") == 0) {
        lua_pushboolean(L, p->exited);
        return 1;
    }
    return vm_method(L);
}

static int l_gc(lua_State *L) {
    proc_ud *u = luaL_checkudata(L, 1, PROC_MT);
    proc *p = u->p;
    if (!p) return 0;
    p->ud = NULL;
    u->p = NULL;
    proc_maybe_free(p);
    return 0;
}

/* host.proc.signal(pid, sig) -> true | nil, err: a signal to any process (a daemon whose
 * pid a test read from its pid file, for example) */
static int l_signal(lua_State *L) {
    int pid = (int)luaL_checkinteger(L, 1);
    int sig = check_signal(L, 2);
    if (kill(pid, sig) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_pid(lua_State *L) {
    lua_pushinteger(L, getpid());
    return 1;
}

int proc_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"wait", l_wait}, {"kill", l_kill}, {"output", l_output}, {NULL, NULL}};
    vm_class(L, PROC_MT, methods, l_index, l_gc);
    static const luaL_Reg fns[] = {
        {"spawn", l_spawn}, {"signal", l_signal}, {"pid", l_pid}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
