/* frame.h: the chat wire format (docs/protocol.md §5): [msg_id u16 BE][body_len u16 BE]
 * [body], and the resource channel's variant with a 32-bit length (§5.1): [msg_id u16 BE]
 * [body_len u32 BE][body]. All fields unsigned. Pure functions over buffers, shared by the
 * TCP server, the client and host.frame; no allocation from a length not yet checked
 * against the limit. frame_push_encoded builds a frame for the Lua APIs (host.frame.encode,
 * conn:send_frame). */
#ifndef CHATHOST_FRAME_H
#define CHATHOST_FRAME_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4      /* the u16u16 header */
#define FRAME_HEADER_MAX 6  /* the u16u32 header */
#define FRAME_MAX_BODY 65535
#define FRAME32_MAX_BODY (16u << 20) /* what a u16u32 server accepts at most, whatever its option */

enum frame_kind {
    FRAME_U16 = 0, /* "u16u16": the chat channel */
    FRAME_U32,     /* "u16u32": the resource channel */
};

enum frame_status {
    FRAME_MORE = 0, /* fewer bytes than a whole frame */
    FRAME_OK,       /* a whole frame: *f and *used set */
    FRAME_TOO_BIG,  /* the header announces a body above max_body: f->id/len set */
};

typedef struct frame {
    uint16_t id;
    uint32_t len;
    const uint8_t *body; /* points into the parsed buffer */
} frame;

/* The header size of the kind (4 or 6). */
size_t frame_header_len(enum frame_kind k);
/* The largest body the kind can carry (65535, or FRAME32_MAX_BODY). */
size_t frame_max_body(enum frame_kind k);

/* Parses the frame of kind k at the start of buf (len bytes). */
enum frame_status frame_parse(enum frame_kind k, const uint8_t *buf, size_t len,
                              size_t max_body, frame *f, size_t *used);
/* Writes the header of kind k; returns its length. len must fit the kind (the caller
 * checked it against frame_max_body). */
size_t frame_header(enum frame_kind k, uint8_t out[FRAME_HEADER_MAX], uint16_t id,
                    uint32_t len);

/* The kind named by the string at idx ("u16u16" | "u16u32"; nil: u16u16). Raises an
 * argument error naming arg for anything else. */
enum frame_kind frame_check_kind(lua_State *L, int idx, int arg);
/* Like frame_check_kind, for the field "frame" of the options table at idx (if a table). */
enum frame_kind frame_opt_kind(lua_State *L, int idx);

/* Pushes the frame of kind k for the id and body (a string, or none for empty) at those
 * stack indexes; raises an argument error when either does not fit. Returns 1. */
int frame_push_encoded(lua_State *L, enum frame_kind k, int id_idx, int body_idx);

#endif
