/* scripts.c: host.scripts.open: the script generations of a role, the folder watchers with
 * their debounce timer, and reload on demand. The loading itself is Lua (chathost.loader). */
#include "scripts.h"

#include <dirent.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "config.h"
#include "hostobj.h"
#include "log.h"
#include "modules.h"

#define LOADER_MT "chathost.scripts"
#define MAX_WATCH 64
#define MAX_CHANGED 8 /* file names a reload's log line lists; more are counted */
#define CHANGED_NAME 160

struct reloader {
    hostobj obj;    /* users: the Lua handle (closing frees the rest at once) */
    list_node link; /* in the app's list of reloaders */
    struct app *app;
    char *dir, *role;
    int handlers_ref, validate_ref;
    uv_fs_event_t *watch[MAX_WATCH];
    int nwatch;
    uv_timer_t *debounce;
    unsigned debounce_ms;
    unsigned generation, reloads, failures;
    unsigned ignored; /* change events for names that are not scripts (editor temp files) */
    /* scripts changed since the last reload, relative to dir, for its log line */
    char changed[MAX_CHANGED][CHANGED_NAME];
    int nchanged, more_changed;
    char last_changed[MAX_CHANGED * (CHANGED_NAME + 2) + 32]; /* the last reload's list */
    char last_error[1024];
};

static void handle_free(uv_handle_t *h) { free(h); }

/* Loads a new generation. Returns 0 and swaps it in, or -1 (old generation kept). */
static int reload_once(reloader *r) {
    lua_State *L = r->app->L;
    int top = lua_gettop(L);
    if (vm_require_embedded(L, "chathost.loader") != 0) goto fail;
    lua_getfield(L, -1, "load");
    lua_pushstring(L, r->dir);
    lua_pushstring(L, r->role);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->validate_ref);
    if (lua_pcall(L, 3, 2, 0) != 0) goto fail;
    if (lua_isnil(L, -2)) goto fail;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, r->handlers_ref);
    r->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->generation++;
    r->app->reload_epoch++;
    r->last_error[0] = '\0';
    lua_settop(L, top);
    return 0;
fail:
    snprintf(r->last_error, sizeof r->last_error, "%s",
             lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown error");
    r->failures++;
    lua_settop(L, top);
    return -1;
}

/* Loads a generation and logs the outcome with what caused it and how long loading took. */
static void reload_logged(reloader *r, const char *why) {
    r->reloads++;
    uint64_t t0 = uv_hrtime();
    int rc = reload_once(r);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    if (rc == 0)
        log_info("scripts reloaded (%s): %s/%s generation %u, loaded in %.1f ms", why, r->dir,
                 r->role, r->generation, ms);
    else
        log_error("script reload failed (%s), still serving generation %u: %s", why,
                  r->generation, r->last_error);
}

void scripts_reload_all(struct app *app) {
    for (list_node *n = app->reloaders.next; n != &app->reloaders; n = n->next)
        reload_logged(LIST_ENTRY(n, reloader, link), "SIGHUP");
}

void scripts_push_handlers(reloader *r, lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->handlers_ref);
}

