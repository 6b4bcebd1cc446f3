/* scripts.h: a role's scripts, loaded by generation (host/lua/loader.lua) and swapped in
 * only when a whole new generation loads and validates. Watches the scripts folders
 * (debounced) and reloads on SIGHUP (scripts_reload_all). */
#ifndef CHATHOST_SCRIPTS_H
#define CHATHOST_SCRIPTS_H

#include "app.h"

typedef struct reloader reloader;

/* Loads every reloader's scripts again; failures keep the old generation and are logged. */
void scripts_reload_all(struct app *app);
/* Pushes the current handler table of r. */
void scripts_push_handlers(reloader *r, lua_State *L);

#endif
