/* hostobj.h: the life of a host object that Lua holds by a handle (a server, a socket...),
 * after libuv's uv_close contract: closing begins once, and the memory goes only when the
 * last user has let go. Users are whatever still points at the object: its Lua handle
 * (until __gc), each open libuv handle (until its close callback), each connection or call
 * it serves. Embed a hostobj in the object and give it two callbacks. */
#ifndef CHATHOST_HOSTOBJ_H
#define CHATHOST_HOSTOBJ_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

#include "app.h"

typedef struct hostobj {
    tracked track;                    /* on the app's list while open (harness leftovers) */
    int users;
    int closing;                      /* hostobj_close has run: no new work is taken */
    int close_on_collect;             /* collecting the Lua handle closes (a socket); else
                                       * the object lives on until closed (a server) */
    void (*close)(struct hostobj *);  /* begins closing (stop accepting, close handles) */
    void (*free)(struct hostobj *);   /* releases everything: closing and no user left */
} hostobj;

/* The object that embeds hostobj o as its member m. */
#define HOSTOBJ_OF(o, type, m) ((type *)((char *)(o) - offsetof(type, m)))

/* Starts o open, with no user, and tracked as kind (a test leaving it open is told);
 * close_on_collect off. */
void hostobj_init(struct app *app, hostobj *o, const char *kind, void (*close)(hostobj *),
                  void (*free)(hostobj *));
/* One more user: o is not freed before the matching hostobj_release. */
void hostobj_hold(hostobj *o);
/* One user less; frees o (its free callback) when it was the last and o is closing. */
void hostobj_release(hostobj *o);
/* Begins closing: untracks o and runs its close callback, once; later calls do nothing.
 * o may be freed before this returns (when no user is left). */
void hostobj_close(hostobj *o);

/* Registers metatable name as vm_class does (the app is on top of the stack), with __gc
 * releasing the handle's object. */
void hostobj_class(lua_State *L, const char *name, const luaL_Reg *methods,
                   lua_CFunction index);
/* A method for methods: closes the handle's object (hostobj_close); nothing once closed. */
int hostobj_l_close(lua_State *L);
/* Pushes a new Lua handle on o of metatable name (from hostobj_class); it is a user of o
 * until collected. */
void hostobj_push(lua_State *L, hostobj *o, const char *name);
/* The object of the handle at idx; raises an argument error unless it is a handle of
 * metatable name. A live handle always has its object (it is one of its users). */
hostobj *hostobj_check(lua_State *L, int idx, const char *name);

#endif
