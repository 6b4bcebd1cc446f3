/* pb.h: Lua table <-> protobuf-c message conversion by descriptor, and the registry of the
 * services and messages compiled from proto/ (generated: pb_registry.c). */
#ifndef CHATHOST_PB_H
#define CHATHOST_PB_H

#include <lua.h>
#include <protobuf-c/protobuf-c.h>

/* By full ("message.LoginReq") or short ("LoginReq") name; NULL if unknown. */
const ProtobufCMessageDescriptor *pb_find_message(const char *name);
/* "StatusService.Login" or "message.StatusService.Login"; sets *service; NULL if unknown. */
const ProtobufCMethodDescriptor *pb_find_method(const char *name,
                                                const ProtobufCServiceDescriptor **service);
/* Pushes m as a table: every field (proto3 defaults included), repeated fields as arrays
 * that JSON-encode as arrays even when empty, 64-bit integers beyond 2^53 as strings. */
void pb_push_message(lua_State *L, const ProtobufCMessage *m);
/* Builds a message from the table at idx; NULL with a message naming the field on error.
 * The caller frees it with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *pb_from_table(lua_State *L, int idx, const ProtobufCMessageDescriptor *d,
                                char *err, size_t errlen);
/* Packs m into a malloc'd buffer of *len bytes. */
uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len);

extern const ProtobufCServiceDescriptor *const pb_services[];
extern const ProtobufCMessageDescriptor *const pb_messages[];

#endif
