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
/* Encodes argument 1 into a reused static buffer (call it with lua_pcall); the bytes stay
 * valid until the next encode. */
int json_encode_static(lua_State *L);
const char *json_static_result(size_t *len);

#endif
