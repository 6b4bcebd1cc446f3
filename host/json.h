/* json.h: host.json (cjson decoding, our own encoder) and the array marker shared with the
 * protobuf converter. */
#ifndef CHATHOST_JSON_H
#define CHATHOST_JSON_H

#include <lua.h>

/* Marks the table at idx as a JSON array: it encodes as [...] even when empty. */
void json_mark_array(lua_State *L, int idx);
/* True for a table marked as a JSON array (by json_mark_array or a decoded top-level []). */
int json_is_array(lua_State *L, int idx);
/* True for host.null (cjson.null, a NULL light userdata). */
int json_is_null(lua_State *L, int idx);
/* Integral numbers below 2^53 as integers ("1001", not "1001.0"); others with 17
 * significant digits, which round-trips a double. Returns the length. */
size_t json_format_number(char *buf, size_t size, double x);
/* Decodes s as host.json.decode does (a top-level array marked as one) and pushes the value,
 * returning 0; or pushes cjson's error message and returns -1. */
int json_decode(lua_State *L, const char *s, size_t len);
/* Encodes the value at idx as JSON into a reused buffer, without making a Lua string.
 * Returns the bytes (valid until the next encode), or NULL with the error message pushed. */
const char *json_encode_pcall(lua_State *L, int idx, size_t *len);

#endif
