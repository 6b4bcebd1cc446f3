/* frame.h: the chat wire format (docs/protocol.md §5): [msg_id u16 BE][body_len u16 BE]
 * [body]. Both fields unsigned. Pure functions over buffers, shared by the TCP server, the
 * client and host.frame; no allocation from a length not yet checked against the limit.
 * frame_push_encoded builds a frame for the Lua APIs (host.frame.encode, conn:send_frame). */
#ifndef CHATHOST_FRAME_H
#define CHATHOST_FRAME_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4
#define FRAME_MAX_BODY 65535

enum frame_status {
    FRAME_MORE = 0, /* fewer bytes than a whole frame */
    FRAME_OK,       /* a whole frame: *f and *used set */
    FRAME_TOO_BIG,  /* the header announces a body above max_body: f->id/len set */
};

typedef struct frame {
    uint16_t id;
    uint16_t len;
    const uint8_t *body; /* points into the parsed buffer */
} frame;

/* Parses the frame at the start of buf (len bytes). */
enum frame_status frame_parse(const uint8_t *buf, size_t len, size_t max_body, frame *f,
                              size_t *used);
/* Writes the 4-byte header. */
void frame_header(uint8_t out[FRAME_HEADER], uint16_t id, uint16_t len);

/* Pushes the frame of the id and body (a string, or none for empty) at those stack
 * indexes; raises an argument error when either does not fit 16 bits. Returns 1. */
int frame_push_encoded(lua_State *L, int id_idx, int body_idx);

#endif
