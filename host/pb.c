/* pb.c: Lua tables <-> protobuf-c messages, from the descriptors alone (no per-message
 * code). Used by the gRPC bridge and exposed as host.pb for tests and tools. Conversion is
 * strict: an unknown field, a wrong type or an out-of-range number is an error naming the
 * field, so a typo in a handler's reply never silently becomes a default value. */
#include "pb.h"

#include <lauxlib.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "json.h"
#include "modules.h"

extern const ProtobufCServiceDescriptor *const pb_services[];
extern const ProtobufCMessageDescriptor *const pb_messages[];

/* ---- registry ------------------------------------------------------------------------ */

/* Matches "message.GetVarifyReq" and the short "GetVarifyReq". */
static int name_matches(const char *full, const char *short_name, const char *want) {
    return strcmp(want, full) == 0 || strcmp(want, short_name) == 0;
}

const ProtobufCMessageDescriptor *pb_find_message(const char *name) {
    for (int i = 0; pb_messages[i]; i++)
        if (name_matches(pb_messages[i]->name, pb_messages[i]->short_name, name))
            return pb_messages[i];
    return NULL;
}

const ProtobufCMethodDescriptor *pb_find_method(const char *name,
                                                const ProtobufCServiceDescriptor **service) {
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    size_t slen = (size_t)(dot - name);
    for (int i = 0; pb_services[i]; i++) {
        const ProtobufCServiceDescriptor *s = pb_services[i];
        int same = (strlen(s->name) == slen && strncmp(s->name, name, slen) == 0) ||
                   (strlen(s->short_name) == slen && strncmp(s->short_name, name, slen) == 0);
        if (!same) continue;
        const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(s, dot + 1);
        if (m && service) *service = s;
        if (m) return m;
    }
    return NULL;
}

/* ---- message -> Lua ------------------------------------------------------------------ */

static void push_int64(lua_State *L, int64_t v) {
    if (v > -(1LL << 53) && v < (1LL << 53)) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%lld", (long long)v);
        lua_pushstring(L, buf);
    }
}

static void push_uint64(lua_State *L, uint64_t v) {
    if (v < (1ULL << 53)) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        lua_pushstring(L, buf);
    }
}

/* Pushes one value of field f stored at p (a scalar slot or an array element). */
static void push_value(lua_State *L, const ProtobufCFieldDescriptor *f, const void *p) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: lua_pushnumber(L, *(const int32_t *)p); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: lua_pushnumber(L, *(const uint32_t *)p); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: push_int64(L, *(const int64_t *)p); break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: push_uint64(L, *(const uint64_t *)p); break;
    case PROTOBUF_C_TYPE_FLOAT: lua_pushnumber(L, *(const float *)p); break;
    case PROTOBUF_C_TYPE_DOUBLE: lua_pushnumber(L, *(const double *)p); break;
    case PROTOBUF_C_TYPE_BOOL: lua_pushboolean(L, *(const protobuf_c_boolean *)p); break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev)
            lua_pushstring(L, ev->name);
        else
            lua_pushnumber(L, v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        lua_pushstring(L, s ? s : "");
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        lua_pushlstring(L, (const char *)b->data, b->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        if (m)
            pb_push_message(L, m);
        else
            lua_pushnil(L);
        break;
    }
    }
}

static size_t elem_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    default: return 4;
    }
}

/* map<K,V> fields are repeated *Entry messages with exactly the fields key and value. */
static int is_map_entry(const ProtobufCFieldDescriptor *f) {
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED) return 0;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->short_name);
    return d->n_fields == 2 && n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static void push_repeated(lua_State *L, const ProtobufCFieldDescriptor *f, const void *base) {
    size_t n = *(const size_t *)((const char *)base + f->quantifier_offset);
    const char *arr = *(char *const *)((const char *)base + f->offset);
    if (is_map_entry(f)) {
        lua_createtable(L, 0, (int)n);
        const ProtobufCMessageDescriptor *d = f->descriptor;
        for (size_t i = 0; i < n; i++) {
            const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[i];
            push_value(L, &d->fields[0], (const char *)e + d->fields[0].offset);
            push_value(L, &d->fields[1], (const char *)e + d->fields[1].offset);
            lua_rawset(L, -3);
        }
        return;
    }
    lua_createtable(L, (int)n, 0);
    json_mark_array(L, -1);
    size_t sz = elem_size(f->type);
    for (size_t i = 0; i < n; i++) {
        push_value(L, f, arr + i * sz);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

void pb_push_message(lua_State *L, const ProtobufCMessage *m) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    lua_checkstack(L, 6);
    lua_createtable(L, 0, (int)d->n_fields);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            push_repeated(L, f, base);
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
            push_value(L, f, base + f->offset);
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING &&
                   !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
            continue; /* proto2 optional scalar not set */
        } else {
            push_value(L, f, base + f->offset);
            if (lua_isnil(L, -1)) { /* unset sub-message */
                lua_pop(L, 1);
                continue;
            }
        }
        lua_setfield(L, -2, f->name);
    }
}

