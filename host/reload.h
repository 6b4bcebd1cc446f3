/* reload.h: a role's scripts, loaded by generation (host/lua/loader.lua) and swapped in
 * only when a whole new generation loads and validates. Watches the scripts folders
 * (debounced) and reloads on SIGHUP (reload_all). */
#ifndef CHATHOST_RELOAD_H
#define CHATHOST_RELOAD_H

#include "app.h"

typedef struct reloader reloader;

/* Loads every reloader's scripts again; failures keep the old generation and are logged. */
void reload_all(struct app *app);
/* Pushes the current handler table of r. */
void reload_push_handlers(reloader *r, lua_State *L);

#endif