/* Joins the names collected since the last reload into last_changed and forgets them. */
static void take_changed(reloader *r) {
    char *out = r->last_changed;
    size_t cap = sizeof r->last_changed, n = 0;
    n += (size_t)snprintf(out + n, cap - n, "changed:");
    for (int i = 0; i < r->nchanged && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s %s", i ? "," : "", r->changed[i]);
    if (r->more_changed && n < cap) snprintf(out + n, cap - n, " and %d more", r->more_changed);
    r->nchanged = r->more_changed = 0;
}

static void debounce_fired(uv_timer_t *t) {
    reloader *r = t->data;
    take_changed(r);
    reload_logged(r, r->last_changed);
}

/* Only a .lua file is a script. Editors write temp and backup files next to the one being
 * saved (.x.lua.swp, x.lua~, 4913, x.lua.tmp): those neither trigger a reload nor get listed. */
static int is_script_name(const char *file) {
    size_t n = strlen(file);
    return file[0] != '.' && n > 4 && strcmp(file + n - 4, ".lua") == 0;
}

/* Adds dir-relative name of file (in the watched folder of h) to the changed list, once. */
static void note_changed(reloader *r, uv_fs_event_t *h, const char *file) {
    char folder[PATH_MAX], name[CHANGED_NAME];
    size_t len = sizeof folder, dlen = strlen(r->dir);
    if (uv_fs_event_getpath(h, folder, &len) != 0) snprintf(folder, sizeof folder, "%s", r->dir);
    const char *rel = strncmp(folder, r->dir, dlen) == 0 && folder[dlen] == '/' ? folder + dlen + 1
                                                                                 : folder;
    snprintf(name, sizeof name, "%.100s/%.55s", rel, file); /* a log line, not a path */
    for (int i = 0; i < r->nchanged; i++)
        if (strcmp(r->changed[i], name) == 0) return;
    if (r->nchanged < MAX_CHANGED)
        memcpy(r->changed[r->nchanged++], name, sizeof name);
    else
        r->more_changed++;
}

/* Every change restarts the debounce, so the steps of one save (an editor's rename and
 * write, or truncate and write) and several files saved together make one reload. */
static void fs_changed(uv_fs_event_t *h, const char *file, int events, int status) {
    reloader *r = h->data;
    if (status < 0) {
        log_warn("script watcher: %s", uv_strerror(status));
        return;
    }
    if (file && !is_script_name(file)) {
        r->ignored++;
        return;
    }
    note_changed(r, h, file ? file : "?");
    uv_update_time(r->app->loop); /* from now: the loop's time is as old as its busy iteration */
    uv_timer_start(r->debounce, debounce_fired, r->debounce_ms, 0);
}

/* Watches path and, recursively, its subfolders. */
static void watch_tree(reloader *r, const char *path) {
    if (r->nwatch >= MAX_WATCH) {
        log_warn("script watcher: more than %d folders, %s is not watched", MAX_WATCH, path);
        return;
    }
    uv_fs_event_t *h = xmalloc(sizeof *h);
    uv_fs_event_init(r->app->loop, h);
    h->data = r;
    if (uv_fs_event_start(h, fs_changed, path, 0) != 0) {
        uv_close((uv_handle_t *)h, handle_free);
        return;
    }
    r->watch[r->nwatch++] = h;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[PATH_MAX];
        struct stat st;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) watch_tree(r, sub);
    }
    closedir(d);
}

static void reloader_close(hostobj *o) {
    reloader *r = HOSTOBJ_OF(o, reloader, obj);
    lua_State *L = r->app->L;
    for (int i = 0; i < r->nwatch; i++) uv_close((uv_handle_t *)r->watch[i], handle_free);
    if (r->debounce) uv_close((uv_handle_t *)r->debounce, handle_free);
    luaL_unref(L, LUA_REGISTRYINDEX, r->handlers_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, r->validate_ref);
    list_remove(&r->link);
}

static void reloader_free(hostobj *o) {
    reloader *r = HOSTOBJ_OF(o, reloader, obj);
    free(r->dir);
    free(r->role);
    free(r);
}

void scripts_close_all(struct app *app) {
    while (!list_empty(&app->reloaders))
        hostobj_close(&LIST_ENTRY(app->reloaders.next, reloader, link)->obj);
}

static reloader *check_loader(lua_State *L) {
    reloader *r = HOSTOBJ_OF(hostobj_check(L, 1, LOADER_MT), reloader, obj);
    if (r->obj.closing) luaL_error(L, "scripts loader is closed");
    return r;
}

/* The string option k, or def; it stays on the stack (alive) until the call returns. */
static const char *opt_field_str(lua_State *L, const char *k, const char *def) {
    lua_getfield(L, 1, k);
    return luaL_optstring(L, -1, def);
}