/* ---- Lua -> message ------------------------------------------------------------------ */

typedef struct conv {
    lua_State *L;
    char *err;
    size_t errlen;
    char path[256];
} conv;

/* The error path "Msg.field[3].sub": kept up to date as the conversion descends (so a
 * failure can name where), by hand: snprintf per field cost more than the field itself. */
static void path_put(conv *c, size_t at, const char *sep, const char *s) {
    size_t room = sizeof c->path - 1;
    while (*sep && at < room) c->path[at++] = *sep++;
    while (*s && at < room) c->path[at++] = *s++;
    c->path[at] = '\0';
}

static void path_index(conv *c, size_t at, size_t i) {
    char num[24], *p = num + sizeof num;
    *--p = '\0';
    *--p = ']';
    do {
        *--p = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    path_put(c, at, "[", p);
}

static int conv_fail(conv *c, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s", c->path, msg);
    return -1;
}

/* A decimal integer string: an optional '-' (when allowed), then digits only. */
static int decimal_ok(const char *s, int allow_minus) {
    if (allow_minus && *s == '-') s++;
    if (*s == '\0') return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* A Lua number that is an integer, or a decimal string (64-bit values may come as strings),
 * within lo..hi. */
static int get_integer(conv *c, int idx, int64_t lo, int64_t hi, int64_t *out) {
    lua_State *L = c->L;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        if (!decimal_ok(s, 1)) return conv_fail(c, "expected an integer, got \"%s\"", s);
        errno = 0;
        long long ll = strtoll(s, NULL, 10);
        if (errno == ERANGE || ll < lo || ll > hi) return conv_fail(c, "%s is out of range", s);
        *out = ll;
        return 0;
    }
    if (lua_type(L, idx) != LUA_TNUMBER)
        return conv_fail(c, "expected an integer, got %s", luaL_typename(L, idx));
    double v = lua_tonumber(L, idx);
    if (v != floor(v) || isinf(v)) return conv_fail(c, "expected an integer, got %g", v);
    /* hi + 1.0 is exact or rounds up to a power of two (2^63): v below it converts safely */
    if (v < (double)lo || v >= (double)hi + 1.0) return conv_fail(c, "%.0f is out of range", v);
    *out = (int64_t)v;
    return 0;
}

static int get_unsigned(conv *c, int idx, uint64_t *out) {
    lua_State *L = c->L;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        if (!decimal_ok(s, 0)) return conv_fail(c, "expected an unsigned integer, got \"%s\"", s);
        errno = 0;
        unsigned long long u = strtoull(s, NULL, 10);
        if (errno == ERANGE) return conv_fail(c, "%s is out of range", s);
        *out = u;
        return 0;
    }
    if (lua_type(L, idx) != LUA_TNUMBER)
        return conv_fail(c, "expected an integer, got %s", luaL_typename(L, idx));
    double v = lua_tonumber(L, idx);
    if (v != floor(v) || isinf(v)) return conv_fail(c, "expected an integer, got %g", v);
    if (v < 0 || v >= 18446744073709551616.0) return conv_fail(c, "%.0f is out of range", v);
    *out = (uint64_t)v;
    return 0;
}

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char ch = s[i];
        size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static ProtobufCMessage *build(conv *c, int idx, const ProtobufCMessageDescriptor *d);

