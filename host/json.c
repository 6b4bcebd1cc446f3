/* json.c: host.json. Decoding is lua-cjson's; encoding is ours, because the Debian build
 * of lua-cjson cannot encode an empty array as [] and rounds integers to 14 digits. Here a
 * table marked with host.json.array() (as decoded protobuf repeated fields are) is always
 * an array, integers up to 2^53 are exact, and the output buffer is reused across calls. */
#include "json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "modules.h"

#define JSON_MAX_DEPTH 128

static char array_mt_key;

typedef buf_t jbuf; /* buf.h's buffer */

static jbuf out_buf; /* reused: Lua runs on one thread */

static void jb_reserve(jbuf *b, size_t more) { b->data = buf_grow(b->data, &b->cap, b->len + more); }

static void jb_add(jbuf *b, const char *s, size_t n) { buf_append(b, s, n); }

static void jb_char(jbuf *b, char c) {
    jb_reserve(b, 1);
    b->data[b->len++] = c;
}

void json_mark_array(lua_State *L, int idx) {
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    lua_pushlightuserdata(L, &array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, idx);
}

int json_is_null(lua_State *L, int idx) {
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

static int is_marked_array(lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx)) return 0;
    lua_pushlightuserdata(L, &array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

/* Whether any of the 8 bytes in x needs escaping (below 0x20, '"' or '\\'): the
 * bit tricks of "determine if a word has a byte less than n" and "... equal to n". */
static int word_needs_escape(uint64_t x) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    uint64_t low = (x - ones * 0x20) & ~x;
    uint64_t quote = (q - ones) & ~q, back = (bs - ones) & ~bs;
    return ((low | quote | back) & highs) != 0;
}

/* The length of s's first run of bytes that need no escaping, 8 at a time (a large
 * string, e.g. a resource chunk's base64, is mostly one such run). */
static size_t plain_prefix(const char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (word_needs_escape(x)) break;
    }
    return i;
}

static void encode_string(jbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    jb_reserve(b, n + 2);
    b->data[b->len++] = '"';
    size_t run = 0; /* bytes copied in bulk until the next one that needs escaping */
    for (size_t i = plain_prefix(s, n); i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jb_add(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            jb_add(b, "\\u00", 4);
            jb_char(b, hex[c >> 4]);
            jb_char(b, hex[c & 15]);
            continue;
        }
        jb_add(b, esc, 2);
    }
    jb_add(b, s + run, n - run);
    jb_char(b, '"');
}

static void encode_integer(jbuf *b, long long v) {
    char digits[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    jb_reserve(b, (size_t)n + 1);
    if (v < 0) b->data[b->len++] = '-';
    while (n > 0) b->data[b->len++] = digits[--n];
}

size_t json_format_number(char *buf, size_t size, double x) {
    if (x == floor(x) && fabs(x) < 9007199254740992.0)
        return (size_t)snprintf(buf, size, "%lld", (long long)x);
    return (size_t)snprintf(buf, size, "%.17g", x);
}

static int encode_number(lua_State *L, jbuf *b, double v) {
    if (isnan(v) || isinf(v)) return luaL_error(L, "json: cannot encode NaN or infinity");
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        encode_integer(b, (long long)v);
        return 0;
    }
    char num[32];
    int n = snprintf(num, sizeof num, "%.17g", v);
    jb_add(b, num, (size_t)n);
    return 0;
}

/* Returns n > 0 when the table at idx is the sequence 1..n, 0 otherwise. */
static size_t sequence_length(lua_State *L, int idx) {
    size_t n = lua_objlen(L, idx), count = 0;
    if (n == 0) return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
        if (count > n) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return count == n ? n : 0;
}

static void encode_value(lua_State *L, jbuf *b, int idx, int depth);

static void encode_array(lua_State *L, jbuf *b, int idx, size_t n, int depth) {
    jb_char(b, '[');
    for (size_t i = 1; i <= n; i++) {
        if (i > 1) jb_char(b, ',');
        lua_rawgeti(L, idx, (int)i);
        encode_value(L, b, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    jb_char(b, ']');
}

static void encode_object(lua_State *L, jbuf *b, int idx, int depth) {
    int first = 1;
    jb_char(b, '{');
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
            luaL_error(L, "json: cannot encode a table key of type %s", lua_typename(L, kt));
        if (!first) jb_char(b, ',');
        first = 0;
        if (kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            encode_string(b, k, kl);
        } else {
            char num[40];
            encode_string(b, num, json_format_number(num, sizeof num, lua_tonumber(L, -2)));
        }
        jb_char(b, ':');
        encode_value(L, b, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    jb_char(b, '}');
}

static void encode_value(lua_State *L, jbuf *b, int idx, int depth) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: jb_add(b, "null", 4); return;
    case LUA_TBOOLEAN:
        lua_toboolean(L, idx) ? jb_add(b, "true", 4) : jb_add(b, "false", 5);
        return;
    case LUA_TNUMBER: encode_number(L, b, lua_tonumber(L, idx)); return;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        encode_string(b, s, n);
        return;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            jb_add(b, "null", 4);
            return;
        }
        break;
    case LUA_TTABLE: {
        if (depth > JSON_MAX_DEPTH) luaL_error(L, "json: nesting deeper than %d", JSON_MAX_DEPTH);
        lua_checkstack(L, 4);
        if (is_marked_array(L, idx)) {
            encode_array(L, b, idx, lua_objlen(L, idx), depth);
            return;
        }
        size_t n = sequence_length(L, idx);
        if (n > 0)
            encode_array(L, b, idx, n, depth);
        else
            encode_object(L, b, idx, depth);
        return;
    }
    }
    luaL_error(L, "json: cannot encode a value of type %s", luaL_typename(L, idx));
}

