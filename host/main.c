/* main.c: argv -> a command (`test`, `migrate`, `config`, `exec`) or else a role, which
 * the table of roles (host/lua/roles.lua, and `roles` in the config) knows or refuses. Sets up the loop, the Lua state and the
 * config, runs the command's Lua entry point (host/lua/<command>.lua) as the first task,
 * and owns the orderly shutdown on SIGINT/SIGTERM. */
#include <curl/curl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "modules.h"
#include "sched.h"
#include "scripts.h"
#include "workers.h"

static const char USAGE[] =
    "usage: chathost ROLE [--name NAME] [-c config.lua]   run a role: gate, verify, status, chat, client\n"
    "                                                     or one the config declares (roles.NAME)\n"
    "       chathost test [-c config.lua] [--filter PATTERN] [--verbose] [--list] [paths...]\n"
    "       chathost migrate [-c config.lua]              apply the missing sql/ migrations\n"
    "       chathost config KEY... | roles [-c config.lua] print config values, or the roles to run\n"
    "       chathost config ports NAME [-c config.lua]    the ports of role process NAME\n"
    "       chathost config SECTION [-c config.lua]       print a section as key = value lines\n"
    "       chathost exec FILE [args...]                  run a Lua file with the host API\n"
    "       chathost help | COMMAND --help                this text (client --help: the client's)\n";

/* Any other first word is a role: chathost.role checks it against the table of roles. */
static const char *const COMMANDS[] = {"test", "migrate", "config", "exec", NULL};

struct options {
    const char *command;
    const char *config;
    const char *name;
    int nargs;        /* the rest, passed to the command's Lua main */
    char **args;
};

static int die(const char *fmt, const char *a) {
    fprintf(stderr, "chathost: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static int parse_options(int argc, char **argv, struct options *o) {
    o->command = argv[1];
    if (o->command[0] == '-') return die("unknown option '%s' (see chathost help)", o->command);
    o->args = xcalloc((size_t)argc, sizeof *o->args);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--name") == 0) {
            if (i + 1 >= argc) return die("%s needs a value", a);
            if (strcmp(a, "--name") == 0)
                o->name = argv[++i];
            else
                o->config = argv[++i];
        } else {
            o->args[o->nargs++] = argv[i];
        }
    }
    if (!o->config) o->config = getenv("CHATHOST_CONFIG");
    if (!o->config) o->config = "config.lua";
    return 0;
}

static int resolve_paths(struct app *app, const char *config) {
    if (!realpath(config, app->config_path)) return die("%s: no such file", config);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", app->config_path);
    snprintf(app->root, sizeof app->root, "%s", dirname(tmp));
    return 0;
}

/* ---- shutdown ------------------------------------------------------------------------ */

static void close_any(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Last resort: a handle still open 5 s after the shutdown began is closed by force. */
static void shutdown_deadline(uv_timer_t *t) {
    log_warn("shutdown: handles still open after 5 s, closing them");
    uv_walk(t->loop, close_any, NULL);
}

static void app_stop_finish(struct app *app);

static void stop_timer_fired(uv_timer_t *t) {
    struct app *app = t->data;
    log_warn("shutdown: stop hooks still running after %llu ms, going on",
             (unsigned long long)cfg_int(app, "shutdown.grace_ms", 3000));
    app_stop_finish(app);
}

static int stop_hook_done(void *ud, task_t *t, int ok, int nres) {
    struct app *app = ud;
    if (--app->stop_pending == 0 && !app->stopping) app_stop_finish(app);
    return 0;
}

/* Phase one: the scripts' stop hooks (host.on_stop) run while everything still works. */
static int run_stop_hooks(struct app *app) {
    lua_State *L = app->L;
    if (app->stop_hooks_ref == LUA_NOREF || app->stop_hooks_ref == 0) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->stop_hooks_ref);
    int n = (int)lua_objlen(L, -1);
    app->stop_pending = n;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        sched_spawn(app, L, 0, "stop hook", stop_hook_done, app);
    }
    lua_pop(L, 1);
    return app->stop_pending > 0;
}

