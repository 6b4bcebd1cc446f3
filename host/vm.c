/* vm.c: the Lua state and the `host` module. Each sub-module (timer, redis, db, ...) lives
 * in its own file and is attached here; embedded Lua modules (the files in host/lua, compiled into
 * the binary) are reachable as require "chathost.<name>". */
#include <lauxlib.h>
#include <math.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <string.h>
#include <uv.h>

#include "log.h"
#include "modules.h"
#include "sched.h"

extern const struct embedded_lua {
    const char *name;
    const unsigned char *data;
    size_t len;
} embedded_lua[];

const char *vm_tostring(lua_State *L, int idx, size_t *len) {
    idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
    lua_checkstack(L, 3);
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER) {
        lua_pushvalue(L, idx);
    } else {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "(error object is not a string)");
        }
    }
    return lua_tolstring(L, -1, len);
}

static int embedded_loader(lua_State *L) {
    const struct embedded_lua *e = lua_touserdata(L, lua_upvalueindex(1));
    char chunk[128];
    snprintf(chunk, sizeof chunk, "@host/lua/%s.lua", e->name + strlen("chathost."));
    if (luaL_loadbuffer(L, (const char *)e->data, e->len, chunk) != 0) return lua_error(L);
    lua_pushstring(L, e->name);
    lua_call(L, 1, 1);
    return 1;
}

int vm_require_embedded(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    return lua_pcall(L, 1, 1, 0) == 0 ? 0 : -1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn, void *up) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    if (up) {
        lua_pushlightuserdata(L, up);
        lua_pushcclosure(L, fn, 1);
    } else {
        lua_pushcfunction(L, fn);
    }
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

/* ---- host.log ------------------------------------------------------------------------ */

static int log_lua(lua_State *L, enum log_level level) {
    if (!log_enabled(level)) return 0;
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) { /* concatenated as they are, like ngx.log */
        size_t len;
        vm_tostring(L, i, &len);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    log_raw(level, msg, len);
    return 0;
}

static int l_log_debug(lua_State *L) { return log_lua(L, LOG_DEBUG); }
static int l_log_info(lua_State *L) { return log_lua(L, LOG_INFO); }
static int l_log_warn(lua_State *L) { return log_lua(L, LOG_WARN); }
static int l_log_error(lua_State *L) { return log_lua(L, LOG_ERROR); }

static int l_log_enabled(lua_State *L) {
    int level = log_parse_level(luaL_checkstring(L, 1));
    luaL_argcheck(L, level >= 0, 1, "expected debug, info, warn or error");
    lua_pushboolean(L, log_enabled((enum log_level)level));
    return 1;
}

static void open_log(lua_State *L) {
    static const luaL_Reg fns[] = {{"debug", l_log_debug}, {"info", l_log_info},
                                   {"warn", l_log_warn},   {"error", l_log_error},
                                   {"enabled", l_log_enabled}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
}

/* ---- the host table ------------------------------------------------------------------ */

/* Calls m->open with the app on the stack and stores its result as host[m->name], or as
 * host.a.b for the name "a.b" (host.a is attached before). The host table is on top. */
static void attach(lua_State *L, struct app *app, const struct host_module *m) {
    const char *dot = strchr(m->name, '.');
    if (dot) {
        lua_pushlstring(L, m->name, (size_t)(dot - m->name));
        lua_gettable(L, -2);
    } else {
        lua_pushvalue(L, -1);
    }
    lua_pushcfunction(L, m->open);
    lua_pushlightuserdata(L, app);
    lua_call(L, 1, 1);
    lua_setfield(L, -2, dot ? dot + 1 : m->name);
    lua_pop(L, 1);
}

void vm_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction index,
              lua_CFunction gc) {
    int app = lua_gettop(L);
    luaL_newmetatable(L, name);
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_newtable(L);
    lua_pushvalue(L, app);
    luaL_setfuncs(L, methods, 1);
    if (index) {
        lua_setfield(L, -2, "methods");
        lua_pushcfunction(L, index);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

lua_Integer vm_opt_int(lua_State *L, int idx, const char *k, lua_Integer def) {
    if (!lua_istable(L, idx)) return def;
    lua_getfield(L, idx, k);
    lua_Integer v = luaL_optinteger(L, -1, def);
    lua_pop(L, 1);
    return v;
}

long long vm_check_int_option(lua_State *L, int arg, const char *name, long long min,
                              long long max) {
    lua_Number v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || v != floor(v) || v < (lua_Number)min ||
        v > (lua_Number)max)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer in %f..%f", name,
                                              (lua_Number)min, (lua_Number)max));
    return (long long)v;
}

