/* frame.c: the chat frame format (see frame.h), and host.frame for Lua (clients, specs). */
#include "frame.h"

#include <lauxlib.h>
#include <lua.h>

#include "modules.h"

enum frame_status frame_parse(const uint8_t *buf, size_t len, size_t max_body, frame *f,
                              size_t *used) {
    *used = 0;
    if (len < FRAME_HEADER) return FRAME_MORE;
    f->id = (uint16_t)(buf[0] << 8 | buf[1]);
    f->len = (uint16_t)(buf[2] << 8 | buf[3]);
    f->body = buf + FRAME_HEADER;
    if (f->len > max_body) return FRAME_TOO_BIG;
    if (len < (size_t)FRAME_HEADER + f->len) return FRAME_MORE;
    *used = (size_t)FRAME_HEADER + f->len;
    return FRAME_OK;
}

void frame_header(uint8_t out[FRAME_HEADER], uint16_t id, uint16_t len) {
    out[0] = (uint8_t)(id >> 8);
    out[1] = (uint8_t)id;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

int frame_push_encoded(lua_State *L, int id_idx, int body_idx) {
    lua_Integer id = luaL_checkinteger(L, id_idx);
    size_t len;
    const char *body = luaL_optlstring(L, body_idx, "", &len);
    luaL_argcheck(L, id >= 0 && id <= 65535, id_idx, "must be 0..65535");
    luaL_argcheck(L, len <= FRAME_MAX_BODY, body_idx, "body longer than 65535 bytes");
    uint8_t head[FRAME_HEADER];
    frame_header(head, (uint16_t)id, (uint16_t)len);
    lua_pushlstring(L, (const char *)head, FRAME_HEADER);
    lua_pushlstring(L, body, len);
    lua_concat(L, 2);
    return 1;
}

/* encode(id, body) -> bytes: raises when id or body does not fit 16 bits */
static int l_encode(lua_State *L) { return frame_push_encoded(L, 1, 2); }

/* decode(bytes, max_body?) -> id, body, used | nil (need more) | nil, "too big", id, len */
static int l_decode(lua_State *L) {
    size_t len;
    const char *buf = luaL_checklstring(L, 1, &len);
    lua_Integer max = luaL_optinteger(L, 2, FRAME_MAX_BODY);
    frame f;
    size_t used;
    switch (frame_parse((const uint8_t *)buf, len, (size_t)max, &f, &used)) {
    case FRAME_OK:
        lua_pushinteger(L, f.id);
        lua_pushlstring(L, (const char *)f.body, f.len);
        lua_pushinteger(L, (lua_Integer)used);
        return 3;
    case FRAME_TOO_BIG:
        lua_pushnil(L);
        lua_pushliteral(L, "too big");
        lua_pushinteger(L, f.id);
        lua_pushinteger(L, f.len);
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