/* Stores the Lua value at idx into the slot p of field f. */
static int set_value(conv *c, const ProtobufCFieldDescriptor *f, void *p, int idx) {
    lua_State *L = c->L;
    int64_t iv;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_integer(c, idx, INT32_MIN, INT32_MAX, &iv)) return -1;
        *(int32_t *)p = (int32_t)iv;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_integer(c, idx, 0, UINT32_MAX, &iv)) return -1;
        *(uint32_t *)p = (uint32_t)iv;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_integer(c, idx, INT64_MIN, INT64_MAX, &iv)) return -1;
        *(int64_t *)p = iv;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return get_unsigned(c, idx, (uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (lua_type(L, idx) != LUA_TNUMBER)
            return conv_fail(c, "expected a number, got %s", luaL_typename(L, idx));
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)lua_tonumber(L, idx);
        else
            *(double *)p = lua_tonumber(L, idx);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (lua_type(L, idx) != LUA_TBOOLEAN)
            return conv_fail(c, "expected a boolean, got %s", luaL_typename(L, idx));
        *(protobuf_c_boolean *)p = lua_toboolean(L, idx);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = NULL;
        if (lua_type(L, idx) == LUA_TSTRING)
            ev = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, lua_tostring(L, idx));
        else if (lua_type(L, idx) == LUA_TNUMBER)
            ev = protobuf_c_enum_descriptor_get_value(f->descriptor, (int)lua_tonumber(L, idx));
        if (!ev) return conv_fail(c, "not a value of enum %s", ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
        *(int *)p = ev->value;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
            return conv_fail(c, "expected a string, got %s", luaL_typename(L, idx));
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (memchr(s, 0, n)) return conv_fail(c, "string contains a NUL byte (use bytes)");
        if (!valid_utf8((const unsigned char *)s, n)) return conv_fail(c, "string is not valid UTF-8");
        char *copy = xmalloc(n + 1);
        memcpy(copy, s, n + 1);
        *(char **)p = copy;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (lua_type(L, idx) != LUA_TSTRING)
            return conv_fail(c, "expected a string of bytes, got %s", luaL_typename(L, idx));
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        ProtobufCBinaryData *b = p;
        b->data = xmalloc(n ? n : 1);
        memcpy(b->data, s, n);
        b->len = n;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (lua_type(L, idx) != LUA_TTABLE)
            return conv_fail(c, "expected a table (message %s), got %s",
                             ((const ProtobufCMessageDescriptor *)f->descriptor)->short_name,
                             luaL_typename(L, idx));
        ProtobufCMessage *sub = build(c, idx, f->descriptor);
        if (!sub) return -1;
        *(ProtobufCMessage **)p = sub;
        return 0;
    }
    }
    return conv_fail(c, "unsupported field type");
}

static int set_map(conv *c, const ProtobufCFieldDescriptor *f, char *base, int idx) {
    lua_State *L = c->L;
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
    }
    ProtobufCMessage **arr = xcalloc(n ? n : 1, sizeof *arr);
    *(ProtobufCMessage ***)(base + f->offset) = arr;
    *(size_t *)(base + f->quantifier_offset) = n;
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        ProtobufCMessage *e = xmalloc(ed->sizeof_message);
        protobuf_c_message_init(ed, e);
        arr[i++] = e;
        lua_pushvalue(L, -2); /* a copy of the key: converting it must not disturb lua_next */
        int top = lua_gettop(L);
        if (set_value(c, &ed->fields[0], (char *)e + ed->fields[0].offset, top) ||
            set_value(c, &ed->fields[1], (char *)e + ed->fields[1].offset, top - 1)) {
            lua_pop(L, 3);
            return -1;
        }
        lua_pop(L, 2);
    }
    return 0;
}

static int set_repeated(conv *c, const ProtobufCFieldDescriptor *f, char *base, int idx) {
    lua_State *L = c->L;
    if (lua_type(L, idx) != LUA_TTABLE)
        return conv_fail(c, "expected an array, got %s", luaL_typename(L, idx));
    if (is_map_entry(f)) return set_map(c, f, base, idx);
    size_t n = lua_objlen(L, idx), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        lua_pop(L, 1);
    }
    if (keys != n) return conv_fail(c, "expected an array (keys 1..n), got a table with other keys");
    size_t sz = elem_size(f->type);
    char *arr = xcalloc(n ? n : 1, sz);
    *(char **)(base + f->offset) = arr;
    *(size_t *)(base + f->quantifier_offset) = n;
    size_t plen = strlen(c->path);
    for (size_t i = 0; i < n; i++) {
        path_index(c, plen, i + 1);
        lua_rawgeti(L, idx, (int)i + 1);
        int rc = set_value(c, f, arr + i * sz, lua_gettop(L));
        lua_pop(L, 1);
        if (rc) return -1;
    }
    c->path[plen] = '\0';
    return 0;
}