int vm_method(lua_State *L) {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* uv_walk: counts a handle in the table on top of the stack by type ("tcp", "timer"...). */
static void count_handle(uv_handle_t *h, void *arg) {
    lua_State *L = arg;
    const char *type = uv_handle_type_name(uv_handle_get_type(h));
    if (!type) type = "other";
    lua_getfield(L, -1, type);
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -2, type);
}

/* host.stats() -> {tasks_alive=, tasks_started=, handles={tcp=, timer=, ...}}. handles:
 * the loop's handles whose close callback has not run yet (closing ones too), so a spec
 * can check that a server and its connections left none behind, as libuv's tests do. */
static int l_stats(lua_State *L) {
    struct app *app = app_from(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, app->tasks_alive);
    lua_setfield(L, -2, "tasks_alive");
    lua_pushnumber(L, (lua_Number)app->tasks_started);
    lua_setfield(L, -2, "tasks_started");
    lua_newtable(L);
    uv_walk(app->loop, count_handle, L);
    lua_setfield(L, -2, "handles");
    return 1;
}

/* host.ip(s) -> s in canonical form (as the kernel prints a peer's address) when s is an
 * IPv4 or IPv6 address, else nil: "010.0.0.1", "1.2.3.4:80" and host names are not. */
static int l_ip(lua_State *L) {
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    unsigned char addr[16];
    char out[64];
    if (!s || len == 0 || len > 45 || strlen(s) != len) return 0;
    if (uv_inet_pton(AF_INET, s, addr) == 0) {
        if (uv_inet_ntop(AF_INET, addr, out, sizeof out) != 0) return 0;
    } else if (uv_inet_pton(AF_INET6, s, addr) == 0) {
        if (uv_inet_ntop(AF_INET6, addr, out, sizeof out) != 0) return 0;
    } else {
        return 0;
    }
    lua_pushstring(L, out);
    return 1;
}

static void build_host_table(lua_State *L, struct app *app) {
    lua_newtable(L);
    for (const struct host_module *m = host_modules; m->name; m++) attach(L, app, m);
    open_log(L);
    lua_setfield(L, -2, "log");
    lua_pushlightuserdata(L, app);
    lua_pushcclosure(L, l_stats, 1);
    lua_setfield(L, -2, "stats");
    lua_pushcfunction(L, l_ip);
    lua_setfield(L, -2, "ip");
    lua_getfield(L, -1, "timer");
    lua_getfield(L, -1, "now");
    lua_setfield(L, -3, "now");
    lua_pop(L, 1);
    lua_getfield(L, -1, "json");
    lua_getfield(L, -1, "null");
    lua_setfield(L, -3, "null");
    lua_pop(L, 1);
    lua_pushstring(L, app->role);
    lua_setfield(L, -2, "role");
    lua_pushstring(L, app->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, app->root);
    lua_setfield(L, -2, "root");
}

int vm_open(struct app *app) {
    lua_State *L = luaL_newstate();
    if (!L) return -1;
    app->L = L;
    luaL_openlibs(L);
    preload(L, "cjson", luaopen_cjson, NULL);
    preload(L, "cjson.safe", luaopen_cjson_safe, NULL);
    for (const struct embedded_lua *e = embedded_lua; e->name; e++)
        preload(L, e->name, embedded_loader, (void *)e);
    preload(L, "chathost.harness_core", harness_core_open, app);
    sched_init(app);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    build_host_table(L, app);
    lua_setfield(L, -2, "host");
    lua_pop(L, 2);
    /* Scripts find their modules through the reloader, never through package.path. */
    lua_getglobal(L, "package");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    return 0;
}

void vm_close(struct app *app) {
    if (app->L) lua_close(app->L);
    app->L = NULL;
    sched_free(app);
}