/* Lua C function: encodes argument 1 into out_buf and returns nothing, so a C caller that
 * copies the bytes anyway (json_encode_pcall) creates no Lua string. */
/* Starts an encode into out_buf; a huge buffer left by the last one is not kept. */
static void out_start(void) {
    out_buf.len = 0;
    if (out_buf.cap > (1 << 20)) {
        free(out_buf.data);
        out_buf.data = NULL;
        out_buf.cap = 0;
    }
}

static int encode_static(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    out_start();
    encode_value(L, &out_buf, 1, 0);
    return 0;
}

const char *json_encode_pcall(lua_State *L, int idx, size_t *len) {
    static int fn_ref = LUA_NOREF; /* the C function, made once (one Lua state per process) */
    if (fn_ref == LUA_NOREF) {
        lua_pushcfunction(L, encode_static);
        fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 0, 0) != 0) return NULL;
    *len = out_buf.len;
    return out_buf.data ? out_buf.data : "";
}

static int l_encode(lua_State *L) {
    encode_static(L);
    lua_pushlstring(L, out_buf.data, out_buf.len);
    return 1;
}

static int l_safe_encode(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushcfunction(L, l_encode);
    lua_insert(L, 1);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* array(t?) -> t marked as a JSON array (a new empty one without t) */
static int l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    json_mark_array(L, 1);
    return 1;
}

static int l_is_array(lua_State *L) {
    lua_pushboolean(L, json_is_array(L, 1));
    return 1;
}

/* cjson decodes [] and {} alike (an empty table); the top level is told apart by its first
 * byte and a top-level array is marked like host.json.array(), so a caller can refuse it
 * where the protocol wants an object. Upvalue 1 is cjson's (or cjson.safe's) decode. */
static void mark_if_array(lua_State *L, int idx, const char *s, size_t n) {
    if (!lua_istable(L, idx)) return;
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    if (i < n && s[i] == '[') json_mark_array(L, idx);
}

static int l_decode(lua_State *L) {
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_call(L, 1, LUA_MULTRET); /* cjson raises (or cjson.safe returns nil, err) */
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    mark_if_array(L, 2, s, n);
    return lua_gettop(L) - 1;
}

static char decode_key; /* registry: cjson's (raising) decode, for json_decode */

/* ---- long string values out of cjson's way ---------------------------------------------
 * cjson copies a string byte by byte; a resource chunk's body is ~44 KB of base64 in one
 * member ("data"), and that copy was the role's largest single cost. A body of at least
 * SPLIT_MIN bytes is scanned first: the content of each top-level member's string value of
 * at least SPLIT_STRING bytes that holds no backslash and no NUL (what cjson takes byte for
 * byte) is cut out, cjson decodes the rest (the strings left empty, so it is valid JSON
 * exactly when the body is), and the cut strings are set into the table. Anything the scan
 * does not follow (not an object, a repeated key, too many members, a syntax error) goes to
 * cjson whole, so the result is always cjson's. */
#define SPLIT_MIN 4096
#define SPLIT_STRING 1024
#define SPLIT_MEMBERS 64
#define SPLIT_CUTS 4

typedef struct {
    const char *key, *val; /* both without their quotes */
    size_t key_len, val_len;
} split_member;

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at a string's opening quote -> just past its closing quote | NULL (unterminated);
 * *plain = no backslash in it */
static const char *skip_string(const char *p, const char *e, int *plain) {
    p++;
    *plain = 1;
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        const char *bs = memchr(p, '\\', (size_t)(q - p));
        if (!bs) return q + 1;
        *plain = 0;
        p = bs + 2; /* past the escaped character, a quote included */
        if (p >= e) return NULL;
    }
}

/* p at a member's value (not a string) -> its end: a ',' or '}' at depth 0, or past the
 * closing bracket of an object or array | NULL */
