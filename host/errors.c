/* errors.c: host.errors, the protocol's error codes by name ({Internal = 1019, ...}), from
 * the table in errors.h that the C replies use too; scripts/lib/errors.lua reads it. */
#include <lauxlib.h>

#include "errors.h"
#include "modules.h"

#define HOST_ERROR_FIELD(name, code) {#name, code},

static const struct {
    const char *name;
    int code;
} CODES[] = {HOST_ERRORS(HOST_ERROR_FIELD)};

int errors_open(lua_State *L) {
    lua_createtable(L, 0, (int)(sizeof CODES / sizeof CODES[0]));
    for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++) {
        lua_pushinteger(L, CODES[i].code);
        lua_setfield(L, -2, CODES[i].name);
    }
    return 1;
}
