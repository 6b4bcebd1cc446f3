/* config.h: loading config.lua (see host/lua/config.lua for the schema) and typed lookups. */
#ifndef CHATHOST_CONFIG_H
#define CHATHOST_CONFIG_H

#include <stddef.h>

#include "app.h"

/* Loads app->config_path for app->role/app->name. Returns 0, or -1 with a one-line
 * message in err; nothing is published on failure. */
int config_load(struct app *app, char *err, size_t errlen);
int cfg_bool(struct app *app, const char *path, int def);
/* Sets an integer at a dotted path whose parent table exists (start-up adjustments). */
void cfg_set_int(struct app *app, const char *path, long long v);

#endif