static const char *skip_value(const char *p, const char *e) {
    int depth = 0, plain;
    while (p < e) {
        char c = *p;
        if (c == '"') {
            p = skip_string(p, e, &plain);
            if (!p) return NULL;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return p;
            if (--depth == 0) return p + 1;
        } else if (c == ',' && depth == 0) {
            return p;
        }
        p++;
    }
    return NULL;
}

/* Scans the object s..e into m (n members); -> the number of members whose value is cut
 * (their indexes first in cut[]) | 0: decode the body whole */
static int split_scan(const char *s, const char *e, split_member *m, int *n, int *cut) {
    int cuts = 0, plain;
    const char *p = skip_ws(s, e);
    if (p == e || *p != '{') return 0;
    p = skip_ws(p + 1, e);
    *n = 0;
    while (p < e && *p == '"') {
        if (*n == SPLIT_MEMBERS) return 0;
        split_member *x = &m[(*n)++];
        const char *k = p + 1;
        p = skip_string(p, e, &plain);
        if (!p || !plain) return 0;
        x->key = k;
        x->key_len = (size_t)(p - 1 - k);
        x->val = NULL;
        for (int i = 0; i < *n - 1; i++)
            if (m[i].key_len == x->key_len && memcmp(m[i].key, k, x->key_len) == 0) return 0;
        p = skip_ws(p, e);
        if (p == e || *p != ':') return 0;
        p = skip_ws(p + 1, e);
        if (p == e) return 0;
        if (*p == '"') {
            const char *v = p + 1;
            p = skip_string(p, e, &plain);
            if (!p) return 0;
            size_t vlen = (size_t)(p - 1 - v);
            if (plain && vlen >= SPLIT_STRING && cuts < SPLIT_CUTS && !memchr(v, '\0', vlen)) {
                x->val = v;
                x->val_len = vlen;
                cut[cuts++] = *n - 1;
            }
        } else {
            p = skip_value(p, e);
            if (!p) return 0;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') p = skip_ws(p + 1, e);
        else break;
    }
    if (p == e || *p != '}' || skip_ws(p + 1, e) != e) return 0;
    return cuts;
}

/* Pushes the Lua string of s..e with the cut values' contents left out. */
static void push_without(lua_State *L, const char *s, const char *e, const split_member *m,
                         const int *cut, int cuts) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *p = s;
    for (int i = 0; i < cuts; i++) {
        const split_member *x = &m[cut[i]];
        luaL_addlstring(&b, p, (size_t)(x->val - p));
        p = x->val + x->val_len;
    }
    luaL_addlstring(&b, p, (size_t)(e - p));
    luaL_pushresult(&b);
}

int json_decode(lua_State *L, const char *s, size_t len) {
    split_member m[SPLIT_MEMBERS];
    int n = 0, cut[SPLIT_CUTS], cuts = 0;
    if (len >= SPLIT_MIN) cuts = split_scan(s, s + len, m, &n, cut);
    lua_pushlightuserdata(L, &decode_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (cuts) push_without(L, s, s + len, m, cut, cuts);
    else lua_pushlstring(L, s, len);
    if (lua_pcall(L, 1, 1, 0) != 0) return -1;
    for (int i = 0; i < cuts && lua_istable(L, -1); i++) {
        const split_member *x = &m[cut[i]];
        lua_pushlstring(L, x->key, x->key_len);
        lua_pushlstring(L, x->val, x->val_len);
        lua_rawset(L, -3);
    }
    mark_if_array(L, -1, s, len);
    return 0;
}

int json_is_array(lua_State *L, int idx) { return lua_istable(L, idx) && is_marked_array(L, idx); }

/* Pushes cjson module `name` with JSON's own number syntax: lua-cjson's default also takes
 * hexadecimal numbers, NaN and Infinity, which no JSON sender means. */
static void require_cjson(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
}

int json_open(lua_State *L) {
    lua_pushlightuserdata(L, &array_mt_key);
    lua_newtable(L);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__name");
    lua_rawset(L, LUA_REGISTRYINDEX);

    lua_newtable(L); /* host.json */
    require_cjson(L, "cjson");
    lua_pushlightuserdata(L, &decode_key);
    lua_getfield(L, -2, "decode");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "decode");
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -3, "decode");
    lua_getfield(L, -1, "null");
    lua_setfield(L, -3, "null");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushcfunction(L, l_is_array);
    lua_setfield(L, -2, "is_array");

    lua_newtable(L); /* host.json.safe: nil, err instead of errors */
    require_cjson(L, "cjson.safe");
    lua_getfield(L, -1, "decode");
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -3, "decode");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_safe_encode);
    lua_setfield(L, -2, "encode");
    lua_setfield(L, -2, "safe");
    return 1;
}