void app_stop(struct app *app, int exit_code) {
    if (app->stopping) return;
    if (app->draining) { /* asked again (a second Ctrl-C): no more waiting */
        app_stop_finish(app);
        return;
    }
    app->draining = 1;
    app->exit_code = exit_code;
    if (run_stop_hooks(app)) {
        uv_timer_init(app->loop, &app->stop_timer);
        app->stop_timer.data = app;
        uv_timer_start(&app->stop_timer, stop_timer_fired,
                       (uint64_t)cfg_int(app, "shutdown.grace_ms", 3000), 0);
        return;
    }
    app_stop_finish(app);
}

/* host.on_stop(fn): fn runs (in a task) when the process is asked to stop, before its
 * servers and clients close; all hooks together get shutdown.grace_ms. */
static int l_on_stop(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (app->stop_hooks_ref == LUA_NOREF || app->stop_hooks_ref == 0) {
        lua_newtable(L);
        app->stop_hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->stop_hooks_ref);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* host.on_stop, for the module table (modules.c). */
int stop_open(lua_State *L) {
    lua_pushcclosure(L, l_on_stop, 1);
    return 1;
}

/* Phase two: everything still running is cancelled and closed. */
static void app_stop_finish(struct app *app) {
    if (app->stopping) return;
    app->stopping = 1;
    if (app->stop_timer.loop && !uv_is_closing((uv_handle_t *)&app->stop_timer))
        uv_close((uv_handle_t *)&app->stop_timer, NULL); /* initialised: hooks ran */
    while (!list_empty(&app->tracked_list)) {
        tracked *t = LIST_ENTRY(app->tracked_list.next, tracked, link);
        list_remove(&t->link);
        t->close(t);
    }
    for (const struct host_module *m = host_modules; m->name; m++)
        if (m->shutdown) m->shutdown(app);
    uv_close((uv_handle_t *)&app->sig_int, NULL);
    uv_close((uv_handle_t *)&app->sig_term, NULL);
    uv_close((uv_handle_t *)&app->sig_hup, NULL);
    static uv_timer_t deadline;
    uv_timer_init(app->loop, &deadline);
    uv_timer_start(&deadline, shutdown_deadline, 5000, 0);
    uv_unref((uv_handle_t *)&deadline);
}

static void on_signal(uv_signal_t *h, int signum) {
    struct app *app = h->data;
    if (signum == SIGHUP) {
        scripts_reload_all(app);
        return;
    }
    log_info("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    app_stop(app, app->draining ? app->exit_code : 0);
}

static void watch_signals(struct app *app) {
    uv_signal_t *sigs[] = {&app->sig_int, &app->sig_term, &app->sig_hup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(app->loop, sigs[i]);
        sigs[i]->data = app;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
}

/* ---- the main task ------------------------------------------------------------------- */

/* The command's main returns an exit status (the process ends), or nothing (a server:
 * it runs until a signal). */
static int main_done(void *ud, task_t *t, int ok, int nres) {
    struct app *app = ud;
    if (!ok) {
        app_stop(app, 1);
        return 0; /* logged by the scheduler */
    }
    if (nres > 0 && lua_isnumber(t->co, -nres)) app_stop(app, (int)lua_tointeger(t->co, -nres));
    return 0;
}

static int start_main(struct app *app, struct options *o) {
    lua_State *L = app->L;
    char module[64];
    const char *cmd = o->command;
    int is_command = 0;
    for (int i = 0; COMMANDS[i]; i++) is_command |= strcmp(COMMANDS[i], cmd) == 0;
    if (!is_command) cmd = "role";
    else if (strcmp(cmd, "test") == 0) cmd = "harness";
    else if (strcmp(cmd, "config") == 0) cmd = "cli";
    snprintf(module, sizeof module, "chathost.%s", cmd);
    int rc = vm_require_embedded(L, "chathost.hostlib");
    if (rc == 0) {
        lua_pop(L, 1);
        rc = vm_require_embedded(L, module);
    }
    if (rc != 0) {
        fprintf(stderr, "chathost: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_createtable(L, o->nargs, 0);
    for (int i = 0; i < o->nargs; i++) {
        lua_pushstring(L, o->args[i]);
        lua_rawseti(L, -2, i + 1);
    }
    sched_spawn(app, L, 1, cmd, main_done, app);
    return 0;
}

static int is_help(const char *a) {
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

/* `chathost help`, `chathost --help`, `chathost ROLE --help`...: the usage. The client
 * parses its own arguments (its --help is its own), and for exec only a --help in place
 * of FILE is ours: what follows FILE belongs to the file. */
static int wants_help(int argc, char **argv) {
    if (is_help(argv[1])) return 1;
    if (strcmp(argv[1], "client") == 0) return 0;
    int last = strcmp(argv[1], "exec") == 0 ? 2 : argc - 1;
    for (int i = 2; i <= last && i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0 ||
            strcmp(argv[i], "--name") == 0) {
            i++; /* a value, even one spelt --help */
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    }
    return 0;
}

static void pool_noop(uv_work_t *w) { (void)w; }
static void pool_started(uv_work_t *w, int status) { (void)w, (void)status; }

/* libuv's pool (file I/O, hashing, SMTP) gets as many threads as the role's section says
 * (self.pool_threads: resource.pool_threads), else 8 (blocking work shares it with fs
 * work: room); UV_THREADPOOL_SIZE in the environment wins. libuv reads that variable when
 * its pool starts, at the first job: one is queued now, and the variable is then put back
 * as it was, so that the processes this one starts (the spec harness's roles) do not take
 * this role's size for the user's. */
static void start_pool(struct app *app) {
    static uv_work_t first;
    const char *user = getenv("UV_THREADPOOL_SIZE");
    if (!user) {
        char n[24];
        snprintf(n, sizeof n, "%lld", cfg_int(app, "self.pool_threads", 8));
        setenv("UV_THREADPOOL_SIZE", n, 1);
    }
    uv_queue_work(app->loop, &first, pool_noop, pool_started);
    if (!user) unsetenv("UV_THREADPOOL_SIZE");
}

int main(int argc, char **argv) {
    if (argc < 2 || wants_help(argc, argv)) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    cloexec_inherited(); /* what the parent left open is not for our children */
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread exists */
    struct options o = {0};
    static struct app app;
    if (parse_options(argc, argv, &o) != 0 || resolve_paths(&app, o.config) != 0) {
        free(o.args);
        return 2;
    }
    app.loop = uv_default_loop();
    app.role = o.command;
    app.name = o.name ? o.name : o.command;
    list_init(&app.tracked_list);
    app.stop_hooks_ref = LUA_NOREF;
    log_setup(app.role, app.name);
    if (vm_open(&app) != 0) return die("%s", "cannot create the Lua state");
    char err[1024];
    if (config_load(&app, err, sizeof err) != 0) {
        vm_close(&app);
        free(o.args);
        return die("config: %s", err);
    }
    /* a role whose section sets workers (the gate) runs that many processes on its port */
    if (cfg_int(&app, "self.workers", 1) > 1) {
        static char name[32];
        int code = 0, index = workers_supervise((int)cfg_int(&app, "self.workers", 1), &code);
        if (index < 0) {
            vm_close(&app);
            free(o.args);
            return code;
        }
        /* a worker: its own name in logs, its own admin port (admin_port + index) */
        snprintf(name, sizeof name, "%s-%d", app.name, index + 1);
        app.name = name;
        log_setup(app.role, app.name);
        long long admin = cfg_int(&app, "self.admin_port", 0);
        if (admin > 0) cfg_set_int(&app, "self.admin_port", admin + index);
        uv_loop_fork(app.loop);
    }
    start_pool(&app);
    watch_signals(&app);
    if (start_main(&app, &o) != 0) app_stop(&app, 1);
    uv_run(app.loop, UV_RUN_DEFAULT);
    for (const struct host_module *m = host_modules; m->name; m++)
        if (m->release) m->release(&app);
    vm_close(&app);
    uv_run(app.loop, UV_RUN_NOWAIT); /* close callbacks of handles freed by __gc */
    uv_loop_close(app.loop);
    free(o.args);
    return app.exit_code;
}
