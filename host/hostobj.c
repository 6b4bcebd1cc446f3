/* hostobj.c: close once, free when the last user lets go (hostobj.h). The Lua side is a
 * userdata holding a pointer, so the object can outlive it (closing connections) and it
 * can outlive the object's resources (a closed server's handle still answers port). */
#include "hostobj.h"

#include <lauxlib.h>

#define HOSTOBJ_MARK "chathost.hostobj" /* metatable field naming a hostobj handle */

typedef struct hostobj_ud {
    hostobj *o; /* NULL once collected */
} hostobj_ud;

static void track_close(tracked *t) { hostobj_close(LIST_ENTRY(t, hostobj, track)); }

void hostobj_init(struct app *app, hostobj *o, const char *kind, void (*close)(hostobj *),
                  void (*free)(hostobj *)) {
    o->users = 0;
    o->closing = 0;
    o->close_on_collect = 0;
    o->close = close;
    o->free = free;
    track_add(app, &o->track, kind, track_close);
}

void hostobj_hold(hostobj *o) { o->users++; }

void hostobj_release(hostobj *o) {
    if (--o->users == 0 && o->closing) o->free(o);
}

void hostobj_close(hostobj *o) {
    if (o->closing) return;
    o->closing = 1;
    track_del(&o->track);
    hostobj_hold(o); /* the callback may release the last user: free after it returns */
    o->close(o);
    hostobj_release(o);
}

/* Any hostobj handle (metatable marked by hostobj_class), for the shared methods. */
static hostobj_ud *check_any(lua_State *L, int idx) {
    int ok = lua_getmetatable(L, idx);
    if (ok) {
        lua_getfield(L, -1, HOSTOBJ_MARK);
        ok = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    if (!ok) luaL_typerror(L, idx, "host object");
    return lua_touserdata(L, idx);
}

int hostobj_l_close(lua_State *L) {
    hostobj_ud *u = check_any(L, 1);
    if (u->o) hostobj_close(u->o);
    return 0;
}

static int l_gc(lua_State *L) {
    hostobj_ud *u = check_any(L, 1);
    hostobj *o = u->o;
    u->o = NULL;
    if (!o) return 0;
    if (o->close_on_collect) hostobj_close(o);
    hostobj_release(o);
    return 0;
}

void hostobj_class(lua_State *L, const char *name, const luaL_Reg *methods,
                   lua_CFunction index) {
    vm_class(L, name, methods, index, l_gc);
    luaL_getmetatable(L, name);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, HOSTOBJ_MARK);
    lua_pop(L, 1);
}

void hostobj_push(lua_State *L, hostobj *o, const char *name) {
    hostobj_ud *u = lua_newuserdata(L, sizeof *u);
    u->o = o;
    hostobj_hold(o);
    luaL_getmetatable(L, name);
    lua_setmetatable(L, -2);
}

hostobj *hostobj_check(lua_State *L, int idx, const char *name) {
    hostobj_ud *u = luaL_checkudata(L, idx, name);
    if (!u->o) luaL_argerror(L, idx, "collected host object");
    return u->o;
}
