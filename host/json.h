/* json.h: host.json (cjson decoding, our own encoder) and the array marker shared with the
 * protobuf converter. */
#ifndef CHATHOST_JSON_H
#define CHATHOST_JSON_H

#include <lua.h>

/* Marks the table at idx as a JSON array: it encodes as [...] even when empty. */
void json_mark_array(lua_State *L, int idx);
/* True for host.null (cjson.null, a NULL light userdata). */
int json_is_null(lua_State *L, int idx);
int json_open(lua_State *L);

#endif
