/* frame.c: the chat frame formats (see frame.h), and host.frame for Lua (clients, specs). */
#include "frame.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "modules.h"

size_t frame_header_len(enum frame_kind k) { return k == FRAME_U32 ? 6 : FRAME_HEADER; }

size_t frame_max_body(enum frame_kind k) {
    return k == FRAME_U32 ? FRAME32_MAX_BODY : FRAME_MAX_BODY;
}

static uint32_t read_len(enum frame_kind k, const uint8_t *p) {
    if (k == FRAME_U16) return (uint32_t)(p[0] << 8 | p[1]);
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

enum frame_status frame_parse(enum frame_kind k, const uint8_t *buf, size_t len,
                              size_t max_body, frame *f, size_t *used) {
    size_t head = frame_header_len(k);
    *used = 0;
    if (len < head) return FRAME_MORE;
    f->id = (uint16_t)(buf[0] << 8 | buf[1]);
    f->len = read_len(k, buf + 2);
    f->body = buf + head;
    if (f->len > max_body) return FRAME_TOO_BIG;
    if (len - head < f->len) return FRAME_MORE;
    *used = head + f->len;
    return FRAME_OK;
}

size_t frame_header(enum frame_kind k, uint8_t out[FRAME_HEADER_MAX], uint16_t id,
                    uint32_t len) {
    out[0] = (uint8_t)(id >> 8);
    out[1] = (uint8_t)id;
    if (k == FRAME_U16) {
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return FRAME_HEADER;
    }
    out[2] = (uint8_t)(len >> 24);
    out[3] = (uint8_t)(len >> 16);
    out[4] = (uint8_t)(len >> 8);
    out[5] = (uint8_t)len;
    return 6;
}

enum frame_kind frame_check_kind(lua_State *L, int idx, int arg) {
    const char *name = luaL_optstring(L, idx, "u16u16");
    if (strcmp(name, "u16u16") == 0) return FRAME_U16;
    if (strcmp(name, "u16u32") == 0) return FRAME_U32;
    luaL_argerror(L, arg, "frame must be \"u16u16\" or \"u16u32\"");
    return FRAME_U16;
}

enum frame_kind frame_opt_kind(lua_State *L, int idx) {
    if (!lua_istable(L, idx)) return FRAME_U16;
    lua_getfield(L, idx, "frame");
    enum frame_kind k = frame_check_kind(L, lua_gettop(L), idx);
    lua_pop(L, 1);
    return k;
}

int frame_push_encoded(lua_State *L, enum frame_kind k, int id_idx, int body_idx) {
    lua_Integer id = luaL_checkinteger(L, id_idx);
    size_t len;
    const char *body = luaL_optlstring(L, body_idx, "", &len);
    luaL_argcheck(L, id >= 0 && id <= 65535, id_idx, "must be 0..65535");
    if (len > frame_max_body(k))
        return luaL_argerror(L, body_idx, lua_pushfstring(L, "body longer than %d bytes",
                                                            (int)frame_max_body(k)));
    uint8_t head[FRAME_HEADER_MAX];
    size_t hl = frame_header(k, head, (uint16_t)id, (uint32_t)len);
    lua_pushlstring(L, (const char *)head, hl);
    lua_pushlstring(L, body, len);
    lua_concat(L, 2);
    return 1;
}

/* encode(id, body, frame?) -> bytes: raises when id or body does not fit the format */
static int l_encode(lua_State *L) { return frame_push_encoded(L, frame_check_kind(L, 3, 3), 1, 2); }

/* decode(bytes, max_body?, frame?) -> id, body, used | nil (need more) |
 *   nil, "too big", id, len */
static int l_decode(lua_State *L) {
    size_t len;
    const char *buf = luaL_checklstring(L, 1, &len);
    enum frame_kind k = frame_check_kind(L, 3, 3);
    lua_Integer max = luaL_optinteger(L, 2, (lua_Integer)frame_max_body(k));
    frame f;
    size_t used;
    switch (frame_parse(k, (const uint8_t *)buf, len, (size_t)max, &f, &used)) {
    case FRAME_OK:
        lua_pushinteger(L, f.id);
        lua_pushlstring(L, (const char *)f.body, f.len);
        lua_pushinteger(L, (lua_Integer)used);
        return 3;
    case FRAME_TOO_BIG:
        lua_pushnil(L);
        lua_pushliteral(L, "too big");
        lua_pushinteger(L, f.id);
        lua_pushinteger(L, (lua_Integer)f.len);
        return 4;
    default:
        lua_pushnil(L);
        return 1;
    }
}

int frame_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"encode", l_encode}, {"decode", l_decode}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    return 1;
}