/* scripts.dir, relative to the config file's folder (a copy the caller frees). */
static char *default_dir(struct app *app) {
    char *dir_cfg = cfg_str(app, "scripts.dir", "scripts");
    int absolute = dir_cfg[0] == '/';
    const char *root = absolute ? "" : app->root, *sep = absolute ? "" : "/";
    size_t n = strlen(root) + strlen(sep) + strlen(dir_cfg) + 1;
    char *dir = xmalloc(n);
    snprintf(dir, n, "%s%s%s", root, sep, dir_cfg);
    free(dir_cfg);
    return dir;
}

static void start_watching(reloader *r) {
    char path[PATH_MAX];
    r->debounce = xmalloc(sizeof *r->debounce);
    uv_timer_init(r->app->loop, r->debounce);
    r->debounce->data = r;
    snprintf(path, sizeof path, "%s/%s", r->dir, r->role);
    watch_tree(r, path);
    snprintf(path, sizeof path, "%s/lib", r->dir);
    watch_tree(r, path);
}

/* host.scripts.open{role=, dir=?, watch=?, debounce_ms=?, validate=?} -> loader | nil, err */
static int l_open(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *role = opt_field_str(L, "role", app->role); /* every check before allocating */
    const char *dir = opt_field_str(L, "dir", NULL);
    lua_getfield(L, 1, "debounce_ms");
    unsigned debounce_ms =
        (unsigned)luaL_optinteger(L, -1, cfg_int(app, "scripts.reload_debounce_ms", 20));
    lua_pop(L, 1);
    reloader *r = xcalloc(1, sizeof *r);
    r->app = app;
    r->role = role ? xstrdup(role) : NULL;
    r->dir = dir ? xstrdup(dir) : default_dir(app);
    r->debounce_ms = debounce_ms;
    lua_getfield(L, 1, "watch");
    int watch = lua_isnil(L, -1) ? cfg_bool(app, "scripts.watch", 1) : lua_toboolean(L, -1);
    lua_getfield(L, 1, "validate");
    r->validate_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1); /* watch */
    r->handlers_ref = LUA_NOREF;
    list_init(&r->link);
    if (reload_once(r) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, r->last_error);
        luaL_unref(L, LUA_REGISTRYINDEX, r->validate_ref);
        free(r->dir);
        free(r->role);
        free(r);
        return 2;
    }
    list_push_back(&app->reloaders, &r->link);
    hostobj_init(app, &r->obj, "script watcher", reloader_close, reloader_free);
    if (watch) start_watching(r);
    hostobj_push(L, &r->obj, LOADER_MT);
    return 1;
}

static int l_handlers(lua_State *L) {
    scripts_push_handlers(check_loader(L), L);
    return 1;
}

static int l_reload(lua_State *L) {
    reloader *r = check_loader(L);
    r->reloads++;
    if (reload_once(r) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, r->last_error);
        return 2;
    }
    lua_pushinteger(L, r->generation);
    return 1;
}

static int l_stats(lua_State *L) {
    reloader *r = check_loader(L);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, r->generation);
    lua_setfield(L, -2, "generation");
    lua_pushinteger(L, r->reloads);
    lua_setfield(L, -2, "reloads");
    lua_pushinteger(L, r->failures);
    lua_setfield(L, -2, "failures");
    lua_pushstring(L, r->last_error);
    lua_setfield(L, -2, "last_error");
    lua_pushstring(L, r->dir);
    lua_setfield(L, -2, "dir");
    lua_pushstring(L, r->last_changed);
    lua_setfield(L, -2, "changed");
    lua_pushinteger(L, r->ignored);
    lua_setfield(L, -2, "ignored");
    return 1;
}

int scripts_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"handlers", l_handlers}, {"reload", l_reload},
                                       {"stats", l_stats},       {"close", hostobj_l_close},
                                       {NULL, NULL}};
    list_init(&((struct app *)lua_touserdata(L, -1))->reloaders);
    /* A dropped loader keeps serving (a role holds its handlers through C); it stops only
     * on close() or at shutdown. */
    hostobj_class(L, LOADER_MT, methods, NULL);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_open, 1);
    lua_setfield(L, -2, "open");
    return 1;
}
