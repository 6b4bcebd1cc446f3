/* fuzz/ws_fuzz.c: libFuzzer target for the chat servers' WebSocket path: the upgrade
 * request (host/http_parse.c + host/ws_handshake.c) and then the frames, read by a wslay
 * server context with the chat server's settings (a small message limit) and its UTF-8
 * check of text messages. The first byte picks the piece size and whether a handshake
 * comes first (bit 7); without one, the whole input is frames, so the frame reader is
 * reached by inputs that are no HTTP. A message handed over must be within the limit,
 * nothing may overrun, and wslay must end every input either wanting more or closed.
 * `make fuzz` runs it. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "http_parse.h"
#include "ws_handshake.h"

#define MAX_MESSAGE 1024

/* libFuzzer's entry point; declared for -Wmissing-prototypes (libFuzzer has no header). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct feed {
    const uint8_t *p;
    size_t len;
    size_t sent;
} feed;

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud) {
    feed *f = ud;
    if (f->len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < f->len ? len : f->len;
    memcpy(buf, f->p, n);
    f->p += n;
    f->len -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud) {
    ((feed *)ud)->sent += len; /* the bytes a session would queue */
    return (ssize_t)len;
}

/* As the chat server: text must be UTF-8, binary is refused. */
static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud) {
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        assert(arg->msg_length <= MAX_MESSAGE);
    if (arg->opcode == WSLAY_TEXT_FRAME && !ws_utf8_valid(arg->msg, arg->msg_length)) {
        wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, NULL, 0);
    } else if (arg->opcode == WSLAY_TEXT_FRAME) { /* the envelope's fast path stays inside */
        const char *t = (const char *)arg->msg, *body;
        size_t blen;
        uint16_t id;
        if (ws_envelope_plain(t, arg->msg_length, &id, &body, &blen)) {
            assert(body > t && body + blen < t + arg->msg_length && blen >= 1 && body[0] == '{');
            assert(t[arg->msg_length - 1] == '}');
        }
    }
    else if (arg->opcode == WSLAY_BINARY_FRAME)
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, NULL, 0);
}

/* Reads the upgrade request at the start of data; returns the bytes it took, or size when
 * the input ends in (or as) a refused request. */
static size_t handshake(const uint8_t *data, size_t size, size_t piece) {
    hreq_limits limits = {.max_url = 256, .max_header = 1024, .max_body = 0, .max_headers = 16};
    hreq r;
    hreq_init(&r, &limits);
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < piece ? size - off : piece, used;
        enum hreq_status st = hreq_feed(&r, (const char *)data + off, n, &used);
        assert(used <= n);
        off += used;
        if (st == HREQ_ERROR) {
            off = size;
            break;
        }
        if (st == HREQ_DONE) {
            const char *key, *why, *origin;
            size_t key_len, olen = 0;
            static const char *const origins[] = {"http://127.0.0.1:8080"};
            if (ws_check_upgrade(&r, &key, &key_len, &why) == 0) {
                char accept[WS_ACCEPT_LEN + 1];
                assert(ws_accept_key(key, key_len, accept) == 0);
                assert(strlen(accept) == WS_ACCEPT_LEN);
            } else {
                assert(why != NULL);
            }
            origin = hreq_header_value(&r, "origin", &olen);
            ws_origin_allowed(origin, olen, origins, 1);
            break;
        }
        if (used < n) {
            off = size;
            break;
        }
    }
    hreq_free(&r);
    return off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t piece = (size_t)(data[0] % 64) + 1, off = 1;
    if (data[0] & 0x80) off += handshake(data + 1, size - 1, piece);
    feed f = {0};
    wslay_event_context_ptr ctx;
    struct wslay_event_callbacks cb = {recv_cb, send_cb, NULL, NULL, NULL, NULL, on_msg};
    if (wslay_event_context_server_init(&ctx, &cb, &f) != 0) return 0;
    wslay_event_config_set_max_recv_msg_length(ctx, MAX_MESSAGE);
    while (off < size && !wslay_event_get_close_sent(ctx)) {
        size_t n = size - off < piece ? size - off : piece;
        f.p = data + off;
        f.len = n;
        if (wslay_event_recv(ctx) != 0) break;
        off += n - f.len;
        if (wslay_event_send(ctx) != 0) break;
        if (f.len == n) break; /* took nothing: it reads no more */
    }
    wslay_event_context_free(ctx);
    return 0;
}