static int set_field(conv *c, const ProtobufCFieldDescriptor *f, ProtobufCMessage *m, int idx) {
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) return set_repeated(c, f, base, idx);
    if (set_value(c, f, base + f->offset, idx)) return -1;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(base + f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
             f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    return 0;
}

static ProtobufCMessage *build(conv *c, int idx, const ProtobufCMessageDescriptor *d) {
    lua_State *L = c->L;
    lua_checkstack(L, 8);
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    ProtobufCMessage *m = xmalloc(d->sizeof_message);
    protobuf_c_message_init(d, m);
    size_t plen = strlen(c->path);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            if (lua_type(L, -2) == LUA_TNUMBER && lua_objlen(L, idx) > 0) {
                conv_fail(c, "expected a table of fields, got an array");
            } else {
                conv_fail(c, "field names must be strings");
            }
            lua_pop(L, 2);
            goto fail;
        }
        const char *key = lua_tostring(L, -2);
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        path_put(c, plen, plen ? "." : "", key);
        if (!f) {
            conv_fail(c, "no such field in %s", d->name);
            lua_pop(L, 2);
            goto fail;
        }
        if (lua_isnil(L, -1) || json_is_null(L, -1)) { /* null: leave the default */
            lua_pop(L, 1);
            continue;
        }
        if (set_field(c, f, m, lua_gettop(L))) {
            lua_pop(L, 2);
            goto fail;
        }
        c->path[plen] = '\0';
        lua_pop(L, 1);
    }
    return m;
fail:
    protobuf_c_message_free_unpacked(m, NULL);
    return NULL;
}

ProtobufCMessage *pb_from_table(lua_State *L, int idx, const ProtobufCMessageDescriptor *d,
                                char *err, size_t errlen) {
    conv c = {L, err, errlen, {0}};
    snprintf(c.path, sizeof c.path, "%s", d->short_name);
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, errlen, "%s: expected a table, got %s", d->short_name, luaL_typename(L, idx));
        return NULL;
    }
    return build(&c, idx, d); /* error paths read "GetVarifyReq.email" */
}

/* Packs m into a malloc'd buffer. */
uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len) {
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(*len ? *len : 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

/* ---- Lua: host.pb -------------------------------------------------------------------- */

static const ProtobufCMessageDescriptor *check_type(lua_State *L, int idx) {
    const char *name = luaL_checkstring(L, idx);
    const ProtobufCMessageDescriptor *d = pb_find_message(name);
    if (!d) luaL_argerror(L, idx, lua_pushfstring(L, "no message type %s", name));
    return d;
}

/* encode(type, tbl) -> bytes | nil, err */
static int l_encode(lua_State *L) {
    const ProtobufCMessageDescriptor *d = check_type(L, 1);
    char err[300];
    ProtobufCMessage *m = pb_from_table(L, 2, d, err, sizeof err);
    if (!m) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    size_t len;
    uint8_t *buf = pb_pack(m, &len);
    lua_pushlstring(L, (const char *)buf, len);
    free(buf);
    protobuf_c_message_free_unpacked(m, NULL);
    return 1;
}

/* decode(type, bytes) -> tbl | nil, err */
static int l_decode(lua_State *L) {
    const ProtobufCMessageDescriptor *d = check_type(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, (const uint8_t *)data);
    if (!m) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot decode %s", d->name);
        return 2;
    }
    pb_push_message(L, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 1;
}

/* messages() -> {"message.GetVarifyReq", ...}; methods() -> {"StatusService.Login", ...} */
static int l_messages(lua_State *L) {
    lua_newtable(L);
    for (int i = 0; pb_messages[i]; i++) {
        lua_pushstring(L, pb_messages[i]->name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_methods(lua_State *L) {
    lua_newtable(L);
    int n = 0;
    for (int i = 0; pb_services[i]; i++)
        for (unsigned k = 0; k < pb_services[i]->n_methods; k++) {
            lua_pushfstring(L, "%s.%s", pb_services[i]->short_name, pb_services[i]->methods[k].name);
            lua_rawseti(L, -2, ++n);
        }
    return 1;
}

int pb_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"encode", l_encode},
                                   {"decode", l_decode},
                                   {"messages", l_messages},
                                   {"methods", l_methods},
                                   {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    return 1;
}
