/* config.c: loads the validated config (host/lua/config.lua does the checking) and gives C
 * code typed lookups by dotted path. */
#include "config.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

/* Pushes the value at a dotted path of the config table (nil when any step is missing). */
static void cfg_push(struct app *app, const char *path) {
    lua_State *L = app->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->config_ref);
    const char *p = path;
    while (lua_istable(L, -1)) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        lua_pushlstring(L, p, n);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        if (!dot) return;
        p = dot + 1;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

long long cfg_int(struct app *app, const char *path, long long def) {
    cfg_push(app, path);
    long long v = lua_isnumber(app->L, -1) ? (long long)lua_tonumber(app->L, -1) : def;
    lua_pop(app->L, 1);
    return v;
}

char *cfg_str(struct app *app, const char *path, const char *def) {
    cfg_push(app, path);
    const char *s = lua_type(app->L, -1) == LUA_TSTRING ? lua_tostring(app->L, -1) : def;
    char *copy = s ? xstrdup(s) : NULL;
    lua_pop(app->L, 1);
    return copy;
}

char *cfg_list(struct app *app, const char *path) {
    lua_State *L = app->L;
    cfg_push(app, path);
    buf_t b = {0};
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t len;
                const char *s = lua_tolstring(L, -1, &len);
                if (b.len) buf_append(&b, ",", 1);
                buf_append(&b, s, len);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (!b.len) {
        buf_free(&b);
        return NULL;
    }
    buf_append(&b, "", 1);
    return b.data;
}

void cfg_set_int(struct app *app, const char *path, long long v) {
    lua_State *L = app->L;
    const char *dot = strrchr(path, '.');
    if (!dot) return;
    char parent[128];
    snprintf(parent, sizeof parent, "%.*s", (int)(dot - path), path);
    cfg_push(app, parent);
    if (lua_istable(L, -1)) {
        lua_pushnumber(L, (lua_Number)v);
        lua_setfield(L, -2, dot + 1);
    }
    lua_pop(L, 1);
}

int cfg_bool(struct app *app, const char *path, int def) {
    cfg_push(app, path);
    int v = lua_isboolean(app->L, -1) ? lua_toboolean(app->L, -1) : def;
    lua_pop(app->L, 1);
    return v;
}

/* Sets host.config (read-only view), host.config_copy() and the log level. */
static void config_publish(struct app *app, int mod) {
    lua_State *L = app->L;
    lua_getfield(L, mod, "publish");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "host");
    lua_replace(L, -3);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->config_ref);
    lua_call(L, 2, 0);
    char *level = cfg_str(app, "log.level", "info");
    int lv = log_parse_level(level);
    free(level);
    /* the terminal client's screen is its UI: only warnings and errors unless asked */
    if (strcmp(app->role, "client") == 0 && !getenv("CHATHOST_LOG_LEVEL") && lv < LOG_WARN)
        lv = LOG_WARN;
    log_set_level((enum log_level)lv);
}

int config_load(struct app *app, char *err, size_t errlen) {
    lua_State *L = app->L;
    int top = lua_gettop(L);
    if (vm_require_embedded(L, "chathost.config") != 0) goto fail;
    int mod = lua_gettop(L);
    lua_getfield(L, mod, "load");
    lua_pushstring(L, app->config_path);
    lua_pushstring(L, app->role);
    lua_pushstring(L, app->name);
    if (lua_pcall(L, 3, 1, 0) != 0) goto fail;
    app->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    config_publish(app, mod);
    lua_settop(L, top);
    return 0;
fail:
    snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_settop(L, top);
    return -1;
}
